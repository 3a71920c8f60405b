// The proxy in a real network setting: a pod namespace whose port 80/443 traffic the node namespace
// REDIRECTs (kernel NAT) to `tproxy run`, upstream servers in an "internet" namespace, curl as the client.
import { expect } from "chai";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { waitFor } from "../../../test/support/netns.ts";
import { METRICS_PORT, TRANSPARENT_PORT, GOOGLE_IP, NODE_POD_SIDE, ProxyWorld, REPO, STORAGE_IP, POD_IP, POD_IP6, NET_IP6, type Proc } from "../../../test/support/world.ts";
import { lineAfter, metric, sourceHash } from "./helpers.ts";

const STATUS = ["-w", "\n%{http_code}"];

/** Splits curl output made with STATUS into body and status code. */
function parse(out: string): { body: string; status: number } {
  const i = out.lastIndexOf("\n");
  return { body: out.slice(0, i), status: Number(out.slice(i + 1)) };
}

const TEST_FILTER = `
import type { Filter } from "@tproxy/tproxy/filter";
const ALLOWED_HOSTS = new Set(["storage.googleapis.com", "untrusted.example", "${GOOGLE_IP}"]);
export default {
  async request(flow) {
    const path = flow.request.path;
    if (path.startsWith("/throw")) throw new Error("boom from the filter");
    if (path.startsWith("/loop")) { for (;;) { /* never returns */ } }
    if (path.startsWith("/hang")) await new Promise(() => undefined);
    flow.request.headers["x-tproxy-filter"] = "seen";
    if (!ALLOWED_HOSTS.has(flow.request.host)) {
      flow.respond(418, "Access Denied by Administrator", { "content-type": "text/html" });
    }
  },
  response(flow) {
    flow.response!.headers["x-filtered"] = "yes";
    if (flow.request.path.startsWith("/headers/deny-response")) flow.respond(451, "blocked by response hook");
  },
} satisfies Filter;
`;

