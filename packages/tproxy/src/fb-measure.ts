import { monitorEventLoopDelay } from "node:perf_hooks";
import { readFilterSnapshot, compileSnapshot } from "./filter/compile.ts";
import { typeCheck } from "./filter/build.ts";
const dir = process.argv[2]!;
const h = monitorEventLoopDelay({ resolution: 10 }); h.enable();
let peak = 0; const base = process.memoryUsage().rss; const iv = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 5);
for (let i = 0; i < 5; i++) {
  const snap = await readFilterSnapshot(dir);
  const t0 = performance.now(); await compileSnapshot(snap); const t1 = performance.now();
  const d = await typeCheck(snap); const t2 = performance.now();
  console.log(`run ${i}: compile ${Math.round(t1 - t0)} ms, check ${Math.round(t2 - t1)} ms, errors ${d.length}, rss now ${Math.round(process.memoryUsage().rss / 2 ** 20)} MiB`);
}
clearInterval(iv); h.disable();
console.log(`rss before ${Math.round(base / 2 ** 20)} MiB, peak ${Math.round(peak / 2 ** 20)} MiB (+${Math.round((peak - base) / 2 ** 20)}), main-thread event-loop delay max ${Math.round(h.max / 1e6)} ms p99 ${Math.round(h.percentile(99) / 1e6)} ms`);
