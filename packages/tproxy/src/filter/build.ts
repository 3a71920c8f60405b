// A filter version from its directory to a CompiledFilter ready for the serving threads: read once
// (a snapshot), compiled (esbuild, compile.ts) and type-checked against the contract (check.ts) in a
// thread of its own. A version with compile or type errors is refused, with every error.
import { Worker } from "node:worker_threads";
import { FilterLoadError, type FilterDiagnostic } from "../errors.ts";
import { compileSnapshot, readFilterSnapshot, type CompiledFilter, type FilterSnapshot } from "./compile.ts";
import type { CheckInput } from "./check.ts";

const CHECK_THREAD = new URL(`./check-thread${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url);

/** A check that takes longer is refused: the compiler is not meant to take more than a second or two. */
const CHECK_TIMEOUT_MS = 30_000;
/**
 * Old-generation heap of the check's thread. A filter's check took about 30 MiB (src/filter/check.ts);
 * this bounds a pathological one, within the proxy's memory limit, rather than let it grow.
 */
const CHECK_HEAP_MB = 128;

/** Type-checks a snapshot in a new thread; resolves to its errors (empty: it checks). */
export function typeCheck(snap: FilterSnapshot): Promise<FilterDiagnostic[]> {
  const input: CheckInput = { entry: snap.entry, dir: snap.dir, files: Object.fromEntries([...snap.files].map(([f, b]) => [f, b.toString("utf8")])) };
  return new Promise((resolve, reject) => {
    const worker = new Worker(CHECK_THREAD, { workerData: input, resourceLimits: { maxOldGenerationSizeMb: CHECK_HEAP_MB } });
    let settled = false;
    const done = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn();
    };
    const timer = setTimeout(() => done(() => {
      void worker.terminate();
      reject(new FilterLoadError(`${snap.entry}: the type check took longer than ${CHECK_TIMEOUT_MS / 1000} s`, undefined, { reason: "type" }));
    }), CHECK_TIMEOUT_MS);
    worker.once("message", (diagnostics: FilterDiagnostic[]) => done(() => resolve(diagnostics)));
    worker.once("error", (err: Error & { code?: string }) => done(() => reject(new FilterLoadError(
      err.code === "ERR_WORKER_OUT_OF_MEMORY" ? `${snap.entry}: the type check needed more than ${CHECK_HEAP_MB} MiB` : `${snap.entry}: the type check failed: ${err.message}`,
      undefined,
      { reason: "type" },
    ))));
    worker.once("exit", (code) => done(() => reject(new FilterLoadError(`${snap.entry}: the type check's thread ended (${code}) without an answer`, undefined, { reason: "type" }))));
  });
}

/** Compiles and type-checks a snapshot; throws FilterLoadError (reason "compile" or "type") with every error. */
export async function buildSnapshot(snap: FilterSnapshot, path: string = snap.entry): Promise<CompiledFilter> {
  // esbuild first: it is quick, and a syntax error is better said once, by it, than again by the checker.
  const compiled = await compileSnapshot(snap, path);
  const errors = await typeCheck(snap);
  if (errors.length > 0) throw FilterLoadError.from("type", errors);
  return compiled;
}

/** Reads, compiles and type-checks the filter at `path` (its entry file, or its directory). */
export async function buildFilter(path: string): Promise<CompiledFilter> {
  return buildSnapshot(await readFilterSnapshot(path), path);
}
