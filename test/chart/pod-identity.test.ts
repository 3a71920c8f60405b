// The chart's share of flow.client.pod: one in-memory volume that podwatch writes this node's pods to
// and the proxy reads (read-only), each container told the same file; the API token stays podwatch's.
import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { flagValue, makeTestCa, one, template, validateObject } from "../support/helm.ts";

interface Mount { name: string; mountPath: string; readOnly?: boolean }
interface Container { name: string; args?: string[]; volumeMounts?: Mount[] }
interface Volume { name: string; emptyDir?: { medium?: string; sizeLimit?: string }; projected?: unknown }

describe("helm chart charts/tproxy: the pod identity volume", function () {
  this.timeout(120_000);
  let tmp: string;
  let spec: { containers: Container[]; volumes: Volume[] };

  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), "tproxy-chart-identity-"));
    const ca = await makeTestCa(tmp, "identity test CA");
    const ds = one(await template({ set: { "ca.cert": ca.cert, "ca.key": ca.key } }), "DaemonSet");
    await validateObject(ds);
    spec = (ds["spec"] as { template: { spec: typeof spec } }).template.spec;
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  const container = (name: string): Container => spec.containers.find((c) => c.name === name) ?? expect.fail(`no container ${name}`);

  it("shares an in-memory emptyDir: podwatch writes it, the proxy mounts it read-only", () => {
    const volume = spec.volumes.find((v) => v.name === "pod-identity") ?? expect.fail("no pod-identity volume");
    expect(volume.emptyDir).to.deep.equal({ medium: "Memory", sizeLimit: "8Mi" });
    expect(container("podwatch").volumeMounts?.find((m) => m.name === "pod-identity")).to.deep.equal({ name: "pod-identity", mountPath: "/run/tproxy" });
    expect(container("tproxy").volumeMounts?.find((m) => m.name === "pod-identity")).to.deep.equal({ name: "pod-identity", mountPath: "/run/tproxy", readOnly: true });
  });

  it("tells both containers the same file in it", () => {
    expect(flagValue(container("podwatch").args ?? [], "--pod-identity-file")).to.equal("/run/tproxy/pods.json");
    expect(flagValue(container("tproxy").args ?? [], "--pod-identity-file")).to.equal("/run/tproxy/pods.json");
  });

  it("still gives the API token to podwatch alone: the proxy learns pods from the file, not from the API", () => {
    const token = spec.volumes.find((v) => v.projected !== undefined) ?? expect.fail("no projected token volume");
    expect((container("tproxy").volumeMounts ?? []).map((m) => m.name)).not.to.include(token.name);
    expect((container("podwatch").volumeMounts ?? []).map((m) => m.name)).to.include(token.name);
  });
});
