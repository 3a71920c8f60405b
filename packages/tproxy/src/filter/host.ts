// Runs filter hooks in a worker thread, with a time budget per call, and keeps filter versions alive
// while requests that started with them are still in flight.
import { EventEmitter } from "node:events";
import { Worker } from "node:worker_threads";
import { FilterHookError, FilterLoadError, FilterOverloadedError, FilterTimeoutError } from "../errors.ts";
import type { CompiledFilter } from "./compile.ts";
import { Batcher } from "../util/batcher.ts";
import { type Answer, type Call, type CallResult, type FlowData, type FromWorker, type HookName, type ToWorker, StartLog, clock } from "./protocol.ts";
import type { Headers } from "./types.ts";

export interface HookResult {
  /** Set when the hook called `flow.respond`. */
  answer: Answer | undefined;
  /** The headers as the hook left them (request headers for `request`, response headers for `response`). */
  headers: Headers;
}

/** A loaded filter version, pinned by a request for as long as it is in flight. */
export interface FilterVersion {
  readonly version: number;
  readonly hash: string;
  readonly hooks: ReadonlySet<HookName>;
}

interface LiveVersion extends FilterVersion {
  code: string;
  filename: string;
  refs: number;
}

interface PendingCall {
  message: Call;
  hook: HookName;
  resolve(r: HookResult): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
  /** Out of time while the worker was suspected stuck: decided by the outcome of that check. */
  parked: boolean;
  /** When the call was made (clock()). */
  queuedAt: number;
  /** When its hook began to run in the filter thread, once known. */
  startedAt: number | undefined;
}

export interface FilterHostOptions {
  /** Budget of one hook call in milliseconds, counted from when the hook starts running (default 100). */
  timeoutMs?: number;
  /** Longest wait of a call for the filter thread before its hook starts, in milliseconds (default 1000). */
  queueTimeoutMs?: number;
  /** Budget for evaluating a new filter's top-level code (default 2000). */
  loadTimeoutMs?: number;
}