describe("tproxy transparent interception (network namespaces, iptables REDIRECT)", function () {
  this.timeout(60_000);
  let world: ProxyWorld;
  let proxy: Proc;
  let ca: { cert: string; key: string };
  let filterDir: string;

  before(async function () {
    world = await ProxyWorld.create("tpx");
    ca = await world.makeProxyCa();
    filterDir = join(world.dir, "filter");
    writeConfigMap(filterDir, { "filter.ts": TEST_FILTER });
    proxy = await world.startProxy([
      "--ca-cert", ca.cert, "--ca-key", ca.key, "--filter", join(filterDir, "filter.ts"),
      "--upstream-ca", world.publicCa.certPath, "--standard-port", "1080", "--filter-timeout", "300",
      // One process, so that the memory test measures the process that carries the bytes.
      "--workers", "1",
    ]);
    await world.redirectPod();
  });
  after(async () => {
    await world?.close();
  });

  const curl = async (args: string[]) => {
    const r = await world.curl(["--cacert", ca.cert, ...STATUS, ...args]);
    return { ...parse(r.stdout), stderr: r.stderr, code: r.code };
  };

  it("lets allowed HTTPS through and answers the rest with the filter's status", async () => {
    const ok = await curl(["https://storage.googleapis.com/solutions-public-assets/"]);
    expect(ok.status).to.equal(200);
    expect(ok.body).to.equal("storage.googleapis.com GET /solutions-public-assets/\n");
    const denied = await curl(["https://www.google.com/"]);
    expect(denied.status).to.equal(418);
    expect(denied.body).to.equal("Access Denied by Administrator");
  });

  it("does the same for plain HTTP", async () => {
    expect((await curl(["http://storage.googleapis.com/x"])).body).to.equal("storage.googleapis.com GET /x\n");
    const denied = await curl(["http://www.google.com/"]);
    expect(denied.status).to.equal(418);
  });

  it("sends request headers changed by the filter upstream, and response headers changed after", async () => {
    const r = await world.curl(["--cacert", ca.cert, "-D", "-", "https://storage.googleapis.com/headers"]);
    expect(r.stdout).to.match(/^x-filtered: yes\r$/m);
    const sent = JSON.parse(r.stdout.slice(r.stdout.indexOf("{"))) as Record<string, string>;
    expect(sent["x-tproxy-filter"]).to.equal("seen");
    const replaced = await curl(["https://storage.googleapis.com/headers/deny-response"]);
    expect(replaced.status).to.equal(451);
    expect(replaced.body).to.equal("blocked by response hook");
  });

  it("offers h2 and http/1.1 in ALPN by default (HTTP/2 itself: http2.test.ts; --http2 off: HTTP/1.1 only, there too)", async () => {
    const h2 = await world.curl(["--cacert", ca.cert, "--http2", "-o", "/dev/null", "-w", "%{http_version}", "https://storage.googleapis.com/"]);
    expect(h2.stdout).to.equal("2");
    const h1 = await world.curl(["--cacert", ca.cert, "--http1.1", "-o", "/dev/null", "-w", "%{http_version}", "https://storage.googleapis.com/"]);
    expect(h1.stdout).to.equal("1.1");
  });

  it("reaches the server the name resolves to, never the address the client connected to (SNI and Host)", async () => {
    // The pod connects to www.google.com's address while claiming the allowed storage.googleapis.com.
    const tls = await curl(["--resolve", `storage.googleapis.com:443:${GOOGLE_IP}`, "https://storage.googleapis.com/spoof"]);
    expect(tls.status).to.equal(200);
    expect(tls.body).to.equal("storage.googleapis.com GET /spoof\n");
    const plain = await curl(["-H", "Host: storage.googleapis.com", `http://${GOOGLE_IP}/spoof`]);
    expect(plain.body).to.equal("storage.googleapis.com GET /spoof\n");
  });

  it("refuses a Host that disagrees with the TLS server name", async () => {
    const r = await curl(["-H", "Host: www.google.com", "https://storage.googleapis.com/front"]);
    expect(r.status).to.equal(421);
  });

  it("judges an IP-literal HTTPS request without SNI on the original destination", async () => {
    const allowed = await curl([`https://${GOOGLE_IP}/by-ip`]);
    expect(allowed.status).to.equal(200);
    expect(allowed.body).to.equal("www.google.com GET /by-ip\n");
    const denied = await curl([`https://${STORAGE_IP}/by-ip`]);
    expect(denied.status).to.equal(418);
  });

  it("verifies upstream certificates: an unknown CA gives a clear 502", async () => {
    const r = await curl(["https://untrusted.example/"]);
    expect(r.status).to.equal(502);
    expect(r.body).to.match(/upstream certificate of untrusted\.example:443 is not trusted/);
  });

  it("denies a request whose hook throws, while a parallel request succeeds", async () => {
    const [thrown, parallel] = await Promise.all([curl(["https://storage.googleapis.com/throw"]), curl(["https://storage.googleapis.com/parallel"])]);
    expect(thrown.status).to.equal(403);
    expect(thrown.body).to.match(/filter failed/);
    expect(parallel.status).to.equal(200);
    await waitFor("the hook error's log line", () => proxy.lines.some((l) => /filter request hook failed .*Error: boom from the filter/.test(l)));
  });

  it("cuts off a hook that never settles with 403 while a parallel request succeeds, and one that never yields by replacing its thread", async () => {
    const [hung, parallel] = await Promise.all([
      curl(["https://storage.googleapis.com/hang"]),
      (async () => {
        await new Promise((r) => setTimeout(r, 50));
        return curl(["https://storage.googleapis.com/parallel"]);
      })(),
    ]);
    expect(hung.status).to.equal(403);
    expect(hung.body).to.match(/did not decide within 300 ms/);
    expect(parallel.status).to.equal(200);
    expect(parallel.body).to.equal("storage.googleapis.com GET /parallel\n");
    // A loop holds the serving thread: the supervisor replaces it; the request gets no answer at all.
    const from = proxy.lines.length;
    const looped = await curl(["https://storage.googleapis.com/loop"]);
    expect(looped.status).to.equal(0);
    await lineAfter(proxy, from, /serving thread replaced/);
    await lineAfter(proxy, from, /serving thread listening/);
    expect((await curl(["https://storage.googleapis.com/after"])).status).to.equal(200);
  });

  it("closes garbage bytes and answers a malformed request with 400, and keeps serving", async () => {
    // The pod sends bytes that are neither TLS nor HTTP and waits up to 5 s: the proxy must close the
    // connection itself (FIN), having sent nothing back.
    const script = `
      const s = require("node:net").connect(80, ${JSON.stringify(GOOGLE_IP)}, () => s.write(Buffer.from([1, 2, 3, 32, 110, 111, 116, 13, 10, 13, 10])));
      let bytes = 0, ended = false;
      const timer = setTimeout(() => { console.log(JSON.stringify({ bytes, closedBy: "nobody within 5 s" })); process.exit(0); }, 5000);
      s.on("data", (d) => { bytes += d.length; });
      s.on("end", () => { ended = true; });
      s.on("error", (e) => { console.log(JSON.stringify({ bytes, closedBy: "reset " + e.code })); process.exit(0); });
      s.on("close", () => { clearTimeout(timer); console.log(JSON.stringify({ bytes, closedBy: ended ? "proxy" : "client" })); });`;
    const before = await world.node.must("curl", ["-s", `http://127.0.0.1:${METRICS_PORT}/metrics`]);
    const from = proxy.lines.length;
    const garbage = await world.pod.run(process.execPath, ["-e", script]);
    expect(JSON.parse(garbage.stdout)).to.deep.equal({ bytes: 0, closedBy: "proxy" });
    const line = await lineAfter(proxy, from, /connection closed: /);
    expect(line).to.match(new RegExp(`WARN connection closed: first bytes are neither TLS nor HTTP \\(0x01020320\\) client=${POD_IP.replace(/\./g, "\\.")}:\\d+ destination=\\{"address":"${GOOGLE_IP.replace(/\./g, "\\.")}","port":80\\}`));
    const after = await world.node.must("curl", ["-s", `http://127.0.0.1:${METRICS_PORT}/metrics`]);
    expect(metric(after, "tproxy_rejected_connections_total", { reason: "unknown-protocol" }) - metric(before, "tproxy_rejected_connections_total", { reason: "unknown-protocol" })).to.equal(1);
    expect((await curl(["http://storage.googleapis.com/next"])).body).to.equal("storage.googleapis.com GET /next\n");
    const malformed = await world.pod.run("sh", ["-c", `printf 'GET / HTTP/1.1\\r\\nHost: storage.googleapis.com\\r\\nBad Header Line\\r\\n\\r\\n' | nc -w 3 ${STORAGE_IP} 80`]);
    expect(malformed.stdout).to.match(/^HTTP\/1\.1 400 /);
    expect((await curl(["https://storage.googleapis.com/still-here"])).status).to.equal(200);
  });

  it("reads the original destination of redirected IPv6 connections", async () => {
    await world.node.must("ip6tables", ["-t", "nat", "-A", "PREROUTING", "-s", POD_IP6, "-p", "tcp", "--dport", "80", "-j", "REDIRECT", "--to-ports", String(TRANSPARENT_PORT)]);
    const r = await curl(["-6", `http://[${NET_IP6}]/v6`]);
    expect(r.status).to.equal(418);
    await waitFor("the IPv6 request's log line", () => proxy.lines.some((l) => l.includes(`GET http://[${NET_IP6}]/v6 -> 418`)));
  });

  it("survives clients that hang up before the answer", async () => {
    const quitters = await Promise.all(Array.from({ length: 8 }, (_, i) => world.curl(["--cacert", ca.cert, "-o", "/dev/null", "--max-time", "0.3", `https://storage.googleapis.com/slow/${400 + i * 20}`])));
    expect(quitters.every((q) => q.code === 28)).to.equal(true); // curl: operation timed out
    await new Promise((r) => setTimeout(r, 500)); // the upstream answers after the clients left
    expect(proxy.child.exitCode).to.equal(null);
    expect((await curl(["https://storage.googleapis.com/after-quitters"])).status).to.equal(200);
  });

  it("sends a bodiless GET again on a new connection when the server closed the kept-alive one it was sent on; a POST gets 502", async () => {
    // The upstream closes every reused connection on this route, as a server does whose idle timeout
    // fires just as the proxy reuses the connection: a race real clients otherwise see as random 502s.
    const gets: Array<{ status: number; body: string }> = [];
    for (let i = 0; i < 6; i++) gets.push(await curl([`https://storage.googleapis.com/close-on-reuse/${i}`]));
    expect(gets.map((g) => g.status)).to.deep.equal([200, 200, 200, 200, 200, 200]);
    // The control: the server did close reused connections, and a request that may not be sent twice
    // (it has a body) reports the failure instead of repeating it.
    expect(Number(/closed-on-reuse (\d+)/.exec(gets.at(-1)!.body)?.[1])).to.be.at.least(1);
    const posts: number[] = [];
    for (let i = 0; i < 3; i++) posts.push((await curl(["--data", "x=1", `https://storage.googleapis.com/close-on-reuse/post${i}`])).status);
    expect(posts).to.include(502);
  });

  it("answers sidecar-init's readiness probe itself", async () => {
    const r = await world.curl(["-D", "-", "http://192.0.2.1/"]);
    expect(r.stdout).to.match(/^HTTP\/1\.1 200/);
    expect(r.stdout).to.match(/^x-tproxy-probe: ok\r$/m);
    expect(r.stdout).to.match(/tproxy: intercepting\n$/);
  });

  it("serves as a standard proxy on its own port (CONNECT and absolute-form)", async () => {
    const https = await curl(["-x", `http://${NODE_POD_SIDE}:1080`, "https://storage.googleapis.com/std"]);
    expect(https.body).to.equal("storage.googleapis.com GET /std\n");
    const plain = await curl(["-x", `http://${NODE_POD_SIDE}:1080`, "http://www.google.com/std"]);
    expect(plain.status).to.equal(418);
  });

  it("streams a 1 GiB download with the proxy's memory flat", async function () {
    this.timeout(120_000);
    const pid = proxy.child.pid!;
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) * 1024;
    const before = rss();
    let peak = before;
    const timer = setInterval(() => { peak = Math.max(peak, rss()); }, 100);
    const r = await world.curl(["--cacert", ca.cert, "-o", "/dev/null", "-w", "%{http_code} %{size_download}", `https://storage.googleapis.com/bytes/${1024 ** 3}`], 100);
    clearInterval(timer);
    expect(r.stdout).to.equal(`200 ${1024 ** 3}`);
    // Buffering the body would grow RSS by about 1 GiB; a streaming proxy stays within GC noise
    // (tens of MiB, more on a busy machine).
    expect(peak - before, `RSS grew from ${before} to ${peak}`).to.be.below(160 * 1024 * 1024);
  });

  it("passes WebSocket upgrades that the request hook allows, and refuses the others", async () => {
    const script = `
      const WebSocket = require(${JSON.stringify(join(REPO, "node_modules/ws"))});
      const ca = require("fs").readFileSync(${JSON.stringify(ca.cert)});
      const [url] = process.argv.slice(1);
      const ws = new WebSocket(url, { ca });
      ws.on("open", () => ws.send("ping"));
      ws.on("message", (m) => { console.log("message " + m); process.exit(0); });
      ws.on("unexpected-response", (_req, res) => { console.log("refused " + res.statusCode); process.exit(0); });
      ws.on("error", (e) => { console.log("error " + e.message); process.exit(1); });`;
    const ok = await world.pod.run(process.execPath, ["-e", script, "wss://storage.googleapis.com/ws"]);
    expect(ok.stdout.trim()).to.equal("message storage.googleapis.com: ping");
    const refused = await world.pod.run(process.execPath, ["-e", script, "wss://www.google.com/ws"]);
    expect(refused.stdout.trim()).to.equal("refused 418");
  });

  it("logs one readable line per request and exposes metrics and health", async () => {
    const before = await world.node.must("curl", ["-s", `http://127.0.0.1:${METRICS_PORT}/metrics`]);
    await curl(["https://www.google.com/logged"]);
    await waitFor("the request's log line", () => proxy.lines.some((l) => / GET https:\/\/www\.google\.com\/logged -> 418 30b [\d.]+ms denied \(filter\)/.test(l)));
    const metrics = await world.node.must("curl", ["-s", `http://127.0.0.1:${METRICS_PORT}/metrics`]);
    const denied = { decision: "denied", status: "418" };
    expect(metric(metrics, "tproxy_requests_total", denied) - metric(before, "tproxy_requests_total", denied)).to.equal(1);
    expect(metric(metrics, "tproxy_filter_info", { hash: sourceHash(TEST_FILTER) })).to.equal(1);
    expect(await world.node.must("curl", ["-s", `http://127.0.0.1:${METRICS_PORT}/readyz`])).to.match(/^ready filter=/);
    expect(await world.node.must("curl", ["-s", `http://127.0.0.1:${METRICS_PORT}/healthz`])).to.equal("ok\n");
  });

  it("drains requests in flight on SIGTERM, then exits 0", async () => {
    const slow = curl(["https://storage.googleapis.com/slow/1500"]);
    await new Promise((r) => setTimeout(r, 400));
    const exit = proxy.stop("SIGTERM");
    const r = await slow;
    expect(r.status).to.equal(200);
    expect(r.body).to.equal("storage.googleapis.com slow 1500\n");
    expect(await exit).to.equal(0);
    // The proxy is gone: redirected connections are refused, nothing leaks past it.
    const after = await world.curl(["-o", "/dev/null", "-w", "%{http_code}", "http://www.google.com/"]);
    expect(after.stdout).to.equal("000");
    expect(after.code).to.equal(7); // could not connect
  });
});

