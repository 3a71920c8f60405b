// What the proxy hands a filter hook, and what a hook can answer. Internal.
import type { Headers, PodIdentity } from "./types.ts";

export interface FlowData {
  id: string;
  client: { address: string; port: number; pod?: PodIdentity | undefined };
  destination: { address: string; port: number } | undefined;
  sni: string | undefined;
  request: { method: string; scheme: "http" | "https"; host: string; port: number; path: string; url: string; headers: Headers; body?: BodySource };
  response?: { status: number; headers: Headers; body?: BodySource };
}

/**
 * Reads a message body for a hook: the whole body (`want` undefined) or its first `want` bytes. Absent
 * when the message has none to read (a WebSocket upgrade): the hook then sees an empty body.
 */
export type BodySource = (want?: number) => Promise<Uint8Array>;

export interface Answer {
  status: number;
  body: string | Uint8Array;
  headers: Record<string, string>;
}

export type HookName = "request" | "response";
