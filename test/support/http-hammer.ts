// Plain-HTTP GETs as fast as `concurrency` loops can make them, each on a new connection, for `seconds`;
// prints one JSON line counting the outcomes (status codes, error codes). For hand-over tests: a burst
// that keeps the proxy's accept queues busy, where a few sequential requests would miss a short race.
//   node http-hammer.ts URL SECONDS CONCURRENCY
import http from "node:http";

const [url = "", seconds = "5", concurrency = "16"] = process.argv.slice(2);
const end = Date.now() + Number(seconds) * 1000;
const counts: Record<string, number> = {};
const count = (key: string | number) => (counts[key] = (counts[key] ?? 0) + 1);

const one = () =>
  new Promise<void>((resolve) => {
    const req = http.get(url, { agent: false, timeout: 5000 }, (res) => {
      res.resume();
      res.on("end", () => {
        count(res.statusCode ?? "none");
        resolve();
      });
    });
    req.on("error", (e: NodeJS.ErrnoException) => {
      count(e.code ?? e.message);
      resolve();
    });
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
  });

await Promise.all(Array.from({ length: Number(concurrency) }, async () => {
  while (Date.now() < end) await one();
}));
console.log(JSON.stringify(counts));
