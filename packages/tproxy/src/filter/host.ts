// Runs filter hooks on the thread that serves the request, in a context of their own, with a time budget
// per call, and keeps filter versions alive while requests that started with them are still in flight.
//
// Why on the serving thread: a hook is a function call of a microsecond or two. Sending it to another
// thread and back cost two thread wake-ups per request, about as much CPU as the rest of the request
// (npm run bench), and, on a busy node, milliseconds of waiting to be scheduled. A hook that never yields
// cannot be cut off from inside its own thread; the supervisor (supervisor.ts) watches the deadline this
// host publishes in shared memory (HookWatch) and replaces the whole serving thread when it passes.
// Nothing is forwarded meanwhile: the stuck request, and the others of that thread, are reset, never let
// through.
import { AsyncLocalStorage } from "node:async_hooks";
import { createRequire } from "node:module";
import { format } from "node:util";
import { Script, compileFunction, createContext, type Context } from "node:vm";
import { FilterHookError, FilterLoadError, FilterTimeoutError } from "../errors.ts";
import { HookBudget } from "./budget.ts";
import type { CompiledFilter } from "./compile.ts";
import type { Answer, FlowData, HookName } from "./protocol.ts";
import type { Filter, Flow, Headers, Hook } from "./types.ts";
import { errorLocator } from "./sourcemap.ts";

export interface HookResult {
  /** Set when the hook called `flow.respond`. */
  answer: Answer | undefined;
  /** The headers as the hook left them (request headers for `request`, response headers for `response`). */
  headers: Headers;
  /** Set when the hook called `flow.audit(reason)`: an answer is then only logged, never sent. */
  audit?: string | undefined;
}

/** One line a filter logged (`flow.log`, or `console.*` in its context), for the proxy's own log. */
export interface FilterLogLine {
  level: "debug" | "info" | "warn" | "error";
  message: string;
  /** The request whose hook logged it; undefined for the filter's top-level code. */
  id: string | undefined;
  /** The filter version's source hash. */
  filter: string;
}

export type FilterLogSink = (line: FilterLogLine) => void;

/** A loaded filter version, pinned by a request for as long as it is in flight. */
export interface FilterVersion {
  readonly version: number;
  readonly hash: string;
  readonly hooks: ReadonlySet<HookName>;
}

interface LiveVersion extends FilterVersion {
  filter: Filter;
  makeFlow: FlowFactory;
  /** Where in the filter's source files an error was thrown (its source map), for the hook's log line. */
  locate: (err: unknown) => string | undefined;
  refs: number;
}

/** What a flow calls back into (through a private field of the flow, out of the filter's reach). */
interface FlowCall {
  record(answer: Answer): void;
  audit(reason: string): void;
  log(args: unknown[]): void;
  /** Wraps every body read of the hook (it pauses the hook's budget meanwhile). */
  wait<T>(read: Promise<T>): Promise<T>;
}

type FlowFactory = (data: FlowData, call: FlowCall) => Flow;

/** One hook call: what its flow recorded, and its budget (made when a hook first needs it). */
class HookCall implements FlowCall {
  answer: Answer | undefined = undefined;
  auditReason: string | undefined = undefined;
  #budget: HookBudget | undefined = undefined;
  readonly #host: FilterHost;
  readonly #id: string;
  readonly #hash: string;
  constructor(host: FilterHost, id: string, hash: string) {
    this.#host = host;
    this.#id = id;
    this.#hash = hash;
  }
  get budget(): HookBudget {
    return (this.#budget ??= this.#host.newBudget());
  }
  record(answer: Answer): void {
    this.answer = answer;
  }
  audit(reason: string): void {
    this.auditReason = reason;
  }
  log(args: unknown[]): void {
    this.#host.filterLog(args, this.#id, this.#hash);
  }
  wait<T>(read: Promise<T>): Promise<T> {
    return this.budget.wait(read);
  }
}

/**
 * Shared memory through which a serving thread tells its supervisor how it is doing, without a message
 * (a thread stuck in a loop sends none): slot 0 is the deadline of the synchronous code running now on
 * behalf of a filter (a hook, or a version's top-level code), 0 when none; slot 1 is the time of the
 * thread's last heartbeat. Times are milliseconds on clock().
 */
export class HookWatch {
  readonly buffer: SharedArrayBuffer;
  readonly #cells: Float64Array;
  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(16)) {
    this.buffer = buffer;
    this.#cells = new Float64Array(buffer);
  }
  enter(budgetMs: number): void {
    this.#cells[0] = clock() + budgetMs;
  }
  leave(): void {
    this.#cells[0] = 0;
  }
  beat(): void {
    this.#cells[1] = clock();
  }
  /** The deadline of the filter code running now, or 0. */
  get deadline(): number {
    return this.#cells[0]!;
  }
  get lastBeat(): number {
    return this.#cells[1]!;
  }
}