describe("tproxy live filter reload (a ConfigMap volume updated the kubelet's way)", function () {
  this.timeout(60_000);
  let world: ProxyWorld;
  let proxy: Proc;
  let ca: { cert: string; key: string };
  let filterDir: string;
  const chartFilter = readFileSync(join(REPO, "charts/tproxy/files/filter.ts"), "utf8");

  before(async function () {
    world = await ProxyWorld.create("tpr");
    ca = await world.makeProxyCa();
    filterDir = join(world.dir, "filter");
    writeConfigMap(filterDir, { "filter.ts": chartFilter });
    proxy = await world.startProxy(["--ca-cert", ca.cert, "--ca-key", ca.key, "--filter", join(filterDir, "filter.ts"), "--upstream-ca", world.publicCa.certPath]);
    await world.redirectPod();
  });
  after(async () => {
    await world?.close();
  });

  const status = async (url: string) => (await world.curl(["--cacert", ca.cert, "-o", "/dev/null", "-w", "%{http_code}", url])).stdout;

  it("serves the chart's filter: the allowed bucket 200, everything else 418", async () => {
    expect(await status("https://storage.googleapis.com/solutions-public-assets/")).to.equal("200");
    expect(await status("https://www.google.com/")).to.equal("418");
  });

  it("changes 418 to 500 within 2 s of the swap, without a restart, and keeps 500 when a broken filter follows", async () => {
    const pid = proxy.child.pid;
    writeConfigMap(filterDir, { "filter.ts": chartFilter.replace("418", "500") });
    const swapped = Date.now();
    await waitFor("the new filter to answer 500", async () => (await status("https://www.google.com/")) === "500", 2000, 100);
    expect(Date.now() - swapped).to.be.below(2000);
    expect(proxy.child.pid).to.equal(pid);
    expect(proxy.child.exitCode).to.equal(null);

    writeConfigMap(filterDir, { "filter.ts": chartFilter.replace("request(flow) {", "request(flow) {\n    const x = ;") });
    await proxy.waitForLine(/filter not loaded, previous version stays in force: .*filter\.ts:\d+:\d+/, 3000);
    expect(await status("https://www.google.com/")).to.equal("500");
    expect(await status("https://storage.googleapis.com/solutions-public-assets/")).to.equal("200");
  });

  it("lets a request in flight finish with the version it started with", async () => {
    // A filter whose response hook marks the version; the slow request starts under v1, v2 lands meanwhile.
    // (`flow.response!`: the contract types it optional, and the type check holds a filter to that.)
    const marker = (v: string) => `export default { response(flow) { flow.response!.headers["x-version"] = "${v}"; } };`;
    writeConfigMap(filterDir, { "filter.ts": marker("one") });
    await waitFor("v1", async () => /x-version: one/.test((await world.curl(["--cacert", ca.cert, "-D", "-", "-o", "/dev/null", "https://www.google.com/"])).stdout), 3000, 100);
    const slow = world.curl(["--cacert", ca.cert, "-D", "-", "-o", "/dev/null", "https://www.google.com/slow/1500"]);
    await new Promise((r) => setTimeout(r, 300));
    writeConfigMap(filterDir, { "filter.ts": marker("two") });
    await waitFor("v2", async () => /x-version: two/.test((await world.curl(["--cacert", ca.cert, "-D", "-", "-o", "/dev/null", "https://www.google.com/"])).stdout), 3000, 100);
    expect((await slow).stdout).to.match(/x-version: one/);
  });
});
