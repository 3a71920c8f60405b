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

/** Collects items and hands them over in one batch at the end of the current event-loop turn. */
export class Batcher<T> {
  #items: T[] = [];
  #scheduled = false;
  readonly #send: (items: T[]) => void;
  constructor(send: (items: T[]) => void) {
    this.#send = send;
  }
  push(item: T): void {
    this.#items.push(item);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.flush());
    }
  }
  /** Forgets what is waiting (the caller sends it again some other way). */
  clear(): void {
    this.#items = [];
  }
  flush(): void {
    this.#scheduled = false;
    if (this.#items.length === 0) return;
    const items = this.#items;
    this.#items = [];
    this.#send(items);
  }
}
