// The real `tproxy-podwatch` binary with --pod-identity-file, in a network namespace standing for the
// node, against the Kubernetes API stand-in through the real client: pods created, labelled and deleted
// through the API show in the file the proxy reads (flow.client.pod). Needs root (iptables in the netns).
import { expect } from "chai";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { KubeApiStandIn } from "../../../test/support/kube-api-stand-in.ts";
import { Netns, must, removeStale, uniqueName, waitFor } from "../../../test/support/netns.ts";
import type { IdentitySnapshot } from "../src/identity.ts";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = `${ROOT}packages/podwatch/dist/cli.js`;

describe("tproxy-podwatch --pod-identity-file (integration)", function () {
  this.timeout(60_000);
  let node: Netns;
  let api: KubeApiStandIn;
  let child: ChildProcess;
  let dir: string;
  let file: string;
  let output = "";

  const read = (): IdentitySnapshot | undefined => (existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as IdentitySnapshot) : undefined);
  /** The file as "ip namespace/name label=value,..." lines. */
  const lines = (): string[] =>
    Object.entries(read()?.pods ?? {}).map(([ip, p]) => `${ip} ${p.namespace}/${p.name} ${Object.entries(p.labels).map(([k, v]) => `${k}=${v}`).join(",")}`);
  const waitLines = (what: string, want: string[]) =>
    waitFor(what, () => JSON.stringify(lines()) === JSON.stringify(want), 5_000, 20).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; the file has ${JSON.stringify(lines())}`);
    });

  before(async () => {
    await must(`${ROOT}node_modules/.bin/tsc`, ["--build", `${ROOT}packages/podwatch`], { timeoutMs: 120_000 });
    await removeStale("tpi");
    node = await Netns.create(uniqueName("tpi"));
    api = await KubeApiStandIn.start();
    const exposure = await api.exposeIn(node);
    dir = mkdtempSync(join(tmpdir(), "tpi-"));
    file = join(dir, "pods.json");
    // A pod that exists before podwatch starts comes with the initial list.
    api.createPod({ name: "early", namespace: "payments", nodeName: "node-a", labels: { app: "early" }, podIP: "10.244.0.2", phase: "Running" });
    child = node.spawn(process.execPath, [CLI, "--node-name", "node-a", "--resync", "10m", "--metrics-port", "0", "--pod-identity-file", file], {
      env: { ...process.env, KUBECONFIG: exposure.kubeconfigPath },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
  });

  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await once(child, "exit");
    }
    await api?.close();
    await node?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("writes the pods of the initial list, with this node's name and the time", async () => {
    await waitLines("the initial pod in the file", ["10.244.0.2 payments/early app=early"]);
    const s = read()!;
    expect(s.version).to.equal(1);
    expect(s.node).to.equal("node-a");
    expect(Math.abs(Date.now() - s.generatedAt)).to.be.below(10_000);
    expect(s.pods["10.244.0.2"]).to.include({ namespace: "payments", name: "early", serviceAccount: "default", node: "node-a" });
  });

  it("follows pods created, given an IP, relabelled and deleted through the API; leaves out other nodes' and host-network pods", async () => {
    api.createPod({ name: "web", namespace: "shop", nodeName: "node-a", labels: { app: "web" } });
    api.createPod({ name: "far", namespace: "shop", nodeName: "node-b", podIP: "10.244.1.5", phase: "Running" });
    api.createPod({ name: "hostnet", namespace: "kube-system", nodeName: "node-a", hostNetwork: true, podIP: "10.0.0.1", phase: "Running" });
    api.setPodIP("shop", "web", ["10.244.0.10", "fd00::a"], "Pending");
    await waitLines("web's addresses", ["10.244.0.10 shop/web app=web", "10.244.0.2 payments/early app=early", "fd00::a shop/web app=web"]);

    api.updatePod("shop", "web", { metadata: { labels: { app: "web", tier: "pay" } } });
    await waitLines("web's new label", ["10.244.0.10 shop/web app=web,tier=pay", "10.244.0.2 payments/early app=early", "fd00::a shop/web app=web,tier=pay"]);

    // A terminating pod still runs and sends: it keeps its identity until it is gone.
    api.deletePod("shop", "web");
    await waitFor("web to be terminating", () => typeof api.getPod("shop", "web")?.metadata.deletionTimestamp === "string", 2_000);
    await new Promise((r) => setTimeout(r, 500));
    expect(lines()).to.include("10.244.0.10 shop/web app=web,tier=pay");
    api.finishDeletion("shop", "web");
    await waitLines("web to go", ["10.244.0.2 payments/early app=early"]);

    // A pod that finished frees its address at once, before it is deleted.
    api.updatePod("payments", "early", { status: { phase: "Succeeded" } });
    await waitLines("the finished pod to go", []);
  });

  it("deletes the file when it stops: nothing keeps it true any more", async () => {
    expect(existsSync(file)).to.equal(true);
    child.kill("SIGTERM");
    await once(child, "exit");
    expect(existsSync(file), output).to.equal(false);
  });
});
