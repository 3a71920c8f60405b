// Messages between the proxy (main thread) and the filter worker thread. Internal.
import type { Headers } from "./types.ts";

export interface FlowData {
  id: string;
  client: { address: string; port: number };
  destination: { address: string; port: number } | undefined;
  sni: string | undefined;
  request: { method: string; scheme: "http" | "https"; host: string; port: number; path: string; url: string; headers: Headers };
  response?: { status: number; headers: Headers };
}

export interface Answer {
  status: number;
  body: string | Uint8Array;
  headers: Record<string, string>;
}

export type HookName = "request" | "response";

export interface Call {
  id: number;
  version: number;
  hook: HookName;
  flow: FlowData;
}

export type CallResult =
  | { type: "result"; id: number; answer: Answer | undefined; headers: Headers }
  | { type: "hook-error"; id: number; message: string };

// Calls and results travel in batches: all those made in one turn of the sender's event loop share
// one message (under load, many requests per message instead of one each).
export type ToWorker =
  | { type: "load"; version: number; code: string; filename: string }
  | { type: "drop"; version: number }
  | { type: "calls"; calls: Call[] }
  | { type: "ping"; id: number };

export type FromWorker =
  | { type: "loaded"; version: number; hooks: HookName[] }
  | { type: "load-error"; version: number; message: string }
  | { type: "results"; results: CallResult[] }
  | { type: "pong"; id: number };
