// filter.audit: the proxy gets --filter-audit only when it is on.
import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTestCa, one, template, type K8sObject } from "../support/helm.ts";

function proxyArgs(objs: K8sObject[]): string[] {
  const ds = one(objs, "DaemonSet") as unknown as { spec: { template: { spec: { containers: Array<{ name: string; args?: string[] }> } } } };
  return ds.spec.template.spec.containers.find((c) => c.name === "tproxy")!.args!;
}

describe("chart value filter.audit", function () {
  this.timeout(60_000);
  let tmp: string;
  let ca: { cert: string; key: string };
  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), "tproxy-chart-audit-"));
    ca = await makeTestCa(tmp, "chart audit test CA");
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it("passes --filter-audit to the proxy when true, and nothing by default", async () => {
    const withCa = { "ca.existingSecret": "tproxy-ca", "ca.cert": ca.cert };
    expect(proxyArgs(await template({ set: withCa }))).to.not.include("--filter-audit");
    expect(proxyArgs(await template({ set: { ...withCa, "filter.audit": true } }))).to.include("--filter-audit");
  });
});
