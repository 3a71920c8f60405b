// What the proxy hands a filter hook, and what a hook can answer. Internal.
import type { Headers, PodIdentity } from "./types.ts";

export interface FlowData {
  id: string;
  client: { address: string; port: number; pod?: PodIdentity | undefined };
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