/** Milliseconds on a clock every thread shares (performance.now() alone has a per-thread origin). */
export function clock(): number {
  return performance.timeOrigin + performance.now();
}

export interface FilterHostOptions {
  /** Budget of one hook call in milliseconds (default 100). */
  timeoutMs?: number;
  /** Budget for evaluating a new filter's top-level code (default 2000). */
  loadTimeoutMs?: number;
  /** Where deadlines are published for the supervisor's watchdog (default: a private one nobody watches). */
  watch?: HookWatch;
  /** Where a filter's `flow.log` and `console.*` lines go (default: the process's console, as they are). */
  log?: FilterLogSink;
}

// The request on whose behalf filter code runs now: what a filter's console.log names as `id`. A store
// (not a variable set around the call) so that the code after an `await` in an async hook, or in a timer
// a hook set, still names its request.
const runningFor = new AsyncLocalStorage<string>();

/** The console a filter version sees: its lines go to `sink` with the request's id and the version's hash. */
function filterConsole(sink: FilterLogSink, hash: string): Console {
  const emit = (level: FilterLogLine["level"]) => (...args: unknown[]): void => sink({ level, message: format(...args), id: runningFor.getStore(), filter: hash });
  // The other methods (table, time, group, ...) stay the process's own.
  return Object.assign(Object.create(null) as object, console, { log: emit("info"), info: emit("info"), debug: emit("debug"), trace: emit("debug"), warn: emit("warn"), error: emit("error") }) as Console;
}

// What a filter sees as its globals: the language's own (from its context), plus these of Node's. The
// filter's context is its own, so a filter that changes a prototype or a global changes its own, not
// the proxy's.
const NODE_GLOBALS = [
  "console", "setTimeout", "clearTimeout", "setInterval", "clearInterval", "setImmediate", "clearImmediate", "queueMicrotask",
  "structuredClone", "URL", "URLSearchParams", "TextEncoder", "TextDecoder", "Buffer", "AbortController", "AbortSignal",
  "fetch", "Headers", "Request", "Response", "FormData", "Blob", "atob", "btoa", "performance", "crypto", "process",
] as const;

// Built inside each filter's context, so that the flow and its headers have that context's prototypes:
// whatever a hook does to them stays on its side. Classes, so that a flow costs its fields and no
// closures (a hook runs for every request); the call (HookCall) sits in private fields, out of the
// filter's reach.
const FLOW_FACTORY = `(function () {
  const copy = (h) => { const out = {}; for (const k of Object.keys(h || {})) { const v = h[k]; out[k] = Array.isArray(v) ? Array.from(v, String) : v; } return out; };
  const norm = (h, keepCase) => { const out = {}; if (h) for (const k of Object.keys(h)) out[keepCase ? k : k.toLowerCase()] = String(h[k]); return out; };
  // Which pod is asking: copied into this context and frozen, so that a hook can neither change it for
  // the requests after it nor reach the proxy's objects through it.
  const pod = (p) => Object.freeze({ namespace: p.namespace, name: p.name, uid: p.uid, labels: Object.freeze(norm(p.labels, true)), annotations: Object.freeze(norm(p.annotations, true)), serviceAccount: p.serviceAccount, node: p.node });
  // A rejection is marked handled: a hook that never awaits its read must not take the thread down with
  // an unhandled rejection.
  const handled = (p) => { p.catch(() => {}); return p; };
  // Body readers: the bytes are copied into this context, so that nothing the hook does to them changes
  // what is sent on; async methods, so that the promises a hook gets are this context's too.
  class Message {
    #source; #call;
    constructor(source, call) { this.#source = source; this.#call = call; }
    #read(want) { return this.#source === undefined ? Promise.resolve(new Uint8Array(0)) : this.#call.wait(this.#source(want)); }
    async #bytes(want) { return new Uint8Array(await this.#read(want)); }
    body() { return handled(this.#bytes()); }
    peek(n) { return handled(this.#bytes(n)); }
    text() { return handled(this.#bytes().then((b) => new TextDecoder().decode(b))); }
  }
  class FlowRequest extends Message {
    constructor(r, call) {
      super(r.body, call);
      this.method = r.method; this.scheme = r.scheme; this.host = r.host; this.port = r.port; this.path = r.path; this.url = r.url; this.headers = copy(r.headers);
    }
  }
  class FlowResponse extends Message {
    constructor(r, call) {
      super(r.body, call);
      this.status = r.status; this.headers = copy(r.headers);
    }
  }
  class Flow {
    #call;
    constructor(data, call) {
      this.#call = call;
      this.id = data.id;
      this.client = data.client.pod === undefined ? { address: data.client.address, port: data.client.port } : { address: data.client.address, port: data.client.port, pod: pod(data.client.pod) };
      this.destination = data.destination === undefined ? undefined : { address: data.destination.address, port: data.destination.port };
      this.sni = data.sni;
      this.request = new FlowRequest(data.request, call);
      this.response = data.response === undefined ? undefined : new FlowResponse(data.response, call);
    }
    respond(status, body = "", headers) {
      if (!Number.isInteger(status) || status < 100 || status > 999) throw new RangeError("respond(): invalid status " + status);
      this.#call.record({ status, body: typeof body === "string" || body instanceof Uint8Array ? body : String(body), headers: norm(headers) });
    }
    audit(reason) { this.#call.audit(reason === undefined ? "audit" : String(reason)); }
    log(...args) { this.#call.log(args); }
  }
  return (data, call) => new Flow(data, call);
})()`;

