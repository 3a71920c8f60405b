// flow.client.pod on the proxy's side: the file podwatch writes, parsed; lookups that fail closed when
// the map is too old; the supervisor's reader; and what a filter gets (a frozen copy).
import { expect } from "chai";
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { parseRunConfig } from "../src/config.ts";
import { compileFilter } from "../src/filter/compile.ts";
import { FilterHost } from "../src/filter/host.ts";
import { PodDirectory, PodIdentitySource, parseSnapshot, type PodSnapshot } from "../src/identity/pods.ts";
import { flow, filterHostFixture } from "./helpers.ts";

const WEB = { namespace: "payments", name: "web", uid: "u1", labels: { app: "web" }, annotations: { a: "b" }, serviceAccount: "web-sa", node: "node-a" };

function file(generatedAt: number, pods: Record<string, unknown> = { "10.244.0.5": WEB, "fd00::5": WEB }): string {
  return JSON.stringify({ version: 1, node: "node-a", generatedAt, pods });
}

describe("pod identity (proxy side)", function () {
  this.timeout(10_000);

  it("takes --pod-identity-file as an absolute path, and is off without it", () => {
    const base = { caCert: "c", caKey: "k", filter: "f.ts" };
    expect(parseRunConfig({ ...base, podIdentityFile: "/run/tproxy/pods.json" }).podIdentityFile).to.equal("/run/tproxy/pods.json");
    expect(parseRunConfig({ ...base, podIdentityFile: "pods.json" }).podIdentityFile).to.equal(join(process.cwd(), "pods.json"));
    expect(parseRunConfig({ ...base, podIdentityFile: "" })).not.to.have.property("podIdentityFile");
    expect(parseRunConfig(base)).not.to.have.property("podIdentityFile");
  });

  it("parses podwatch's file and names what is wrong with a broken one", () => {
    const s = parseSnapshot(file(5));
    expect(s.generatedAt).to.equal(5);
    expect(s.pods["fd00::5"]).to.deep.equal(WEB);
    expect(() => parseSnapshot("{")).to.throw(SyntaxError);
    expect(() => parseSnapshot(JSON.stringify({ version: 2, generatedAt: 1, node: "n", pods: {} }))).to.throw("format version 2, expected 1");
    expect(() => parseSnapshot(JSON.stringify({ version: 1, node: "n", pods: {} }))).to.throw("generatedAt is not a number");
    expect(() => parseSnapshot(file(1, { "10.0.0.1": { name: "x" } }))).to.throw('pods["10.0.0.1"] has no namespace and name');
  });

  it("looks addresses up (IPv4-mapped too), and names nobody once the map is older than its limit", () => {
    let now = 1_000_000;
    const d = new PodDirectory({ maxAgeMs: 30_000, now: () => now });
    expect(d.lookup("10.244.0.5"), "no map yet").to.equal(undefined);
    d.set(parseSnapshot(file(now)));
    expect(d.lookup("10.244.0.5")?.name).to.equal("web");
    expect(d.lookup("::ffff:10.244.0.5")?.name).to.equal("web");
    expect(d.lookup("FD00::5")?.name).to.equal("web");
    expect(d.lookup("10.244.0.6"), "not a pod of this node").to.equal(undefined);
    now += 30_000;
    expect(d.lookup("10.244.0.5")?.name).to.equal("web");
    now += 1;
    expect(d.lookup("10.244.0.5"), "stale map: fail closed").to.equal(undefined);
    d.set(undefined);
    now -= 30_000;
    expect(d.lookup("10.244.0.5"), "map taken away").to.equal(undefined);
  });

  describe("the supervisor's reader", () => {
    let dir: string;
    let path: string;
    let source: PodIdentitySource | undefined;
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), "tproxy-pods-"));
      path = join(dir, "pods.json");
    });
    afterEach(async () => {
      await source?.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const put = (text: string): void => {
      writeFileSync(`${path}.tmp`, text);
      renameSync(`${path}.tmp`, path);
    };
    const until = async (what: string, ok: () => boolean): Promise<void> => {
      const end = Date.now() + 5000;
      while (!ok()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };

    it("hands on each new map, none when the file goes or breaks, and reports the age and count", async () => {
      const seen: Array<PodSnapshot | undefined> = [];
      put(file(Date.now()));
      source = new PodIdentitySource(path, pino({ level: "silent" }), (s) => seen.push(s));
      await source.start();
      expect(seen.map((s) => Object.keys(s?.pods ?? {}).length)).to.deep.equal([2]);
      const known = (): number => source!.metrics().find((m) => m.name === "tproxy_pod_identity_addresses")?.values[0]?.value ?? -2;
      expect(known()).to.equal(2);

      put(file(Date.now(), { "10.244.0.7": { ...WEB, name: "api" } }));
      await until("the new map", () => seen.at(-1)?.pods["10.244.0.7"]?.name === "api");

      put("{ half");
      await until("no map for a broken file", () => seen.length === 3 && seen[2] === undefined);
      expect(known()).to.equal(0);

      put(file(Date.now()));
      await until("the map again", () => seen.length === 4 && seen[3] !== undefined);
      rmSync(path);
      await until("no map once the file is gone", () => seen.length === 5 && seen[4] === undefined);
      const age = source.metrics().find((m) => m.name === "tproxy_pod_identity_age_seconds")?.values[0]?.value;
      expect(age).to.equal(-1);
    });

    it("counts a map older than the limit as none (the threads check the age themselves too)", async () => {
      put(file(Date.now() - 60_000));
      source = new PodIdentitySource(path, pino({ level: "silent" }), () => undefined);
      await source.start();
      const m = source.metrics();
      expect(m.find((x) => x.name === "tproxy_pod_identity_addresses")?.values[0]?.value).to.equal(0);
      expect(m.find((x) => x.name === "tproxy_pod_identity_age_seconds")?.values[0]?.value).to.be.within(59, 70);
    });
  });

  describe("in a filter", () => {
    const fixture = filterHostFixture(() => ({ timeoutMs: 500 }));
    let dir: string;
    let host: FilterHost;
    beforeEach(() => {
      ({ dir, host } = fixture);
    });

    it("sees the pod, frozen (labels and annotations too), and undefined for an unknown address", async () => {
      writeFileSync(
        join(dir, "filter.ts"),
        `import type { Filter } from "@tproxy/tproxy/filter";
         export default {
           request(flow) {
             const pod = flow.client.pod;
             if (!pod) { flow.respond(403, "unknown"); return; }
             // Sloppy mode ignores writes to frozen objects, strict mode throws: either way nothing changes.
             for (const change of [() => { (pod as any).namespace = "x"; }, () => { (pod.labels as any).app = "evil"; }, () => { (pod.annotations as any).z = "1"; }]) {
               try { change(); } catch { /* frozen */ }
             }
             const tries = [pod.namespace, pod.labels.app, pod.annotations.z ?? null];
             flow.respond(200, JSON.stringify({ ns: pod.namespace, app: pod.labels.app, sa: pod.serviceAccount, node: pod.node, frozen: Object.isFrozen(pod) && Object.isFrozen(pod.labels), tries }));
           },
         } satisfies Filter;`,
      );
      const v = await host.load(await compileFilter(join(dir, "filter.ts")));
      const data = flow("/");
      const labels = { app: "web" };
      data.client = { address: "10.244.0.5", port: 1234, pod: { ...WEB, labels } };
      const known = await host.run(v, "request", data);
      expect(JSON.parse(String(known.answer?.body))).to.deep.equal({ ns: "payments", app: "web", sa: "web-sa", node: "node-a", frozen: true, tries: ["payments", "web", null] });
      expect(labels.app, "the proxy's copy is untouched").to.equal("web");
      // The next request with the same pod sees it as it was.
      const again = await host.run(v, "request", data);
      expect(JSON.parse(String(again.answer?.body)).app).to.equal("web");

      const unknown = flow("/");
      const res = await host.run(v, "request", unknown);
      expect(res.answer?.status).to.equal(403);
    });
  });
});