const WORKER_URL = new URL(`./worker${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url);

/**
 * A call's budget starts when its hook starts running in the filter thread, not when it is queued: a
 * call that waits longer than the queue bound is refused with FilterOverloadedError (the proxy answers
 * 503 whatever --on-filter-error says), so overload never turns into a pass; a hook that runs past its
 * budget is refused with FilterTimeoutError as before.
 *
 * Events: "worker-restart" (reason: string) when a stuck worker was replaced.
 */
export class FilterHost extends EventEmitter {
  readonly timeoutMs: number;
  readonly queueTimeoutMs: number;
  readonly #loadTimeoutMs: number;
  #worker!: Worker;
  /** Where the current worker records when each call's hook starts. */
  #starts!: StartLog;
  #nextId = 1;
  #nextVersion = 1;
  readonly #calls = new Map<number, PendingCall>();
  readonly #pings = new Map<number, () => void>();
  readonly #loads = new Map<number, { resolve(hooks: HookName[]): void; reject(e: Error): void }>();
  readonly #versions = new Map<number, LiveVersion>();
  #current: LiveVersion | undefined;
  #checking = false;
  #closed = false;

  constructor(options: FilterHostOptions = {}) {
    super();
    this.timeoutMs = options.timeoutMs ?? 100;
    this.queueTimeoutMs = options.queueTimeoutMs ?? 1000;
    this.#loadTimeoutMs = options.loadTimeoutMs ?? 2000;
    this.#spawn();
  }

  /** The version new requests get, or undefined when no filter has loaded yet. */
  get current(): FilterVersion | undefined {
    return this.#current;
  }

  #spawn(): void {
    this.#starts = new StartLog();
    const worker = new Worker(WORKER_URL, { stdout: false, stderr: false, workerData: { starts: this.#starts.buffer } });
    worker.on("message", (msg: FromWorker) => this.#onMessage(msg));
    worker.on("error", (err) => this.#replaceWorker(`filter worker crashed: ${err.message}`));
    worker.unref();
    this.#worker = worker;
  }

  #post(message: ToWorker): void {
    // Calls queued for the current batch go first, so the worker sees messages in the order they were made.
    if (message.type !== "calls") this.#outbox.flush();
    this.#worker.postMessage(message);
  }

  readonly #outbox = new Batcher<Call>((calls) => this.#post({ type: "calls", calls }));

  #settle(r: CallResult): void {
    const call = this.#calls.get(r.id);
    if (!call) return; // timed out already
    this.#calls.delete(r.id);
    clearTimeout(call.timer);
    if (r.type === "result") call.resolve({ answer: r.answer, headers: r.headers });
    else call.reject(new FilterHookError(r.message));
  }

  #onMessage(msg: FromWorker): void {
    switch (msg.type) {
      case "results":
        for (const r of msg.results) this.#settle(r);
        return;
      case "loaded":
        this.#loads.get(msg.version)?.resolve(msg.hooks);
        return;
      case "load-error":
        this.#loads.get(msg.version)?.reject(new FilterLoadError(msg.message));
        return;
      case "pong":
        this.#pings.get(msg.id)?.();
        return;
    }
  }

  /** Evaluates a compiled filter in the worker and makes it current for new requests. */
  async load(compiled: CompiledFilter): Promise<FilterVersion> {
    const version = this.#nextVersion++;
    const hooks = await this.#loadInWorker(version, compiled.code, compiled.path);
    const live: LiveVersion = { version, hash: compiled.hash, hooks: new Set(hooks), code: compiled.code, filename: compiled.path, refs: 0 };
    this.#versions.set(version, live);
    const previous = this.#current;
    this.#current = live;
    if (previous) this.#dropIfUnused(previous);
    return live;
  }

  #loadInWorker(version: number, code: string, filename: string): Promise<HookName[]> {
    return new Promise<HookName[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#loads.delete(version);
        reject(new FilterLoadError(`${filename}: evaluating the filter's top-level code took longer than ${this.#loadTimeoutMs} ms`));
        this.#replaceWorker("filter top-level code did not finish");
      }, this.#loadTimeoutMs);
      this.#loads.set(version, {
        resolve: (h) => { clearTimeout(timer); this.#loads.delete(version); resolve(h); },
        reject: (e) => { clearTimeout(timer); this.#loads.delete(version); reject(e); },
      });
      this.#post({ type: "load", version, code, filename });
    });
  }

  /** Pins the current version for one request; release it with `release` when the request is done. */
  acquire(): FilterVersion | undefined {
    const v = this.#current;
    if (v) v.refs += 1;
    return v;
  }

  release(version: FilterVersion): void {
    const live = this.#versions.get(version.version);
    if (!live) return;
    live.refs -= 1;
    this.#dropIfUnused(live);
  }

  #dropIfUnused(v: LiveVersion): void {
    if (v.refs <= 0 && v !== this.#current) {
      this.#versions.delete(v.version);
      this.#post({ type: "drop", version: v.version });
    }
  }

  /** Runs one hook of a pinned version. Rejects with FilterHookError or FilterTimeoutError. */
  run(version: FilterVersion, hook: HookName, flow: FlowData): Promise<HookResult> {
    return new Promise<HookResult>((resolve, reject) => {
      const id = this.#nextId++;
      const message: Call = { id, version: version.version, hook, flow };
      const call: PendingCall = { message, hook, resolve, reject, timer: undefined as unknown as NodeJS.Timeout, parked: false, queuedAt: clock(), startedAt: undefined };
      this.#arm(call);
      this.#calls.set(id, call);
      this.#outbox.push(message);
    });
  }

  #arm(call: PendingCall): void {
    call.parked = false;
    const left = call.queuedAt + this.queueTimeoutMs - clock();
    call.timer = setTimeout(() => this.#check(call), Math.max(1, Math.min(this.timeoutMs, left)));
  }

  /** A call's timer: queued too long (overloaded), running too long (timeout), or not yet either. */
  #check(call: PendingCall): void {
    if (!this.#calls.has(call.message.id)) return;
    const now = clock();
    if (call.startedAt === undefined) {
      const seen = this.#starts.startOf(call.message.id);
      // Started so long ago that its record was overwritten: give it a budget from now.
      if (seen !== "queued") call.startedAt = seen === "overwritten" ? now : seen;
    }
    if (call.startedAt === undefined) {
      const waited = now - call.queuedAt;
      if (waited < this.queueTimeoutMs) {
        call.timer = setTimeout(() => this.#check(call), Math.max(1, this.queueTimeoutMs - waited));
        return;
      }
      if (this.#starts.cancel(call.message.id)) {
        // It never ran (and now never will): nothing judged the request.
        this.#calls.delete(call.message.id);
        call.reject(new FilterOverloadedError(call.hook, this.queueTimeoutMs));
        return;
      }
      // It started in the meantime: its budget runs from then.
      const seen = this.#starts.startOf(call.message.id);
      call.startedAt = typeof seen === "number" ? seen : now;
    }
    const ran = now - call.startedAt;
    if (ran < this.timeoutMs) {
      call.timer = setTimeout(() => this.#check(call), Math.max(1, Math.ceil(this.timeoutMs - ran)));
      return;
    }
    if (this.#checking) {
      // Perhaps stuck behind a hook that does not yield: wait for the check before calling it a timeout.
      call.parked = true;
      return;
    }
    this.#timeOut(call);
    this.#checkWorker();
  }

  #timeOut(call: PendingCall): void {
    this.#calls.delete(call.message.id);
    call.reject(new FilterTimeoutError(call.hook, this.timeoutMs));
  }

  // A call ran out of time: either its hook awaits something slow (the worker still answers), or the
  // worker's thread is stuck in a loop. In the second case, replace the worker and replay the calls
  // that were waiting behind it, each with a fresh budget, so other requests are only delayed.
  #checkWorker(): void {
    if (this.#checking || this.#closed) return;
    this.#checking = true;
    const id = this.#nextId++;
    const progress = this.#starts.progress;
    const alive = (): void => {
      clearTimeout(timer);
      this.#pings.delete(id);
      this.#checking = false;
      for (const call of [...this.#calls.values()]) if (call.parked) this.#timeOut(call);
    };
    const timer = setTimeout(() => {
      // A long queue delays the answer to the ping; hooks that went on starting show the thread is not stuck.
      if (this.#starts.progress !== progress) return alive();
      this.#pings.delete(id);
      this.#checking = false;
      this.#replaceWorker(`a filter hook ran longer than ${this.timeoutMs} ms without yielding`);
    }, Math.max(50, this.timeoutMs / 2));
    this.#pings.set(id, alive);
    this.#post({ type: "ping", id });
  }

  #replaceWorker(reason: string): void {
    if (this.#closed) return;
    const old = this.#worker;
    old.removeAllListeners("message");
    old.removeAllListeners("error");
    old.on("error", () => undefined);
    void old.terminate();
    this.#outbox.clear(); // every waiting call is in #calls and is replayed below, after the loads
    this.#spawn();
    this.emit("worker-restart", reason);
    for (const v of this.#versions.values()) {
      void this.#loadInWorker(v.version, v.code, v.filename).catch(() => undefined);
    }
    for (const call of this.#calls.values()) {
      clearTimeout(call.timer);
      call.startedAt = undefined; // it starts again in the new worker; its wait in the queue still counts
      this.#arm(call);
      this.#outbox.push(call.message);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const call of this.#calls.values()) {
      clearTimeout(call.timer);
      call.reject(new FilterHookError("proxy is shutting down"));
    }
    this.#calls.clear();
    await this.#worker.terminate();
  }
}
