// The proxy's life around its filter and its flags, seen from a pod: no loadable filter (fail closed, 503,
// not ready) until a good version arrives; reloads that compile but cannot be used keep the version in
// force; --on-filter-error allow, --insecure-upstream; readiness while draining; every metric the README
// names moves when it should. Network namespaces and REDIRECT as in transparent.test.ts.
import { expect } from "chai";
import { join } from "node:path";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { waitFor } from "../../../test/support/netns.ts";
import { METRICS_PORT, NODE_POD_SIDE, ProxyWorld, STORAGE_IP, type Proc } from "../../../test/support/world.ts";
import { hasMetric, lineAfter, metric, metricsOf, readyz, sourceHash } from "./helpers.ts";

const GOOD = `
import type { Filter } from "@tproxy/tproxy/filter";
export default {
  async request(flow) {
    if (flow.request.path.startsWith("/throw")) throw new Error("boom from the filter");
    if (flow.request.path.startsWith("/loop")) { for (;;) { /* never returns */ } }
    if (flow.request.path.startsWith("/overrun")) { const end = Date.now() + 450; while (Date.now() < end) { /* past a 300 ms budget, then done */ } }
    if (flow.request.host !== "storage.googleapis.com" && flow.request.host !== "untrusted.example") {
      flow.respond(418, "Access Denied by Administrator", { "content-type": "text/html" });
    }
  },
} satisfies Filter;
`;

function parse(out: string): { body: string; status: number } {
  const i = out.lastIndexOf("\n");
  return { body: out.slice(0, i), status: Number(out.slice(i + 1)) };
}

