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

/** Milliseconds on a clock both threads share (performance.now() alone has a per-thread origin). */
export function clock(): number {
  return performance.timeOrigin + performance.now();
}

const RING = 4096;

/**
 * Shared memory in which the filter thread records when each call's hook starts, so the proxy can
 * count a hook's budget from then, and tell a call still queued from one that runs, without a message
 * (a thread stuck in a hook sends none). Calls start in the order of their ids. Slot id % RING holds
 * the latest call that used it, as id * 2 when it started, id * 2 + 1 when the proxy gave up on it
 * before it started (the thread then skips it); the two sides claim a slot by compare-and-swap, so a
 * call is either started or given up, never both. One more word counts starts.
 */
export class StartLog {
  readonly buffer: SharedArrayBuffer;
  readonly #ids: BigInt64Array;
  readonly #times: Float64Array;

  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(8 * (2 * RING + 1))) {
    this.buffer = buffer;
    this.#ids = new BigInt64Array(buffer, 0, RING + 1);
    this.#times = new Float64Array(buffer, 8 * (RING + 1), RING);
  }

  /** Filter thread: the hook of call `id` starts now. False when the proxy gave up on the call: skip it. */
  started(id: number): boolean {
    const slot = id % RING;
    const mine = BigInt(id) * 2n;
    this.#times[slot] = clock();
    const seen = Atomics.load(this.#ids, slot);
    if (seen === mine + 1n || Atomics.compareExchange(this.#ids, slot, seen, mine) !== seen) return false;
    Atomics.add(this.#ids, RING, 1n);
    return true;
  }

  /** Calls started so far (changes while the filter thread makes progress). */
  get progress(): bigint {
    return Atomics.load(this.#ids, RING);
  }

  /** When call `id` started; "queued" when it has not; "overwritten" when it started before the slot's latest call. */
  startOf(id: number): number | "queued" | "overwritten" {
    const slot = id % RING;
    const mine = BigInt(id) * 2n;
    const seen = Atomics.load(this.#ids, slot);
    if (seen < mine) return "queued";
    if (seen > mine) return "overwritten";
    const at = this.#times[slot]!;
    return Atomics.load(this.#ids, slot) === mine ? at : "overwritten";
  }

  /** Proxy: gives up on call `id` unless it has started. True when it had not (the thread will skip it). */
  cancel(id: number): boolean {
    const slot = id % RING;
    const mine = BigInt(id) * 2n;
    const seen = Atomics.load(this.#ids, slot);
    return seen < mine && Atomics.compareExchange(this.#ids, slot, seen, mine + 1n) === seen;
  }
}
