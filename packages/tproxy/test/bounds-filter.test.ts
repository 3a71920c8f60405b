// Overload never turns into "allow": a hook call's budget starts when its hook starts running in the
// filter thread; a call that waited too long in the queue never ran, so nothing judged its request,
// and it gets 503 even under --on-filter-error allow. A hook that itself runs past its budget keeps the
// error semantics (allow: passes; deny: 403). The cluster's restart back-off starts over after a
// worker ran a while.
import { expect } from "chai";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RestartBackoff, RESTART_RESET_MS } from "../src/cluster.ts";
import { FilterOverloadedError, FilterTimeoutError } from "../src/errors.ts";
import { compileFilter } from "../src/filter/compile.ts";
import { FilterHost } from "../src/filter/host.ts";
import type { FlowData } from "../src/filter/protocol.ts";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { ProxyWorld, type Proc } from "../../../test/support/world.ts";
import { metric, metricsOf } from "./helpers.ts";

// /busy/MS: a hook that keeps the filter thread busy for MS ms, then answers by itself.
// /sleep/MS: a hook that waits MS ms without holding the thread, then lets the request pass.
const FILTER = `
export default {
  async request(flow) {
    const busy = /^\\/busy\\/(\\d+)/.exec(flow.request.path);
    if (busy) {
      const end = Date.now() + Number(busy[1]);
      while (Date.now() < end) { /* the filter thread is busy */ }
      flow.respond(200, "judged");
      return;
    }
    const sleep = /^\\/sleep\\/(\\d+)/.exec(flow.request.path);
    if (sleep) await new Promise((r) => setTimeout(r, Number(sleep[1])));
  },
};
`;

const flow = (path: string): FlowData => ({
  id: "t",
  client: { address: "10.0.0.2", port: 1 },
  destination: undefined,
  sni: undefined,
  request: { method: "GET", scheme: "https", host: "example.com", port: 443, path, url: `https://example.com${path}`, headers: { host: "example.com" } },
});

type Outcome = "ran" | "overloaded" | "timeout" | "other";
const outcome = (r: PromiseSettledResult<unknown>): Outcome =>
  r.status === "fulfilled" ? "ran" : r.reason instanceof FilterOverloadedError ? "overloaded" : r.reason instanceof FilterTimeoutError ? "timeout" : "other";

describe("filter budget under load", function () {
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

    it("counts the budget from when a hook starts: calls queued behind others still run to the end", async () => {
      host = new FilterHost({ timeoutMs: 300, queueTimeoutMs: 5000 });
      const v = await load(host);
      // Each hook takes 150 ms of a 300 ms budget; the fourth waits ~450 ms before it starts.
      const results = await Promise.allSettled(Array.from({ length: 4 }, () => host!.run(v, "request", flow("/busy/150"))));
      expect(results.map(outcome)).to.deep.equal(["ran", "ran", "ran", "ran"]);
    });

    it("refuses calls that waited past the queue bound as overloaded, never as a timeout", async () => {
      host = new FilterHost({ timeoutMs: 400, queueTimeoutMs: 250 });
      const v = await load(host);
      const results = (await Promise.allSettled(Array.from({ length: 8 }, () => host!.run(v, "request", flow("/busy/100"))))).map(outcome);
      expect(results[0]).to.equal("ran");
      expect(results).to.include("overloaded");
      expect(results.filter((r) => r !== "ran" && r !== "overloaded")).to.deep.equal([]);
      // Once the queue is gone the filter judges again.
      expect(outcome((await Promise.allSettled([host.run(v, "request", flow("/busy/1"))]))[0]!)).to.equal("ran");
    });

    it("still times out a hook that itself runs past its budget", async () => {
      host = new FilterHost({ timeoutMs: 200, queueTimeoutMs: 5000 });
      const v = await load(host);
      const [slow, fine] = await Promise.allSettled([host.run(v, "request", flow("/sleep/2000")), host.run(v, "request", flow("/busy/1"))]);
      expect(outcome(slow)).to.equal("timeout");
      expect(outcome(fine)).to.equal("ran");
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
        "--workers", "1", "--on-filter-error", "allow", "--filter-timeout", "400", "--filter-queue-timeout", "300",
      ]);
      await world.redirectPod();
    });
    after(async () => {
      await world?.close();
    });

    const get = async (path: string): Promise<{ status: number; body: string }> => {
      const r = await world.curl(["--cacert", ca.cert, "-w", "\n%{http_code}", `https://storage.googleapis.com${path}`], 20);
      const i = r.stdout.lastIndexOf("\n");
      return { status: Number(r.stdout.slice(i + 1)), body: r.stdout.slice(0, i) };
    };

    it("answers requests whose hook never ran 503 (overloaded), never passing them upstream", async () => {
      // Twelve requests at once, each hook holding the thread 150 ms: some wait past the 300 ms queue bound.
      const results = await Promise.all(Array.from({ length: 12 }, (_, i) => get(`/busy/150?n=${i}`)));
      for (const r of results) {
        expect(r.body, "nothing reached the upstream").not.to.match(/^storage\.googleapis\.com /);
        expect([200, 503]).to.include(r.status);
        expect(r.body).to.equal(r.status === 200 ? "judged" : "tproxy: the filter is overloaded; request not judged, try again\n");
      }
      expect(results.filter((r) => r.status === 503), "some requests were refused as overloaded").not.to.be.empty;
      expect(results.filter((r) => r.status === 200), "the first were judged").not.to.be.empty;
      expect(metric(await metricsOf(world, 9090), "tproxy_filter_errors_total", { kind: "overloaded" })).to.equal(results.filter((r) => r.status === 503).length);
      expect(proxy.child.exitCode).to.equal(null);
    });

    it("lets a request pass whose hook itself ran past its budget (the error semantics of allow)", async () => {
      const r = await get("/sleep/1500");
      expect(r.status).to.equal(200);
      expect(r.body).to.equal("storage.googleapis.com GET /sleep/1500\n");
      expect(metric(await metricsOf(world, 9090), "tproxy_filter_errors_total", { kind: "timeout" })).to.equal(1);
    });
  });

  describe("cluster restart back-off", () => {
    it("doubles for crashes in a row and starts over after a worker ran a while", () => {
      const b = new RestartBackoff();
      const quick = [1, 2, 3, 4, 5, 6, 7, 8].map(() => b.next(1000));
      expect(quick).to.deep.equal([200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
      expect(b.next(RESTART_RESET_MS)).to.equal(200);
      expect(b.next(10)).to.equal(400);
    });
  });
});