describe("tproxy filter lifecycle, flags and metrics (network namespaces, iptables REDIRECT)", function () {
  this.timeout(60_000);
  let world: ProxyWorld;
  let ca: { cert: string; key: string };
  let dirs = 0;

  before(async () => {
    world = await ProxyWorld.create("tpx");
    ca = await world.makeProxyCa();
    await world.redirectPod();
  });
  after(async () => {
    await world?.close();
  });

  /** A fresh ConfigMap directory; `files` as the kubelet would write it. */
  const configMap = (files: Record<string, string>): string => {
    const dir = join(world.dir, `filter-${++dirs}`);
    writeConfigMap(dir, files);
    return dir;
  };
  const start = (dir: string, extra: string[] = []): Promise<Proc> =>
    world.startProxy(["--ca-cert", ca.cert, "--ca-key", ca.key, "--filter", join(dir, "filter.ts"), "--upstream-ca", world.publicCa.certPath, "--standard-port", "1080", "--workers", "1", ...extra]);
  const curl = async (args: string[]) => {
    const r = await world.curl(["--cacert", ca.cert, "-w", "\n%{http_code}", ...args]);
    return { ...parse(r.stdout), stderr: r.stderr, code: r.code };
  };
  const proxied = (url: string) => curl(["-x", `http://${NODE_POD_SIDE}:1080`, url]);

  describe("with no loadable filter at start", () => {
    const CASES: Array<[string, Record<string, string>, RegExp]> = [
      ["the file is missing", { "other.ts": GOOD }, /cannot read filter .*filter\.ts: ENOENT/],
      ["a syntax error", { "filter.ts": "export default {\n  request(flow) { const x = ; }\n};" }, /filter\.ts:2:29: Unexpected/],
      ["a top-level throw", { "filter.ts": `throw new Error("top-level boom");\nexport default { request() {} };` }, /Error: top-level boom/],
      // Refused by the type check against the contract, before any thread evaluates it.
      ["a default export without hooks", { "filter.ts": "export default { requests() {} };" }, /filter\.ts:1:18: Object literal may only specify known properties, but 'requests' does not exist in type 'Filter'/],
    ];
    for (const [what, files, reason] of CASES) {
      it(`${what}: every request gets 503 and /readyz 503; a good version makes requests judged and /readyz 200`, async () => {
        const dir = configMap(files);
        const proxy = await start(dir);
        try {
          expect(proxy.lines.find((l) => /filter not loaded, no filter in force/.test(l))).to.match(reason);
          for (const [how, r] of [
            ["transparent http", await curl(["http://storage.googleapis.com/x"])],
            ["transparent https", await curl(["https://storage.googleapis.com/x"])],
            ["standard http", await proxied("http://storage.googleapis.com/x")],
            ["standard https", await proxied("https://storage.googleapis.com/x")],
          ] as const) {
            expect(r.status, how).to.equal(503);
            expect(r.body, how).to.equal("tproxy: no filter is loaded (see the proxy's log for why); request denied\n");
          }
          expect(await readyz(world)).to.deep.equal({ status: 503, body: "not ready: no filter loaded\n" });

          writeConfigMap(dir, { "filter.ts": GOOD });
          await waitFor("the good filter to judge requests", async () => (await curl(["https://www.google.com/"])).status === 418, 5000, 100);
          expect(await curl(["https://storage.googleapis.com/ok"])).to.include({ status: 200, body: "storage.googleapis.com GET /ok\n" });
          expect(await curl(["http://www.google.com/"])).to.include({ status: 418, body: "Access Denied by Administrator" });
          expect((await proxied("https://storage.googleapis.com/std")).status).to.equal(200);
          expect((await proxied("http://www.google.com/std")).status).to.equal(418);
          expect(await readyz(world)).to.deep.equal({ status: 200, body: `ready filter=${sourceHash(GOOD)}\n` });
        } finally {
          await proxy.stop();
        }
      });
    }
  });

  describe("a reload that does not type-check against the contract, or compiles but cannot be used", () => {
    let proxy: Proc;
    let dir: string;
    before(async () => {
      dir = configMap({ "filter.ts": GOOD });
      proxy = await start(dir);
    });
    after(async () => {
      await proxy?.stop();
    });

    // What the type check (against the filter contract) refuses first, and what only evaluating the module shows.
    const BAD: Array<[string, string, RegExp, "type" | "evaluate"]> = [
      ["throws at top level", `throw new Error("top-level boom");\nexport default { request() {} };`, /filter\.ts:1:\d+: Error: top-level boom/, "evaluate"],
      ["has only a named export", "export function request(flow) {}", /filter\.ts:1:1: the default export is not a Filter .*has no default export/, "type"],
      ["misspells the hook", "export default { requests(flow) {} };", /filter\.ts:1:18: Object literal may only specify known properties, but 'requests' does not exist in type 'Filter'/, "type"],
      ["exports an empty object", "export default {};", /neither a request nor a response hook \(it is empty\)/, "evaluate"],
      ["exports a string", `export default "allow";`, /Type '"allow"' has no properties in common with type 'Filter'/, "type"],
      ["has a hook that is not a function", "export default { request: true };", /filter\.ts:1:18: Type 'boolean' is not assignable to type 'Hook'/, "type"],
    ];
    for (const [what, source, reason, label] of BAD) {
      it(`keeps the previous version when the new one ${what}, and logs why`, async () => {
        // Each case starts from the good version in force, whatever the one before left.
        writeConfigMap(dir, { "filter.ts": GOOD });
        await waitFor("the good version in force", async () => (await readyz(world)).body === `ready filter=${sourceHash(GOOD)}\n`, 5000, 100);
        const before = await metricsOf(world);
        const from = proxy.lines.length;
        writeConfigMap(dir, { "filter.ts": `${source}\n// ${what}` });
        const line = await lineAfter(proxy, from, /filter not loaded/, 5000);
        expect(line).to.match(/filter not loaded, previous version stays in force: /);
        expect(line).to.match(reason);
        expect(line).to.include(`kept=${sourceHash(GOOD)}`);
        expect(await curl(["https://www.google.com/"])).to.include({ status: 418, body: "Access Denied by Administrator" });
        expect(await curl(["https://storage.googleapis.com/still"])).to.include({ status: 200, body: "storage.googleapis.com GET /still\n" });
        const after = await metricsOf(world);
        expect(metric(after, "tproxy_filter_reloads_total", { result: "error" }) - metric(before, "tproxy_filter_reloads_total", { result: "error" })).to.equal(1);
        expect(metric(after, "tproxy_filter_load_failures_total", { reason: label }) - metric(before, "tproxy_filter_load_failures_total", { reason: label })).to.equal(1);
        expect(metric(after, "tproxy_filter_info", { hash: sourceHash(GOOD) })).to.equal(1);
        expect((await readyz(world)).status).to.equal(200);
      });
    }
  });

  describe("--on-filter-error and --insecure-upstream", () => {
    it("deny (the default): a hook that throws or runs too long gets 403; allow: the request goes upstream", async () => {
      const dir = configMap({ "filter.ts": GOOD });
      const deny = await start(dir, ["--filter-timeout", "300"]);
      try {
        expect(await curl(["https://storage.googleapis.com/throw"])).to.include({ status: 403, body: "tproxy: the filter failed on this request; request denied (see the proxy's log)\n" });
        expect((await curl(["https://storage.googleapis.com/overrun"])).status).to.equal(403);
      } finally {
        await deny.stop();
      }
      const allow = await start(dir, ["--filter-timeout", "300", "--on-filter-error", "allow"]);
      try {
        expect(await curl(["https://storage.googleapis.com/throw"])).to.include({ status: 200, body: "storage.googleapis.com GET /throw\n" });
        expect(await curl(["http://www.google.com/throw"])).to.include({ status: 200, body: "www.google.com GET /throw\n" });
        expect(await curl(["https://storage.googleapis.com/overrun"])).to.include({ status: 200, body: "storage.googleapis.com GET /overrun\n" });
        // A hook that never yields is not an error the filter can be forgiven: it holds the thread, which is
        // replaced; the request is reset, never forwarded, even under allow.
        expect(await curl(["https://storage.googleapis.com/loop"])).to.include({ status: 0 });
        await waitFor("the replacement thread", async () => (await readyz(world)).status === 200);
        await waitFor("the hook error's log line", () => allow.lines.some((l) => /WARN filter request hook failed .*Error: boom from the filter/.test(l)));
        // Only failures pass: the filter's own decisions still hold.
        expect((await curl(["https://www.google.com/"])).status).to.equal(418);
      } finally {
        await allow.stop();
      }
    });

    it("an upstream with an unknown CA: 502 when verifying, 200 with --insecure-upstream", async () => {
      const dir = configMap({ "filter.ts": GOOD });
      const verifying = await start(dir);
      try {
        const r = await curl(["https://untrusted.example/"]);
        expect(r.status).to.equal(502);
        expect(r.body).to.match(/^tproxy: upstream certificate of untrusted\.example:443 is not trusted/);
      } finally {
        await verifying.stop();
      }
      const insecure = await start(dir, ["--insecure-upstream"]);
      try {
        expect(insecure.lines.some((l) => /WARN --insecure-upstream: upstream certificates are NOT verified/.test(l))).to.equal(true);
        expect(await curl(["https://untrusted.example/"])).to.include({ status: 200, body: "untrusted.example GET /\n" });
      } finally {
        await insecure.stop();
      }
    });
  });

  it("serves /metrics, /healthz and /readyz on the node's loopback only; --metrics-address 0.0.0.0 opens them (control)", async () => {
    const dir = configMap({ "filter.ts": GOOD });
    const admin = async () => (await world.pod.run("curl", ["-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", `http://${NODE_POD_SIDE}:${METRICS_PORT}/metrics`])).stdout;
    const closedProxy = await start(dir);
    try {
      expect((await readyz(world)).status, "the kubelet's probe (host 127.0.0.1) is answered").to.equal(200);
      expect(await admin(), "a pod cannot read the metrics").to.equal("000");
    } finally {
      await closedProxy.stop();
    }
    const open = await start(dir, ["--metrics-address", "0.0.0.0"]);
    try {
      expect(await admin()).to.equal("200");
    } finally {
      await open.stop();
    }
  });

  it("answers /readyz 503 while draining on SIGTERM, and the request in flight still completes", async () => {
    const proxy = await start(configMap({ "filter.ts": GOOD }));
    expect((await readyz(world)).status).to.equal(200);
    let done = false;
    const slow = curl(["https://storage.googleapis.com/slow/3000"]).finally(() => { done = true; });
    // In flight: the proxy has judged it and opened a connection to the upstream (seen in the kernel there;
    // this proxy is new, so it holds no kept-alive connection from before).
    await waitFor("the slow request to reach the upstream", async () => (await world.net.must("ss", ["-Htn", "state", "established", `( src ${STORAGE_IP}:443 )`])).trim() !== "");
    const exit = proxy.stop("SIGTERM");
    await waitFor("/readyz to say draining", async () => (await readyz(world)).status === 503);
    expect(done, "the slow request finished before /readyz said draining").to.equal(false);
    expect(await readyz(world)).to.deep.equal({ status: 503, body: "not ready: draining\n" });
    expect(await slow).to.include({ status: 200, body: "storage.googleapis.com slow 3000\n" });
    expect(await exit).to.equal(0);
  });

  describe("metrics named in the README", () => {
    let proxy: Proc;
    let dir: string;
    before(async () => {
      dir = configMap({ "filter.ts": GOOD });
      proxy = await start(dir, ["--filter-timeout", "300"]);
    });
    after(async () => {
      await proxy?.stop();
    });

    it("counts requests and their durations by decision and status", async () => {
      const before = await metricsOf(world);
      await curl(["https://www.google.com/"]);
      await curl(["https://storage.googleapis.com/a"]);
      await curl(["http://storage.googleapis.com/b"]);
      const after = await metricsOf(world);
      const d = (name: string, labels: Record<string, string>) => metric(after, name, labels) - metric(before, name, labels);
      expect(d("tproxy_requests_total", { decision: "denied", status: "418" })).to.equal(1);
      expect(d("tproxy_requests_total", { decision: "allowed", status: "200" })).to.equal(2);
      expect(d("tproxy_request_duration_seconds_count", { decision: "denied" })).to.equal(1);
      expect(d("tproxy_request_duration_seconds_count", { decision: "allowed" })).to.equal(2);
      expect(d("tproxy_request_duration_seconds_sum", { decision: "allowed" })).to.be.above(0);
    });

    it("shows open connections by mode while they are open", async () => {
      const open = (text: string, mode: string) => metric(text, "tproxy_open_connections", { mode });
      expect(open(await metricsOf(world), "transparent")).to.equal(0);
      const t = curl(["https://storage.googleapis.com/slow/1500"]);
      await waitFor("one open transparent connection", async () => open(await metricsOf(world), "transparent") === 1);
      await t;
      await waitFor("no open transparent connection", async () => open(await metricsOf(world), "transparent") === 0);
      const s = proxied("https://storage.googleapis.com/slow/1500");
      await waitFor("one open standard connection", async () => open(await metricsOf(world), "standard") === 1);
      await s;
      await waitFor("no open standard connection", async () => open(await metricsOf(world), "standard") === 0);
    });

    it("counts leaf certificates minted, found in the cache, and held", async () => {
      const before = await metricsOf(world);
      await curl(["https://untrusted.example/"]); // a name this proxy has not served yet
      const middle = await metricsOf(world);
      await curl(["https://untrusted.example/again"]);
      const after = await metricsOf(world);
      const d = (a: string, b: string, name: string, labels: Record<string, string> = {}) => metric(b, name, labels) - metric(a, name, labels);
      expect(d(before, middle, "tproxy_certificate_cache_lookups_total", { result: "mint" })).to.equal(1);
      expect(d(before, middle, "tproxy_certificate_cache_entries")).to.equal(1);
      expect(d(middle, after, "tproxy_certificate_cache_lookups_total", { result: "hit" })).to.equal(1);
      expect(d(middle, after, "tproxy_certificate_cache_lookups_total", { result: "mint" })).to.equal(0);
      expect(d(middle, after, "tproxy_certificate_cache_entries")).to.equal(0);
    });

    it("counts hook failures by kind and replaced serving threads", async () => {
      const before = await metricsOf(world);
      await curl(["https://storage.googleapis.com/throw"]);
      await curl(["https://storage.googleapis.com/overrun"]);
      // A replaced thread's counters are kept as it last reported them (a scrape, or its push every second).
      await waitFor("the thread to report both failures", async () => metric(await metricsOf(world), "tproxy_filter_errors_total") - metric(before, "tproxy_filter_errors_total") === 2);
      await curl(["https://storage.googleapis.com/loop"]);
      // The stuck thread is replaced once its hook ran past twice its budget.
      await waitFor("the stuck thread's replacement", async () => metric(await metricsOf(world), "tproxy_worker_restarts_total") > metric(before, "tproxy_worker_restarts_total"));
      await waitFor("/readyz 200 with the new thread", async () => (await readyz(world)).status === 200);
      const after = await metricsOf(world);
      const d = (name: string, labels: Record<string, string> = {}) => metric(after, name, labels) - metric(before, name, labels);
      expect(d("tproxy_filter_errors_total", { kind: "throw" })).to.equal(1);
      expect(d("tproxy_filter_errors_total", { kind: "timeout" })).to.equal(1);
      expect(d("tproxy_worker_restarts_total", { reason: "hook-stuck" })).to.equal(1);
      expect(d("tproxy_requests_total", { decision: "denied", status: "403" })).to.equal(2);
    });

    it("counts connections closed for their protocol or a failed handshake", async () => {
      const before = await metricsOf(world);
      const untrusting = await world.curl(["https://storage.googleapis.com/"]); // the pod does not trust the proxy's CA
      expect(untrusting.code).to.equal(60);
      await world.pod.run(process.execPath, ["-e", `const s = require("net").connect(443, "storage.googleapis.com", () => s.end("\\x01\\x02\\x03 garbage")); s.resume(); s.on("close", () => process.exit(0));`]);
      const after = await metricsOf(world);
      const d = (labels: Record<string, string>) => metric(after, "tproxy_rejected_connections_total", labels) - metric(before, "tproxy_rejected_connections_total", labels);
      expect(d({ reason: "tls-handshake" })).to.equal(1);
      expect(d({ reason: "unknown-protocol" })).to.equal(1);
    });

    it("counts reloads by result and names the filter in force by hash", async () => {
      const before = await metricsOf(world);
      expect(metric(before, "tproxy_filter_info", { hash: sourceHash(GOOD) })).to.equal(1);
      const next = `${GOOD}\n// next version\n`;
      let from = proxy.lines.length;
      writeConfigMap(dir, { "filter.ts": next });
      await lineAfter(proxy, from, /filter loaded/, 5000);
      from = proxy.lines.length;
      writeConfigMap(dir, { "filter.ts": "export default {" });
      await lineAfter(proxy, from, /filter not loaded/, 5000);
      const after = await metricsOf(world);
      const d = (labels: Record<string, string>) => metric(after, "tproxy_filter_reloads_total", labels) - metric(before, "tproxy_filter_reloads_total", labels);
      expect(d({ result: "success" })).to.equal(1);
      expect(d({ result: "error" })).to.equal(1);
      expect(metric(after, "tproxy_filter_info", { hash: sourceHash(next) })).to.equal(1);
      expect(metric(after, "tproxy_filter_info", { hash: sourceHash(GOOD) })).to.equal(0);
      expect(metric(after, "tproxy_filter_info")).to.equal(1);
    });

    it("exposes the process metrics", async () => {
      const text = await metricsOf(world);
      for (const name of ["tproxy_process_cpu_seconds_total", "tproxy_process_resident_memory_bytes", "tproxy_nodejs_eventloop_lag_seconds", "tproxy_nodejs_heap_size_used_bytes"]) {
        expect(hasMetric(text, name), name).to.equal(true);
      }
      expect(metric(text, "tproxy_process_resident_memory_bytes")).to.be.above(0);
    });
  });

  describe("standard mode: CONNECT only to allowed ports", () => {
    it("refuses a tunnel to another port before it is established (403, logged); port 443 and --allow-port ports are tunnelled", async () => {
      const proxy = await start(configMap({ "filter.ts": GOOD }));
      try {
        const before = proxy.lines.length;
        const refused = await curl(["-p", "-x", `http://${NODE_POD_SIDE}:1080`, "https://storage.googleapis.com:8443/x"]);
        expect(refused.code, refused.stderr).to.equal(56);
        expect(refused.stderr).to.match(/CONNECT tunnel failed, response 403/);
        await lineAfter(proxy, before, /CONNECT refused: port 8443 is not an allowed port \(80, 443; see --allow-port\)/);
        // Control: the same tunnel to 443 is established and the request inside it judged.
        const tunnelled = await curl(["-p", "-x", `http://${NODE_POD_SIDE}:1080`, "https://storage.googleapis.com/x"]);
        expect(tunnelled).to.include({ status: 200, body: "storage.googleapis.com GET /x\n" });
      } finally {
        await proxy.stop();
      }
      const opened = await start(configMap({ "filter.ts": GOOD }), ["--allow-port", "443,8443"]);
      try {
        // With 8443 allowed the tunnel is established (200); nothing listens there upstream, so the request inside fails on its own.
        const r = await curl(["-v", "-p", "-x", `http://${NODE_POD_SIDE}:1080`, "https://storage.googleapis.com:8443/x"]);
        expect(r.stderr).to.match(/HTTP\/1\.1 200 Connection Established/);
        expect(r.stderr).to.not.match(/CONNECT tunnel failed/);
      } finally {
        await opened.stop();
      }
    });
  });
});
