// `tproxy run --workers N`: one process, N serving threads behind one set of ports (SO_REUSEPORT), the
// supervisor on the main thread serving the admin endpoints and watching the threads. Seen from a pod and
// from the kubelet's side: readiness across threads, /metrics summed over them, TLS sessions resumed
// whichever thread a connection reaches, a thread stuck in a hook or gone replaced while requests keep
// working, a drain on SIGTERM.
import { expect } from "chai";
import { join } from "node:path";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { waitFor } from "../../../test/support/netns.ts";
import { GOOGLE_IP, ProxyWorld, STORAGE_IP, type Proc } from "../../../test/support/world.ts";
import { lineAfter, metric, metricsOf, readyz, requestRecords, sourceHash } from "./helpers.ts";

// /loop: a hook that never yields; /exit: a hook that ends its thread (process.exit in a worker thread);
// /crash: an exception nothing catches, thrown from a timer the hook set.
const GOOD = `export default { request(flow) {
  if (flow.request.path === "/loop") for (;;) {}
  if (flow.request.path === "/exit") process.exit(3);
  if (flow.request.path === "/crash") setTimeout(() => { throw new Error("crash from a timer"); }, 0);
  if (flow.request.host !== "storage.googleapis.com") flow.respond(418, "Access Denied by Administrator");
} };\n`;

// Connects N times in a row to www.google.com:443 through the proxy, each time offering the session
// (ticket) of the connection before, and prints one JSON line per connection.
const RESUME_SCRIPT = `
const tls = require("node:tls");
const ca = require("node:fs").readFileSync(process.argv[1]);
const n = Number(process.argv[2]);
let session;
function one(i) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: "www.google.com", port: 443, servername: "www.google.com", ca, session, ALPNProtocols: ["http/1.1"] });
    let reused = false;
    let data = "";
    s.on("session", (next) => { session = next; });
    s.on("secureConnect", () => {
      reused = s.isSessionReused();
      s.write("GET /resume/" + i + " HTTP/1.1\\r\\nHost: www.google.com\\r\\nConnection: close\\r\\n\\r\\n");
    });
    s.on("data", (d) => { data += d; });
    s.on("error", reject);
    s.on("close", () => resolve({ i, reused, status: Number(data.split(" ")[1]) }));
  });
}
(async () => { for (let i = 0; i < n; i += 1) console.log(JSON.stringify(await one(i))); })().catch((e) => { console.error(e); process.exit(1); });
`;

