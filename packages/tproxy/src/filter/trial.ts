// A new filter version's top-level code runs first on a thread of its own, within the load budget, before
// any serving thread evaluates it. A version whose top-level code loops, or outlasts the budget, is
// refused there: the thread is terminated, the serving threads never see the version, and the one in
// force keeps serving. Without this, every serving thread would be stuck in it until the watchdog
// replaced them all, resetting every connection of the node.
import { Worker } from "node:worker_threads";
import { FilterLoadError } from "../errors.ts";
import type { CompiledFilter } from "./compile.ts";

const TRIAL_URL = new URL(`./trial-thread${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url);

/** What the trial thread reports. */
export type TrialResult = { ok: true; ms: number } | { ok: false; error: string };

/**
 * Evaluates the version on a fresh thread; resolves with the time its top-level code took, rejects with
 * FilterLoadError when it throws, fails validation, or does not finish within `budgetMs`.
 */
export function trialEvaluate(compiled: CompiledFilter, budgetMs: number): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    // The budget counts from the thread's start (a thread takes some tens of milliseconds to boot).
    const worker = new Worker(TRIAL_URL, { workerData: { code: compiled.code, path: compiled.path }, stdout: true, stderr: true });
    let settled = false;
    const settle = (f: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void worker.terminate();
      f();
    };
    const timer = setTimeout(() => settle(() => reject(new FilterLoadError(`${compiled.path}: evaluating the filter's top-level code did not finish within ${budgetMs} ms (on a trial thread, which was stopped); the version in force stays`))), budgetMs + 1000);
    worker.once("message", (r: TrialResult) =>
      settle(() => {
        if (!r.ok) reject(new FilterLoadError(r.error));
        else if (r.ms > budgetMs) reject(new FilterLoadError(`${compiled.path}: evaluating the filter's top-level code took ${Math.round(r.ms)} ms on a trial thread, more than ${budgetMs} ms; the version in force stays`));
        else resolve(r.ms);
      }),
    );
    worker.once("error", (err) => settle(() => reject(new FilterLoadError(`${compiled.path}: ${err.message}`))));
    worker.once("exit", (code) => settle(() => reject(new FilterLoadError(`${compiled.path}: the filter's top-level code ended its trial thread (exit code ${code})`))));
  });
}
