// The filter worker thread: evaluates filter versions and runs their hooks. Running filters here, not on
// the proxy's thread, means a hook stuck in a loop can be cut off (the thread is terminated and replaced)
// while the proxy keeps serving, and a filter cannot reach the proxy's own state.
import { createRequire } from "node:module";
import { compileFunction } from "node:vm";
import { parentPort, workerData } from "node:worker_threads";
import type { Filter, Flow, Headers, Hook } from "./types.ts";
import { Batcher } from "../util/batcher.ts";
import { type Answer, type Call, type CallResult, type FlowData, type FromWorker, type HookName, type ToWorker, StartLog } from "./protocol.ts";

if (!parentPort) throw new Error("filter worker must run in a worker thread");
const port = parentPort;
const versions = new Map<number, Filter>();
const starts = new StartLog((workerData as { starts: SharedArrayBuffer }).starts);

function send(message: FromWorker): void {
  port.postMessage(message);
}

const results = new Batcher<CallResult>((items) => send({ type: "results", results: items }));

function evaluate(code: string, filename: string): Filter {
  const fn = compileFunction(code, ["exports", "require", "module", "__filename", "__dirname"], { filename });
  const module = { exports: {} as Record<string, unknown> };
  const dir = filename.slice(0, filename.lastIndexOf("/")) || "/";
  fn(module.exports, createRequire(filename), module, filename, dir);
  // Only a default export counts: a module that exports `request` by name, or nothing at all, would
  // otherwise load as a filter without hooks and let every request through.
  if (!("default" in module.exports)) {
    const named = Object.keys(module.exports).filter((k) => k !== "__esModule");
    throw new TypeError(`the filter has no default export${named.length > 0 ? ` (named exports: ${named.join(", ")})` : ""}; export default { request(flow) { ... } }`);
  }
  const candidate = module.exports.default;
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

function normaliseHeaders(input: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (input) for (const [k, v] of Object.entries(input)) out[k.toLowerCase()] = String(v);
  return out;
}

function makeFlow(data: FlowData, record: (a: Answer) => void): Flow {
  return {
    id: data.id,
    client: data.client,
    destination: data.destination,
    sni: data.sni,
    request: data.request,
    response: data.response,
    respond(status: number, body: string | Uint8Array = "", headers?: Record<string, string>) {
      if (!Number.isInteger(status) || status < 100 || status > 999) throw new RangeError(`respond(): invalid status ${status}`);
      record({ status, body: typeof body === "string" || body instanceof Uint8Array ? body : String(body), headers: normaliseHeaders(headers) });
    },
  };
}

async function call(id: number, version: number, hookName: HookName, data: FlowData): Promise<void> {
  // The call's time budget runs from here, not from when it was queued; one the proxy gave up on is skipped.
  if (!starts.started(id)) return;
  const filter = versions.get(version);
  if (!filter) {
    // Never judge a request without its filter: an unknown version is an error, which denies.
    results.push({ type: "hook-error", id, message: `filter version ${version} is not loaded in this worker` });
    return;
  }
  const hook = filter[hookName] as Hook | undefined;
  let answer: Answer | undefined;
  const flow = makeFlow(data, (a) => { answer = a; });
  try {
    if (hook) await hook.call(filter, flow);
    const headers: Headers = hookName === "request" ? data.request.headers : (data.response?.headers ?? {});
    results.push({ type: "result", id, answer, headers });
  } catch (err) {
    results.push({ type: "hook-error", id, message: err instanceof Error ? `${err.name}: ${err.message}` : `non-error thrown: ${String(err)}` });
  }
}

// Calls run one after another, each given the turn of its own microtasks, so that a hook that has
// finished sends its result while later hooks of the same batch still hold the thread: otherwise a
// result would wait for every slow hook queued behind it, and be charged their time.
const queue: Call[] = [];
let head = 0;
let draining = false;
async function drain(): Promise<void> {
  draining = true;
  let flushedAt = performance.now();
  while (head < queue.length) {
    const c = queue[head]!;
    queue[head++] = undefined as unknown as Call;
    void call(c.id, c.version, c.hook, c.flow);
    await undefined;
    if (performance.now() - flushedAt >= 1) {
      results.flush();
      flushedAt = performance.now();
    }
  }
  queue.length = 0;
  head = 0;
  draining = false;
}

port.on("message", (msg: ToWorker) => {
  switch (msg.type) {
    case "calls":
      for (const c of msg.calls) queue.push(c);
      if (!draining) void drain();
      break;
    case "load":
      try {
        const filter = evaluate(msg.code, msg.filename);
        versions.set(msg.version, filter);
        const hooks = (["request", "response"] as const).filter((h) => typeof filter[h] === "function");
        send({ type: "loaded", version: msg.version, hooks });
      } catch (err) {
        send({ type: "load-error", version: msg.version, message: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
      }
      break;
    case "drop":
      versions.delete(msg.version);
      break;
    case "ping":
      send({ type: "pong", id: msg.id });
      break;
  }
});