function validate(exports: Record<string, unknown>): Filter {
  // Only a default export counts: a module that exports `request` by name, or nothing at all, would
  // otherwise load as a filter without hooks and let every request through.
  if (!("default" in exports)) {
    const named = Object.keys(exports).filter((k) => k !== "__esModule");
    throw new TypeError(`the filter has no default export${named.length > 0 ? ` (named exports: ${named.join(", ")})` : ""}; export default { request(flow) { ... } }`);
  }
  const candidate = exports.default;
  if (candidate === null || typeof candidate !== "object" || Array.isArray(candidate)) {
    const what = candidate === null ? "null" : Array.isArray(candidate) ? "an array" : typeof candidate;
    throw new TypeError(`the filter's default export must be an object with request and/or response hooks, not ${what}`);
  }
  const filter = candidate as Record<string, unknown>;
  for (const hook of ["request", "response"] as const) {
    if (filter[hook] !== undefined && typeof filter[hook] !== "function") {
      throw new TypeError(`the filter's "${hook}" export must be a function, not ${filter[hook] === null ? "null" : typeof filter[hook]}`);
    }
  }
  if (filter.request === undefined && filter.response === undefined) {
    const keys = Object.keys(filter);
    throw new TypeError(`the filter's default export has neither a request nor a response hook${keys.length > 0 ? ` (it has: ${keys.join(", ")})` : " (it is empty)"}`);
  }
  return filter as Filter;
}

function describe(err: unknown, locate?: (err: unknown) => string | undefined): string {
  const at = locate?.(err);
  return (at === undefined ? "" : `${at}: `) + describeError(err);
}

function describeError(err: unknown): string {
  return err instanceof Error || (err !== null && typeof err === "object" && "message" in err && "name" in err)
    ? `${String((err as Error).name)}: ${String((err as Error).message)}`
    : `non-error thrown: ${String(err)}`;
}

function callHook(hook: Hook, filter: Filter, flow: Flow): unknown {
  return hook.call(filter, flow);
}

function isThenable(x: unknown): x is PromiseLike<unknown> {
  return x !== null && (typeof x === "object" || typeof x === "function") && typeof (x as { then?: unknown }).then === "function";
}

/** Evaluates a compiled filter in a new context; throws FilterLoadError naming what is wrong. */
export function evaluateFilter(code: string, filename: string, filterConsole?: Console): { filter: Filter; makeFlow: FlowFactory; locate: (err: unknown) => string | undefined } {
  const locate = errorLocator(code, filename);
  const sandbox: Record<string, unknown> = {};
  for (const name of NODE_GLOBALS) sandbox[name] = (globalThis as Record<string, unknown>)[name];
  if (filterConsole) sandbox.console = filterConsole;
  const context: Context = createContext(sandbox, { name: `filter ${filename}` });
  try {
    const fn = compileFunction(code, ["exports", "require", "module", "__filename", "__dirname"], { filename, parsingContext: context });
    const module = { exports: {} as Record<string, unknown> };
    const dir = filename.slice(0, filename.lastIndexOf("/")) || "/";
    fn(module.exports, createRequire(filename), module, filename, dir);
    const filter = validate(module.exports);
    const makeFlow = new Script(FLOW_FACTORY, { filename: "tproxy:flow" }).runInContext(context) as FlowFactory;
    return { filter, makeFlow, locate };
  } catch (err) {
    throw new FilterLoadError(describe(err, locate));
  }
}

/** The filter versions of one serving thread, and their hooks run with a budget. */
export class FilterHost {
  readonly timeoutMs: number;
  readonly #loadTimeoutMs: number;
  readonly #watch: HookWatch;
  readonly #log: FilterLogSink | undefined;
  #nextVersion = 1;
  readonly #versions = new Map<number, LiveVersion>();
  #current: LiveVersion | undefined;
  #closed = false;
  /**
   * Milliseconds this thread spent evaluating versions' top-level code: no timer could fire meanwhile, so
   * an async hook's budget is extended by what passed during its wait (its timer would otherwise fire the
   * moment the thread is free again and deny a request that was only waiting for the thread).
   */
  #stalledMs = 0;

