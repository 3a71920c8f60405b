// proxy.maxBodyBytes: the chart passes it to `tproxy run --max-body` as a plain integer, and refuses what
// the proxy would refuse.
import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { flagValue, helm, makeTestCa, one, parseManifests, renderArgs, type K8sObject } from "../support/helm.ts";

let tmp: string;
let ca: { cert: string; key: string };

function render(set: Record<string, unknown> = {}) {
  return helm(["template", ...renderArgs({ set: { "ca.cert": ca.cert, "ca.key": ca.key, ...set } })]);
}

function proxyArgs(objs: K8sObject[]): string[] {
  const spec = (one(objs, "DaemonSet")["spec"] as { template: { spec: { containers: { name: string; args?: string[] }[] } } }).template.spec;
  return spec.containers.find((c) => c.name === "tproxy")?.args ?? expect.fail("DaemonSet has no tproxy container");
}

describe("helm chart charts/tproxy: proxy.maxBodyBytes", function () {
  this.timeout(120_000);
  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), "tproxy-maxbody-"));
    ca = await makeTestCa(tmp, "max-body test CA");
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it("passes 1 MiB by default and a set value as a whole number (never in exponent form)", async () => {
    const byDefault = await render();
    expect(byDefault.code, byDefault.stderr).to.equal(0);
    expect(flagValue(proxyArgs(parseManifests(byDefault.stdout)), "--max-body")).to.equal("1048576");
    const set = await render({ "proxy.maxBodyBytes": 16777216 });
    expect(set.code, set.stderr).to.equal(0);
    expect(flagValue(proxyArgs(parseManifests(set.stdout)), "--max-body")).to.equal("16777216");
  });

  it("refuses 0, a fraction and more than 1 GiB", async () => {
    for (const bad of [0, 1.5, 1073741825, "1Mi"]) {
      const r = await render({ "proxy.maxBodyBytes": bad });
      expect(r.code, `proxy.maxBodyBytes=${JSON.stringify(bad)} rendered`).to.not.equal(0);
      expect(r.stderr).to.match(/maxBodyBytes/);
    }
  });
});
