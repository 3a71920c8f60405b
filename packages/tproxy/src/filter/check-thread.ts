// The type check's own thread (build.ts starts one per check): the compiler's CPU and memory stay off the
// supervisor's main thread, which answers /healthz and the watchdog meanwhile, and its memory is given
// back when the thread ends.
import { parentPort, workerData } from "node:worker_threads";
import { checkFilter, type CheckInput } from "./check.ts";

parentPort!.postMessage(checkFilter(workerData as CheckInput));
