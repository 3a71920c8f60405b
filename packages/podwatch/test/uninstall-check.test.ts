// `tproxy-podwatch uninstall-check`, the chart's pre-delete hook, against the Kubernetes API stand-in
// through the real client: exit 1 naming every locked pod still there (by annotation or by the lock's
// init container, finished ones aside), exit 0 once there are none.
import { expect } from "chai";
import { fileURLToPath } from "node:url";
import { KubeApiStandIn } from "../../../test/support/kube-api-stand-in.ts";
import { run } from "../../../test/support/netns.ts";

const CLI = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const ON = { "initializer.kubernetes.io/tproxy": "true" };

describe("tproxy-podwatch uninstall-check (Kubernetes API stand-in)", function () {
  this.timeout(30_000);
  let api: KubeApiStandIn;

  before(async () => {
    api = await KubeApiStandIn.start();
  });
  after(async () => {
    await api?.close();
  });

  const check = (args: string[] = []) => run(process.execPath, [CLI, "uninstall-check", ...args], { env: { ...process.env, KUBECONFIG: api.kubeconfigPath } });

  it("refuses while locked pods exist, naming each and saying what to do; passes once they are gone", async () => {
    api.createPod({ name: "web", namespace: "shop", nodeName: "node-a", annotations: ON, podIP: "10.244.0.2" });
    api.createPod({ name: "job", namespace: "batch", nodeName: "node-b", initContainers: ["tproxy"], podIP: "10.244.0.3" });
    api.createPod({ name: "plain", namespace: "shop", nodeName: "node-a", podIP: "10.244.0.4" });
    api.createPod({ name: "finished", namespace: "shop", nodeName: "node-a", annotations: ON, phase: "Succeeded" });
    api.createPod({ name: "off", namespace: "shop", nodeName: "node-a", annotations: { "initializer.kubernetes.io/tproxy": "false" } });

    const refused = await check();
    expect(refused.code, refused.stderr).to.equal(1);
    expect(refused.stderr).to.include("uninstall refused: 2 locked pod(s) still exist: batch/job, shop/web.");
    expect(refused.stderr).to.include("Delete these pods").and.include("helm uninstall --no-hooks");

    // Scoped like podwatch (--namespace): only what it watches counts.
    const scoped = await check(["--namespace", "shop"]);
    expect(scoped.code).to.equal(1);
    expect(scoped.stderr).to.include("1 locked pod(s) still exist: shop/web.");

    api.deletePod("shop", "web", { gracePeriodSeconds: 0 });
    api.deletePod("batch", "job", { gracePeriodSeconds: 0 });
    const passed = await check();
    expect(passed.code, passed.stderr).to.equal(0);
    expect(passed.stdout).to.include("no locked pods");
  });

  it("fails (exit 1, the API's error) when it cannot list pods: an uninstall is not let through on a guess", async () => {
    await api.stop();
    try {
      const r = await check();
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/^tproxy-podwatch: /);
    } finally {
      await api.restart();
    }
  });
});
