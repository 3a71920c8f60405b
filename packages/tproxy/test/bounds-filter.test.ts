// A hook's budget on the serving thread. A hook that finishes past its budget is an error of the filter
// (--on-filter-error decides: deny 403, allow passes). A hook that never yields holds its thread, which
// only the supervisor can stop: the thread is replaced, its connections reset, and nothing is forwarded,
// whatever --on-filter-error says. The supervisor's restart back-off starts over after a thread ran a while.
import { expect } from "chai";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RestartBackoff, RESTART_RESET_MS } from "../src/supervisor.ts";
import { FilterTimeoutError } from "../src/errors.ts";
import { compileFilter } from "../src/filter/compile.ts";
import { FilterHost, HookWatch, clock } from "../src/filter/host.ts";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { METRICS_PORT, ProxyWorld, type Proc } from "../../../test/support/world.ts";
import { flow, lineAfter, metric, metricsOf } from "./helpers.ts";

// /busy/MS: a hook that holds its thread MS ms, then answers by itself.
// /sleep/MS: a hook that waits MS ms without holding the thread, then lets the request pass.
// /loop: a hook that never yields.
const FILTER = `
export default {
  async request(flow) {
    const busy = /^\\/busy\\/(\\d+)/.exec(flow.request.path);
    if (busy) {
      const end = Date.now() + Number(busy[1]);
      while (Date.now() < end) { /* the thread is busy */ }
      flow.respond(200, "judged");
      return;
    }
    if (flow.request.path === "/loop") for (;;) { /* never yields */ }
    if (flow.request.path === "/watch") { flow.respond(200, String(globalThis.process.tproxyWatch.deadline)); return; }
    const sleep = /^\\/sleep\\/(\\d+)/.exec(flow.request.path);
    if (sleep) await new Promise((r) => setTimeout(r, Number(sleep[1])));
  },
};
`;


type Outcome = "ran" | "timeout" | "other";
const outcome = (r: PromiseSettledResult<unknown>): Outcome =>
  r.status === "fulfilled" ? "ran" : r.reason instanceof FilterTimeoutError ? "timeout" : "other";

describe("filter budget on the serving thread", function () {
  this.timeout(60_000);

  describe("FilterHost", () => {
    let dir: string;
    let host: FilterHost | undefined;
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), "tpb-filter-"));
    });
    afterEach(async () => {
      await host?.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const load = async (h: FilterHost) => {
      writeFileSync(join(dir, "filter.ts"), FILTER);
      return h.load(await compileFilter(join(dir, "filter.ts")));
    };

    it("refuses a hook that finished past its budget, and runs one within it", async () => {
      host = new FilterHost({ timeoutMs: 100 });
      const v = await load(host);
      const results = await Promise.allSettled([host.run(v, "request", flow("/busy/150")), host.run(v, "request", flow("/busy/5"))]);
      expect(results.map(outcome)).to.deep.equal(["timeout", "ran"]);
    });

    it("times out an async hook that waits past its budget, without holding the thread", async () => {
      host = new FilterHost({ timeoutMs: 200 });
      const v = await load(host);
      const started = performance.now();
      const [slow, fine] = await Promise.allSettled([host.run(v, "request", flow("/sleep/2000")), host.run(v, "request", flow("/busy/1"))]);
      expect(outcome(slow)).to.equal("timeout");
      expect(outcome(fine)).to.equal("ran");
      expect(performance.now() - started).to.be.below(1500);
    });

    it("publishes the deadline of the hook running now for the watchdog, and clears it after", async () => {
      const watch = new HookWatch();
      (process as unknown as { tproxyWatch: HookWatch }).tproxyWatch = watch;
      try {
        host = new FilterHost({ timeoutMs: 100, watch });
        const v = await load(host);
        const before = clock();
        const seen = Number((await host.run(v, "request", flow("/watch"))).answer?.body);
        expect(seen).to.be.within(before + 100, clock() + 100);
        expect(watch.deadline).to.equal(0);
      } finally {
        delete (process as unknown as { tproxyWatch?: HookWatch }).tproxyWatch;
      }
    });
  });

  describe("through the proxy with --on-filter-error allow (network namespaces, iptables REDIRECT)", () => {
    let world: ProxyWorld;
    let ca: { cert: string; key: string };
    let proxy: Proc;
    before(async () => {
      world = await ProxyWorld.create("tpb");
      ca = await world.makeProxyCa();
      const filterDir = join(world.dir, "filter");
      writeConfigMap(filterDir, { "filter.ts": FILTER });
      proxy = await world.startProxy([
        "--ca-cert", ca.cert, "--ca-key", ca.key, "--filter", join(filterDir, "filter.ts"), "--upstream-ca", world.publicCa.certPath,
        "--workers", "1", "--on-filter-error", "allow", "--filter-timeout", "400",
      ]);
      await world.redirectPod();
    });
    after(async () => {
      await world?.close();
    });

    const get = async (path: string): Promise<{ code: number; status: number; body: string }> => {
      const r = await world.curl(["--cacert", ca.cert, "-w", "\n%{http_code}", `https://storage.googleapis.com${path}`], 20);
      const i = r.stdout.lastIndexOf("\n");
      return { code: r.code, status: Number(r.stdout.slice(i + 1)), body: r.stdout.slice(0, i) };
    };

    it("lets a request pass whose async hook ran past its budget (the error semantics of allow)", async () => {
      const r = await get("/sleep/1500");
      expect(r.status).to.equal(200);
      expect(r.body).to.equal("storage.googleapis.com GET /sleep/1500\n");
      expect(metric(await metricsOf(world, METRICS_PORT), "tproxy_filter_errors_total", { kind: "timeout" })).to.equal(1);
    });

    it("never lets through a request whose hook holds its thread: the thread is replaced, the connection reset", async () => {
      // Control: a hook that holds the thread briefly answers by itself.
      expect(await get("/busy/10")).to.include({ status: 200, body: "judged" });
      const from = proxy.lines.length;
      const r = await get("/loop");
      expect(r.status, "no answer at all, let alone the upstream's").to.equal(0);
      expect(r.body).not.to.match(/storage\.googleapis\.com GET \/loop/);
      await lineAfter(proxy, from, /serving thread replaced: filter code ran more than \d+ ms without yielding/);
      await lineAfter(proxy, from, /serving thread listening/);
      expect(await get("/busy/10")).to.include({ status: 200, body: "judged" });
      expect(metric(await metricsOf(world, METRICS_PORT), "tproxy_worker_restarts_total", { reason: "hook-stuck" })).to.equal(1);
      expect(proxy.child.exitCode).to.equal(null);
    });
  });

  describe("supervisor restart back-off", () => {
    it("doubles for deaths in a row and starts over after a thread ran a while", () => {
      const b = new RestartBackoff();
      const quick = [1, 2, 3, 4, 5, 6, 7, 8].map(() => b.next(1000));
      expect(quick).to.deep.equal([200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
      expect(b.next(RESTART_RESET_MS)).to.equal(200);
      expect(b.next(10)).to.equal(400);
    });
  });
});