  constructor(options: FilterHostOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? 100;
    this.#loadTimeoutMs = options.loadTimeoutMs ?? 2000;
    this.#watch = options.watch ?? new HookWatch();
    this.#log = options.log;
  }

  /** The version new requests get, or undefined when no filter has loaded yet. */
  get current(): FilterVersion | undefined {
    return this.#current;
  }

  /** Evaluates a compiled filter and makes it current for new requests (see `prepare` to stage it first). */
  async load(compiled: CompiledFilter): Promise<FilterVersion> {
    const staged = this.prepare(compiled);
    this.commit(staged);
    return staged;
  }

  /** Evaluates a compiled filter without putting it in force yet. Throws FilterLoadError. */
  prepare(compiled: CompiledFilter): FilterVersion {
    this.#watch.enter(this.#loadTimeoutMs);
    let evaluated;
    const started = performance.now();
    try {
      evaluated = evaluateFilter(compiled.code, compiled.path, this.#log && filterConsole(this.#log, compiled.hash));
    } finally {
      this.#watch.leave();
    }
    const ms = performance.now() - started;
    this.#stalledMs += ms;
    if (ms > this.#loadTimeoutMs) {
      throw new FilterLoadError(`${compiled.path}: evaluating the filter's top-level code took ${Math.round(ms)} ms, more than ${this.#loadTimeoutMs} ms`);
    }
    const hooks = (["request", "response"] as const).filter((h) => typeof evaluated.filter[h] === "function");
    const live: LiveVersion = { version: this.#nextVersion++, hash: compiled.hash, hooks: new Set(hooks), filter: evaluated.filter, makeFlow: evaluated.makeFlow, locate: evaluated.locate, refs: 0 };
    return live;
  }

  /** Puts a prepared version in force for new requests; the previous one stays until its requests finish. */
  commit(version: FilterVersion): void {
    const live = version as LiveVersion;
    this.#versions.set(live.version, live);
    const previous = this.#current;
    this.#current = live;
    if (previous && previous !== live) this.#dropIfUnused(previous);
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
    if (v.refs <= 0 && v !== this.#current) this.#versions.delete(v.version);
  }

  /** Runs one hook of a pinned version. Rejects with FilterHookError or FilterTimeoutError. */
  run(version: FilterVersion, hookName: HookName, data: FlowData): Promise<HookResult> {
    if (this.#closed) return Promise.reject(new FilterHookError("proxy is shutting down"));
    const live = this.#versions.get(version.version);
    // Never judge a request without its filter: an unknown version is an error, which denies.
    if (!live) return Promise.reject(new FilterHookError(`filter version ${version.version} is not loaded`));
    const hook = live.filter[hookName] as Hook | undefined;
    const call = new HookCall(this, data.id, live.hash);
    let flow: Flow;
    let returned: unknown;
    this.#watch.enter(this.timeoutMs);
    const started = performance.now();
    try {
      flow = live.makeFlow(data, call);
      returned = hook === undefined ? undefined : runningFor.run(data.id, callHook, hook, live.filter, flow);
    } catch (err) {
      return Promise.reject(new FilterHookError(describe(err, live.locate)));
    } finally {
      this.#watch.leave();
    }
    // A hook that finished, but past its budget, is refused all the same: the budget is the contract.
    if (performance.now() - started > this.timeoutMs) return Promise.reject(new FilterTimeoutError(hookName, this.timeoutMs));
    const result = (): HookResult => ({ answer: call.answer, audit: call.auditReason, headers: hookName === "request" ? flow.request.headers : (flow.response?.headers ?? {}) });
    if (!isThenable(returned)) return Promise.resolve(result());
    // An async hook: its budget is a timer (the thread stays free while it waits), paused while the hook
    // waits for a body (budget.ts).
    const budget = call.budget;
    return new Promise<HookResult>((resolve, reject) => {
      budget.start(() => reject(new FilterTimeoutError(hookName, this.timeoutMs)));
      returned.then(
        () => { budget.stop(); resolve(result()); },
        (err: unknown) => { budget.stop(); reject(new FilterHookError(describe(err, live.locate))); },
      );
    });
  }

  /** A budget of one hook call (HookCall). */
  newBudget(): HookBudget {
    return new HookBudget(this.timeoutMs, () => this.#stalledMs);
  }

  /** A line of `flow.log`: to the sink, or the process's console when there is none. */
  filterLog(args: unknown[], id: string, hash: string): void {
    if (this.#log) this.#log({ level: "info", message: format(...args), id, filter: hash });
    else console.log(...args);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#versions.clear();
    this.#current = undefined;
  }
}
