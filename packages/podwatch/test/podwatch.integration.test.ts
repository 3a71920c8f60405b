// The real `tproxy-podwatch` binary, run in a network namespace standing for the node, against the
// Kubernetes API stand-in through the real client. Rules are read back from the kernel. Needs root.
import { expect } from "chai";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { KubeApiStandIn, type Exposure } from "../../../test/support/kube-api-stand-in.ts";
import { Netns, must, removeStale, uniqueName, waitFor } from "../../../test/support/netns.ts";
import { parseNatSave, describeRule } from "../src/rules.ts";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = `${ROOT}packages/podwatch/dist/cli.js`;
const A = "initializer.kubernetes.io/tproxy";
const ON = { [A]: "true" };

interface Running {
  child: ChildProcess;
  logs: Array<Record<string, unknown>>;
  statusPort: number;
}

describe("tproxy-podwatch in a node namespace (integration)", function () {
  this.timeout(60_000);
  let node: Netns;
  let api: KubeApiStandIn;
  let exposure: Exposure;
  let pw: Running | undefined;

  async function startPodwatch(extraEnv: Record<string, string> = {}): Promise<Running> {
    const child = node.spawn(process.execPath, [CLI, "--node-name", "node-a", "--resync", "1s", "--metrics-port", "0"], {
      env: { ...process.env, KUBECONFIG: exposure.kubeconfigPath, TPROXY_LOG_LEVEL: "debug", ...extraEnv },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const logs: Array<Record<string, unknown>> = [];
    let buf = "";
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
    child.stdout?.on("data", (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          logs.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          logs.push({ msg: line });
        }
      }
    });
    await waitFor("podwatch to serve /healthz", () => logs.some((l) => l.msg === "serving /healthz and /metrics") || child.exitCode !== null, 15_000);
    if (child.exitCode !== null) throw new Error(`podwatch exited ${child.exitCode}: ${stderr}`);
    const statusPort = Number(logs.find((l) => l.msg === "serving /healthz and /metrics")?.port);
    return { child, logs, statusPort };
  }

  async function stopPodwatch(): Promise<void> {
    if (!pw) return;
    const { child } = pw;
    pw = undefined;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await once(child, "exit");
    }
  }

  /** Our chain's rules in the kernel as "ns/name ip" strings, per family. */
  async function rules(family: "ipv4" | "ipv6" = "ipv4"): Promise<string[]> {
    const text = await node.must(family === "ipv4" ? "iptables-save" : "ip6tables-save", ["-t", "nat"]);
    return parseNatSave(text).rules.map((r) => {
      const d = describeRule(r);
      return `${d.pod} ${d.ip}`;
    });
  }

  async function jumps(): Promise<string[]> {
    return [...parseNatSave(await node.must("iptables-save", ["-t", "nat"])).jumps];
  }

  const waitRules = (what: string, want: string[], family: "ipv4" | "ipv6" = "ipv4", ms = 5_000) =>
    waitFor(what, async () => JSON.stringify(await rules(family)) === JSON.stringify(want), ms, 20).catch(async (err: unknown) => {
      throw new Error(`${(err as Error).message}; kernel has ${JSON.stringify(await rules(family))}`);
    });

  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  before(async () => {
    await must(`${ROOT}node_modules/.bin/tsc`, ["--build", `${ROOT}packages/podwatch`], { timeoutMs: 120_000 });
    await removeStale("tpw");
    node = await Netns.create(uniqueName("tpw"));
    // kube-proxy's chains live beside ours and must stay untouched.
    await node.must("iptables-restore", ["--noflush"], {
      input: "*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j RETURN\nCOMMIT\n",
    });
    api = await KubeApiStandIn.start();
    exposure = await api.exposeIn(node);
    pw = await startPodwatch();
  });

  after(async () => {
    await stopPodwatch();
    await api?.close();
    await node?.destroy();
  });

  it("adds an annotated pod's rule within a second of its IP appearing, and removes it on delete", async () => {
    api.createPod({ name: "web", namespace: "shop", nodeName: "node-a", annotations: ON });
    await sleep(300);
    expect(await rules()).to.deep.equal([]);
    const t0 = performance.now();
    api.setPodIP("shop", "web", "10.244.0.10");
    await waitRules("web's rule", ["shop/web 10.244.0.10"], "ipv4", 1_000);
    const latency = performance.now() - t0;
    expect(latency).to.be.below(1_000);
    process.stdout.write(`      (event-to-rule latency: ${latency.toFixed(0)} ms, through the client, the namespace bridge and iptables-restore)\n`);
    const save = await node.must("iptables-save", ["-t", "nat"]);
    expect(save).to.include('-A TPROXY-REDIRECT -s 10.244.0.10/32 -p tcp -m multiport --dports 80,443 -m comment --comment "shop/web" -j REDIRECT --to-ports 8080');
    expect(await jumps()).to.deep.equal(["-A PREROUTING -j TPROXY-REDIRECT"]);
    await waitFor("a log line for the added redirect", () => pw?.logs.some((l) => l.msg === "redirect added" && l.pod === "shop/web") ?? false, 2_000);

    api.deletePod("shop", "web");
    await waitRules("web's rule to go", [], "ipv4", 1_000);
    await waitFor("a log line for the removed redirect", () => pw?.logs.some((l) => l.msg === "redirect removed" && l.pod === "shop/web") ?? false, 2_000);
  });

  it("gives no rule to pods of other nodes, unannotated, hostNetwork or finished pods", async () => {
    api.createPod({ name: "elsewhere", nodeName: "node-b", annotations: ON, podIP: "10.244.1.5" });
    api.createPod({ name: "plain", nodeName: "node-a", podIP: "10.244.0.21" });
    api.createPod({ name: "hostnet", nodeName: "node-a", annotations: ON, hostNetwork: true, podIP: "192.168.0.2" });
    api.createPod({ name: "job", nodeName: "node-a", annotations: ON, podIP: "10.244.0.22" });
    api.createPod({ name: "control", nodeName: "node-a", annotations: ON, podIP: "10.244.0.23" });
    await waitRules("job and control", ["default/control 10.244.0.23", "default/job 10.244.0.22"]);
    api.updatePod("default", "job", { status: { phase: "Succeeded" } });
    await waitRules("the finished job's rule to go", ["default/control 10.244.0.23"]);
    await sleep(1_200); // a resync later nothing else has appeared
    expect(await rules()).to.deep.equal(["default/control 10.244.0.23"]);
    for (const name of ["elsewhere", "plain", "hostnet", "job", "control"]) api.deletePod("default", name);
    await waitRules("all gone", []);
  });

  it("takes the rule away when a pod's IP is reused by a new unannotated pod", async () => {
    api.createPod({ name: "first", nodeName: "node-a", annotations: ON, podIP: "10.244.0.30" });
    await waitRules("first's rule", ["default/first 10.244.0.30"]);
    api.deletePod("default", "first");
    api.createPod({ name: "second", nodeName: "node-a", podIP: "10.244.0.30" });
    await waitRules("the reused IP to lose its rule", []);
    api.deletePod("default", "second");
  });

  it("redirects IPv6 pod addresses with ip6tables", async () => {
    api.createPod({ name: "dual", nodeName: "node-a", annotations: ON });
    api.setPodIP("default", "dual", ["10.244.0.40", "fd00:10:244::40"]);
    await waitRules("dual's IPv4 rule", ["default/dual 10.244.0.40"]);
    await waitRules("dual's IPv6 rule", ["default/dual fd00:10:244::40"], "ipv6");
    api.deletePod("default", "dual");
    await waitRules("dual's IPv6 rule to go", [], "ipv6");
  });

  it("repairs a chain flushed by hand and a deleted jump within one resync, leaving kube-proxy's chain alone", async () => {
    api.createPod({ name: "steady", nodeName: "node-a", annotations: ON, podIP: "10.244.0.50" });
    await waitRules("steady's rule", ["default/steady 10.244.0.50"]);
    await node.must("iptables", ["-t", "nat", "-F", "TPROXY-REDIRECT"]);
    await node.must("iptables", ["-t", "nat", "-D", "PREROUTING", "-j", "TPROXY-REDIRECT"]);
    expect(await rules()).to.deep.equal([]);
    await waitRules("the chain to come back", ["default/steady 10.244.0.50"], "ipv4", 2_500);
    await waitFor("the jump to come back", async () => (await jumps()).length === 1, 2_500);
    const save = await node.must("iptables-save", ["-t", "nat"]);
    expect(save).to.include('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES');
    expect(save).to.include("-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j RETURN");
  });

  it("keeps the rules while the API is down, and catches up when it is back", async () => {
    const restartsBefore = pw?.logs.filter((l) => l.msg === "pod watch failed, restarting").length ?? 0;
    await api.stop();
    api.createPod({ name: "late", nodeName: "node-a", annotations: ON, podIP: "10.244.0.51" });
    await sleep(2_500); // more than two resyncs
    expect(await rules()).to.deep.equal(["default/steady 10.244.0.50"]);
    await api.restart();
    await waitRules("late's rule after the API is back", ["default/late 10.244.0.51", "default/steady 10.244.0.50"], "ipv4", 35_000);
    expect(pw?.logs.filter((l) => l.msg === "pod watch failed, restarting").length).to.be.above(restartsBefore);
  });

  it("re-lists after 410 Gone with rules intact meanwhile, dropping pods deleted in between", async () => {
    const listsBefore = api.stats.lists;
    await api.stop();
    api.deletePod("default", "late");
    api.compact(); // the watch's resourceVersion is now too old
    await api.restart();
    await waitRules("late's rule to go after the re-list", ["default/steady 10.244.0.50"], "ipv4", 35_000);
    expect(api.stats.lists).to.be.above(listsBefore);

    const lists = api.stats.lists;
    api.force410();
    await waitFor("a re-list after 410", () => api.stats.lists > lists, 10_000);
    expect(await rules()).to.deep.equal(["default/steady 10.244.0.50"]);
    api.createPod({ name: "after410", nodeName: "node-a", annotations: ON, podIP: "10.244.0.52" });
    await waitRules("a pod added after the 410", ["default/after410 10.244.0.52", "default/steady 10.244.0.50"]);
    api.deletePod("default", "after410");
    await waitRules("after410 to go", ["default/steady 10.244.0.50"]);
  });

  it("serves /healthz and /metrics", async () => {
    const port = pw?.statusPort ?? 0;
    const health = await node.must("curl", ["-sS", "-w", "\n%{http_code}", `http://127.0.0.1:${port}/healthz`]);
    expect(health.trim().split("\n").at(-1)).to.equal("200");
    expect(JSON.parse(health.trim().split("\n")[0] ?? "{}")).to.include({ healthy: true, synced: true, lastApplyOk: true });
    const metrics = await node.must("curl", ["-sS", `http://127.0.0.1:${port}/metrics`]);
    expect(metrics).to.match(/^tproxy_podwatch_pods_selected 1$/m);
    expect(metrics).to.match(/^tproxy_podwatch_rules\{family="ipv4"\} 1$/m);
    expect(metrics).to.match(/^tproxy_podwatch_watch_restarts_total [1-9]/m);
    expect(metrics).to.match(/^tproxy_podwatch_apply_duration_seconds_count [1-9]/m);
  });

  it("reports iptables failures (stderr logged, /healthz 503), keeps retrying, and recovers", async () => {
    await stopPodwatch();
    // An iptables-restore that refuses, first on PATH, standing for a broken or locked iptables.
    const bin = mkdtempSync(join(tmpdir(), "tpw-bin-"));
    const fake = join(bin, "iptables-restore");
    writeFileSync(fake, "#!/bin/sh\ncat >/dev/null\necho 'iptables-restore: line 3 failed (stand-in failure)' >&2\nexit 1\n", { mode: 0o755 });
    try {
      pw = await startPodwatch({ PATH: `${bin}:${process.env.PATH ?? ""}` });
      api.createPod({ name: "blocked", nodeName: "node-a", annotations: ON, podIP: "10.244.0.70" });
      const health = async () => (await node.must("curl", ["-sS", "-w", "\n%{http_code}", `http://127.0.0.1:${pw!.statusPort}/healthz`])).trim().split("\n");
      await waitFor("/healthz to report the failure", async () => (await health()).at(-1) === "503", 5_000, 100);
      expect(JSON.parse((await health())[0] ?? "{}")).to.include({ healthy: false, lastApplyOk: false });
      await waitFor("the command's stderr in the log", () => pw!.logs.some((l) => JSON.stringify(l).includes("line 3 failed (stand-in failure)")), 3_000, 50);
      expect(await rules()).to.not.include("default/blocked 10.244.0.70"); // the kernel kept what it had
      rmSync(fake); // iptables works again: the next retry applies
      await waitFor("the retry to apply", async () => (await rules()).includes("default/blocked 10.244.0.70"), 40_000, 100);
      await waitFor("/healthz to recover", async () => (await health()).at(-1) === "200", 10_000, 100);
    } finally {
      rmSync(bin, { recursive: true, force: true });
      api.deletePod("default", "blocked");
      await stopPodwatch();
      pw = await startPodwatch();
      await waitFor("the blocked pod's rule to go", async () => !(await rules()).includes("default/blocked 10.244.0.70"), 5_000, 50);
    }
  });

  it("removes the rule of a pod deleted while podwatch was stopped, at the first sync after start", async () => {
    await stopPodwatch();
    api.deletePod("default", "steady");
    api.createPod({ name: "meanwhile", nodeName: "node-a", annotations: ON, podIP: "10.244.0.60" });
    await sleep(300);
    expect(await rules()).to.deep.equal(["default/steady 10.244.0.50"]); // nothing touches the kernel while stopped
    pw = await startPodwatch();
    await waitRules("the stale rule to go at the first sync", ["default/meanwhile 10.244.0.60"], "ipv4", 3_000);
  });
});
