// The trial thread of filter/trial.ts: evaluates one version's top-level code, as a serving thread would,
// and reports how long it took or why it failed. Nothing else runs here.
import { parentPort, workerData } from "node:worker_threads";
import { FilterLoadError } from "../errors.ts";
import { evaluateFilter } from "./host.ts";
import type { TrialResult } from "./trial.ts";

const { code, path } = workerData as { code: string; path: string };
const started = performance.now();
let result: TrialResult;
try {
  evaluateFilter(code, path);
  result = { ok: true, ms: performance.now() - started };
} catch (err) {
  result = { ok: false, error: err instanceof FilterLoadError ? err.message : `${path}: ${(err as Error).message}` };
}
parentPort!.postMessage(result);
