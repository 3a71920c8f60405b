// Audit mode and the filter's own log lines with the real proxy: a pod in a network namespace whose port
// 80/443 traffic the node REDIRECTs to `tproxy run`, upstream servers in an "internet" namespace, curl.
import { expect } from "chai";
import { join } from "node:path";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { waitFor } from "../../../test/support/netns.ts";
import { ProxyWorld, type Proc } from "../../../test/support/world.ts";
import { lineAfter, metric, metricsOf, sourceHash } from "./helpers.ts";

const FILTER = `
import type { Filter } from "@tproxy/tproxy/filter";
console.log("filter loaded");
export default {
  request(flow) {
    console.log("judging", flow.request.path);
    if (flow.request.path.startsWith("/trial")) flow.audit("trial rule");
    if (flow.request.host !== "storage.googleapis.com") flow.respond(418, "Access Denied by Administrator");
  },
  response(flow) {
    if (flow.request.path.startsWith("/trial-response")) flow.respond(451, "replaced");
  },
} satisfies Filter;
`;

interface Json {
  [k: string]: unknown;
}

describe("filter audit mode and filter log lines (network namespaces, real proxy)", function () {
  this.timeout(60_000);
  let world: ProxyWorld;
  let ca: { cert: string; key: string };
  let filterPath: string;

  before(async () => {
    world = await ProxyWorld.create("tpa");
    ca = await world.makeProxyCa();
    const dir = join(world.dir, "filter");
    writeConfigMap(dir, { "filter.ts": FILTER });
    filterPath = join(dir, "filter.ts");
    await world.redirectPod();
  });
  after(async () => {
    await world?.close();
  });

  const start = (extra: string[]) =>
    world.startProxy(["--ca-cert", ca.cert, "--ca-key", ca.key, "--filter", filterPath, "--upstream-ca", world.publicCa.certPath, "--workers", "1", ...extra]);
  const curl = async (url: string) => {
    const r = await world.curl(["--cacert", ca.cert, "-w", "\n%{http_code}", url]);
    const i = r.stdout.lastIndexOf("\n");
    return { body: r.stdout.slice(0, i), status: Number(r.stdout.slice(i + 1)) };
  };
  const records = (proc: Proc): Json[] => proc.lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Json);
  const requestFor = async (proc: Proc, url: string): Promise<Json> => {
    let found: Json | undefined;
    await waitFor(`the request line of ${url}`, () => (found = records(proc).find((r) => r.kind === "request" && r.url === url)) !== undefined);
    return found!;
  };

  describe("flow.audit, and console lines as JSON proxy log lines (--log-format json)", () => {
    let proxy: Proc;
    before(async () => {
      proxy = await start(["--log-format", "json"]);
    });
    after(async () => {
      await proxy?.stop("SIGKILL");
    });

    it("denies without flow.audit (control): 418, logged denied", async () => {
      const r = await curl("https://www.google.com/plain");
      expect(r.status).to.equal(418);
      const line = await requestFor(proxy, "https://www.google.com/plain");
      expect(line).to.include({ decision: "denied", reason: "filter", status: 418 });
    });

    it("lets a request the filter answers under flow.audit go upstream, logged would-deny with the reason", async () => {
      const before = metric(await metricsOf(world), "tproxy_requests_total", { decision: "would-deny" });
      const r = await curl("https://www.google.com/trial");
      expect(r.status).to.equal(200);
      expect(r.body).to.equal("www.google.com GET /trial\n");
      const line = await requestFor(proxy, "https://www.google.com/trial");
      expect(line).to.include({ decision: "would-deny", reason: "audit: trial rule; would answer 418", status: 200 });
      await waitFor("the would-deny count", async () => metric(await metricsOf(world), "tproxy_requests_total", { decision: "would-deny", status: "200" }) === before + 1, 5000);
    });

    it("applies the request hook's flow.audit to the response hook's answer too", async () => {
      const r = await curl("https://storage.googleapis.com/trial-response");
      expect(r.status).to.equal(200);
      const line = await requestFor(proxy, "https://storage.googleapis.com/trial-response");
      expect(line).to.include({ decision: "would-deny", reason: "audit: trial rule; would answer 451" });
    });

    it("writes the filter's console.log as a JSON line with the request's id and the filter's hash; top-level lines carry the hash only", async () => {
      await curl("https://www.google.com/logged");
      const request = await requestFor(proxy, "https://www.google.com/logged");
      const hash = sourceHash(FILTER);
      const own = records(proxy).find((r) => r.msg === "judging /logged");
      expect(own, proxy.output).to.include({ level: 30, source: "filter", id: request.id, filter: hash });
      const top = records(proxy).find((r) => r.msg === "filter loaded");
      expect(top, proxy.output).to.include({ source: "filter", filter: hash });
      expect(top).to.not.have.property("id");
    });
  });

  describe("tproxy run --filter-audit (text log)", () => {
    let proxy: Proc;
    before(async () => {
      proxy = await start(["--filter-audit"]);
    });
    after(async () => {
      await proxy?.stop("SIGKILL");
    });

    it("passes what the filter answers and logs it would-deny (filter-audit)", async () => {
      const from = proxy.lines.length;
      const r = await curl("https://www.google.com/");
      expect(r.status).to.equal(200);
      expect(r.body).to.equal("www.google.com GET /\n");
      await lineAfter(proxy, from, / GET https:\/\/www\.google\.com\/ -> 200 \d+b [\d.]+ms would-deny \(audit: filter-audit; would answer 418\)( h2)?$/);
      const logged = await lineAfter(proxy, from, / INFO judging \/ /);
      expect(logged).to.match(/ INFO judging \/ source=filter id=\S+ filter=[0-9a-f]{16} thread=0$/);
      expect(proxy.output).to.match(/--filter-audit: the filter's answers are only logged/);
    });
  });
});