describe("tproxy --workers 2 (serving threads, network namespaces)", function () {
  this.timeout(60_000);
  let world: ProxyWorld;
  let ca: { cert: string; key: string };
  let proxy: Proc;
  let dir: string;

  before(async () => {
    world = await ProxyWorld.create("tpr");
    ca = await world.makeProxyCa();
    await world.redirectPod();
    dir = join(world.dir, "filter");
    writeConfigMap(dir, { "other.ts": GOOD }); // no filter.ts yet
    proxy = await world.startProxy(["--ca-cert", ca.cert, "--ca-key", ca.key, "--filter", join(dir, "filter.ts"), "--upstream-ca", world.publicCa.certPath, "--workers", "2", "--log-format", "json", "--filter-timeout", "200"]);
    expect(proxy.lines.filter((l) => l.includes(`"msg":"serving thread listening"`))).to.have.length(2);
  });
  after(async () => {
    await world?.close();
  });

  const status = async (url: string) => Number((await world.curl(["--cacert", ca.cert, "-o", "/dev/null", "-w", "%{http_code}", url])).stdout);

  it("is ready only once every serving thread has a filter in force", async () => {
    expect(await readyz(world)).to.deep.equal({ status: 503, body: "not ready: no filter loaded\n" });
    expect(await status("https://storage.googleapis.com/")).to.equal(503);
    writeConfigMap(dir, { "filter.ts": GOOD });
    await waitFor("/readyz 200", async () => (await readyz(world)).status === 200, 5000, 100);
    expect(await readyz(world)).to.deep.equal({ status: 200, body: `ready filter=${sourceHash(GOOD)}\n` });
    expect(await status("https://storage.googleapis.com/")).to.equal(200);
    expect(await status("https://www.google.com/")).to.equal(418);
  });

  it("sums the threads' counters in /metrics", async () => {
    const before = await metricsOf(world);
    const n = 16;
    for (let i = 0; i < n; i += 1) expect(await status(`https://www.google.com/sum/${i}`)).to.equal(418);
    const after = await metricsOf(world);
    const served = requestRecords(proxy).filter((r) => r.url.startsWith("https://www.google.com/sum/"));
    expect(served).to.have.length(n);
    // The kernel spreads connections over the threads: both served some (1 in 2^15 that one served all).
    expect(new Set(served.map((r) => r.thread)).size).to.equal(2);
    expect(metric(after, "tproxy_requests_total", { decision: "denied", status: "418" }) - metric(before, "tproxy_requests_total", { decision: "denied", status: "418" })).to.equal(n);
    expect(metric(after, "tproxy_request_duration_seconds_count", { decision: "denied" }) - metric(before, "tproxy_request_duration_seconds_count", { decision: "denied" })).to.equal(n);
  });

  it("resumes a TLS session on another thread than the one that issued the ticket", async () => {
    const n = 12;
    const r = await world.pod.run(process.execPath, ["-e", RESUME_SCRIPT, ca.cert, String(n)]);
    expect(r.code, r.stderr).to.equal(0);
    const conns = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as { i: number; reused: boolean; status: number });
    expect(conns.map((c) => c.status)).to.deep.equal(Array(n).fill(418));
    const workerOf = new Map(requestRecords(proxy).filter((x) => x.url.startsWith("https://www.google.com/resume/")).map((x) => [Number(x.url.split("/").pop()), x.thread]));
    const crossed = conns.filter((c) => c.i > 0 && workerOf.get(c.i) !== workerOf.get(c.i - 1));
    expect(crossed.length, "no connection reached another thread than the one before it").to.be.above(0);
    expect(crossed.map((c) => ({ i: c.i, reused: c.reused }))).to.deep.equal(crossed.map((c) => ({ i: c.i, reused: true })));
    expect(conns.slice(1).every((c) => c.reused)).to.equal(true);
  });

  it("signs a name's certificate once: the other thread uses the one its sibling minted", async () => {
    const before = await metricsOf(world);
    const url = "https://fresh.example/shared";
    // New connections until both threads have served the name (the kernel spreads them).
    await waitFor("both threads to serve fresh.example", async () => {
      const r = await world.curl(["--cacert", ca.cert, "--resolve", `fresh.example:443:${GOOGLE_IP}`, "-o", "/dev/null", "-w", "%{http_code}", url]);
      expect(r.stdout, r.stderr).to.equal("418");
      return new Set(requestRecords(proxy).filter((x) => x.url === url).map((x) => x.thread)).size === 2;
    }, 20_000, 0);
    const after = await metricsOf(world);
    const d = (result: string) => metric(after, "tproxy_certificate_cache_lookups_total", { result }) - metric(before, "tproxy_certificate_cache_lookups_total", { result });
    expect(d("mint"), "signed once").to.equal(1);
    expect(d("shared"), "the other thread took its sibling's").to.equal(1);
  });

  it("replaces a thread stuck in a hook: that request is reset, never forwarded, and requests keep working", async () => {
    const from = proxy.lines.length;
    const before = await metricsOf(world);
    const stuck = await world.curl(["--cacert", ca.cert, "-o", "/dev/null", "-w", "%{http_code}", "https://storage.googleapis.com/loop"]);
    // Reset with nothing sent back (curl: 52 empty reply, or 56 receive failure): no status, and nothing upstream.
    expect([52, 56], stuck.stderr).to.include(stuck.code);
    expect(stuck.stdout).to.equal("000");
    expect(requestRecords(proxy).filter((r) => r.url.endsWith("/loop"))).to.deep.equal([]);
    await lineAfter(proxy, from, /serving thread replaced: filter code ran more than \d+ ms without yielding \(budget 200 ms\)/);
    for (let i = 0; i < 6; i += 1) expect(await status(`https://storage.googleapis.com/meanwhile/${i}`)).to.equal(200);
    await lineAfter(proxy, from, /serving thread listening/);
    await waitFor("/readyz 200 with the new thread", async () => (await readyz(world)).status === 200);
    const after = await metricsOf(world);
    expect(metric(after, "tproxy_worker_restarts_total", { reason: "hook-stuck" }) - metric(before, "tproxy_worker_restarts_total", { reason: "hook-stuck" })).to.equal(1);
    // One process all along: the replacement is a thread in it.
    expect(proxy.child.exitCode).to.equal(null);
  });

  it("replaces a thread that an uncaught exception ended; the process and the other thread serve on", async () => {
    const from = proxy.lines.length;
    const before = await metricsOf(world);
    await world.curl(["--cacert", ca.cert, "-o", "/dev/null", "https://storage.googleapis.com/crash"]);
    await lineAfter(proxy, from, /crash from a timer.*serving thread failed/);
    await lineAfter(proxy, from, /serving thread exited; starting another/);
    await lineAfter(proxy, from, /serving thread listening/);
    await waitFor("/readyz 200 with the new thread", async () => (await readyz(world)).status === 200);
    for (let i = 0; i < 4; i += 1) expect(await status(`https://storage.googleapis.com/after-crash/${i}`)).to.equal(200);
    expect(metric(await metricsOf(world), "tproxy_worker_restarts_total", { reason: "exited" }) - metric(before, "tproxy_worker_restarts_total", { reason: "exited" })).to.equal(1);
    expect(proxy.child.exitCode).to.equal(null);
  });

  it("replaces a thread that ended, after a back-off, and counts it", async () => {
    const from = proxy.lines.length;
    const before = await metricsOf(world);
    const gone = await world.curl(["--cacert", ca.cert, "-o", "/dev/null", "-w", "%{http_code}", "https://storage.googleapis.com/exit"]);
    expect(gone.stdout).to.equal("000");
    await lineAfter(proxy, from, /serving thread exited; starting another/);
    await lineAfter(proxy, from, /serving thread listening/);
    await waitFor("/readyz 200 with the new thread", async () => (await readyz(world)).status === 200);
    for (let i = 0; i < 4; i += 1) expect(await status(`https://storage.googleapis.com/after-exit/${i}`)).to.equal(200);
    const after = await metricsOf(world);
    expect(metric(after, "tproxy_worker_restarts_total", { reason: "exited" }) - metric(before, "tproxy_worker_restarts_total", { reason: "exited" })).to.equal(1);
  });

  it("refuses a version whose top-level code never finishes on a trial thread: no serving thread is held up or replaced, requests go on", async () => {
    const from = proxy.lines.length;
    const before = await metricsOf(world);
    writeConfigMap(dir, { "filter.ts": "for (;;) {}\nexport default { request() {} };\n" });
    // Requests while the version is tried: every one judged by the version in force, none waits for it.
    const during: number[] = [];
    const refused = lineAfter(proxy, from, /filter not loaded, previous version stays in force: .*did not finish within 2000 ms \(on a trial thread/, 20_000);
    let done = false;
    void refused.finally(() => { done = true; });
    while (!done) during.push(await status(`https://storage.googleapis.com/during-trial/${during.length}`));
    await refused;
    expect(during.length).to.be.at.least(3);
    expect(new Set(during)).to.deep.equal(new Set([200]));
    expect(await readyz(world)).to.deep.equal({ status: 200, body: `ready filter=${sourceHash(GOOD)}\n` });
    expect(await status("https://www.google.com/still-judged")).to.equal(418);
    const after = await metricsOf(world);
    expect(metric(after, "tproxy_worker_restarts_total") - metric(before, "tproxy_worker_restarts_total"), "threads replaced").to.equal(0);
    writeConfigMap(dir, { "filter.ts": GOOD });
    await waitFor("the good version back", async () => (await readyz(world)).body === `ready filter=${sourceHash(GOOD)}\n`);
  });

  it("loads a version whose top-level code takes 600 ms without failing requests that wait in an async hook meanwhile", async () => {
    // Each serving thread pauses 600 ms once to evaluate it; the budget (200 ms) of a hook waiting 40 ms
    // does not run out over that pause, which the thread, not the hook, spent. The hook's last wait is
    // one turn of the event loop (as for I/O): after the pause its budget's timer, expired too, would run
    // before that turn completes.
    const waits = GOOD.replace("request(flow) {", "async request(flow) {\n  await new Promise((r) => setTimeout(r, 40));\n  await new Promise((r) => setImmediate(r));");
    const slow = `const t = Date.now(); while (Date.now() - t < 600) {}\n${waits}`;
    let from = proxy.lines.length;
    writeConfigMap(dir, { "filter.ts": waits });
    await lineAfter(proxy, from, /filter loaded/, 10_000);
    from = proxy.lines.length;
    let loaded = false;
    const statuses: number[] = [];
    const loop = async (n: number): Promise<void> => {
      for (let i = 0; !loaded; i += 1) statuses.push(await status(`https://storage.googleapis.com/waits/${n}/${i}`));
    };
    const loops = Array.from({ length: 6 }, (_, n) => loop(n));
    await new Promise((r) => setTimeout(r, 300));
    writeConfigMap(dir, { "filter.ts": slow });
    await lineAfter(proxy, from, /took \d+ ms on its trial thread/, 10_000);
    await lineAfter(proxy, from, /filter loaded/, 10_000);
    await new Promise((r) => setTimeout(r, 300));
    loaded = true;
    await Promise.all(loops);
    expect(statuses.length).to.be.at.least(12);
    expect(statuses.filter((s) => s !== 200), `${statuses.length} requests`).to.deep.equal([]);
    writeConfigMap(dir, { "filter.ts": GOOD });
    await waitFor("the good version back", async () => (await readyz(world)).body === `ready filter=${sourceHash(GOOD)}\n`);
  });

  it("on SIGTERM answers /readyz 503 while requests in flight complete on both threads, then exits 0", async () => {
    let done = 0;
    // Plain HTTP: no earlier request in this suite used port 80 upstream, so connections there are these.
    // Ten at once: the kernel spreads them, so both threads have some in flight (1 in 2^9 that one has all).
    const n = 10;
    const slow = Array.from({ length: n }, (_, i) => world.curl(["-w", "\n%{http_code}", `http://storage.googleapis.com/slow/3000?${i}`]).finally(() => { done += 1; }));
    const upstream = async () => (await world.net.must("ss", ["-Htn", "state", "established", `( src ${STORAGE_IP}:80 )`])).trim().split("\n").filter(Boolean).length;
    await waitFor("the slow requests to reach the upstream", async () => (await upstream()) === n);
    const exit = proxy.stop("SIGTERM");
    await waitFor("/readyz to turn 503", async () => (await readyz(world)).status === 503);
    expect(done, "a slow request finished before /readyz turned 503").to.equal(0);
    expect((await Promise.all(slow)).map((r) => r.stdout)).to.deep.equal(Array.from({ length: n }, () => "storage.googleapis.com slow 3000\n\n200"));
    expect(await exit).to.equal(0);
    const served = requestRecords(proxy).filter((r) => r.url.startsWith("http://storage.googleapis.com/slow/3000"));
    expect(new Set(served.map((r) => r.thread)).size, "both threads had requests in flight").to.equal(2);
  });
});
