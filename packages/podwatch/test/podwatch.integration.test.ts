// The real `tproxy-podwatch` binary, run in a network namespace standing for the node, against the
// Kubernetes API stand-in through the real client. Rules are read back from the kernel. Needs root.
//
// Podwatch runs here with a resync far longer than any test (10 minutes), so every change a test sees
// comes from the pod events themselves; drift repair, the resync's job, is tested on its own with a
// short resync.
import { expect } from "chai";
import { execFileSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
/** Longer than the whole suite: no resync happens in the event tests. */
const LONG_RESYNC = "10m";

interface Running {
  child: ChildProcess;
  logs: Array<Record<string, unknown>>;
  statusPort: number;
  node: Netns;
}

interface LaunchOptions {
  node?: Netns;
  exposure?: Exposure;
  /** Replaces the default flags (`--node-name node-a --resync 10m --metrics-port 0`). */
  args?: string[];
  env?: Record<string, string>;
  /** Return as soon as it is spawned, not once it serves /healthz. */
  unready?: boolean;
}

describe("tproxy-podwatch in a node namespace (integration)", function () {
  this.timeout(60_000);
  let node: Netns;
  let api: KubeApiStandIn;
  let exposure: Exposure;
  let pw: Running | undefined;
  const extraNodes: Netns[] = [];

  async function launch(opts: LaunchOptions = {}): Promise<Running> {
    const where = opts.node ?? node;
    const args = opts.args ?? ["--node-name", "node-a", "--resync", LONG_RESYNC, "--metrics-port", "0"];
    const child = where.spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, KUBECONFIG: (opts.exposure ?? exposure).kubeconfigPath, TPROXY_LOG_LEVEL: "debug", ...opts.env },
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
    if (opts.unready) return { child, logs, statusPort: 0, node: where };
    await waitFor("podwatch to serve /healthz", () => logs.some((l) => l.msg === "serving /healthz and /metrics") || child.exitCode !== null, 15_000);
    if (child.exitCode !== null) throw new Error(`podwatch exited ${child.exitCode}: ${stderr}`);
    const statusPort = Number(logs.find((l) => l.msg === "serving /healthz and /metrics")?.port);
    return { child, logs, statusPort, node: where };
  }

  async function halt(running: Running | undefined): Promise<void> {
    if (!running) return;
    const { child } = running;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await once(child, "exit");
    }
  }

  async function stopPodwatch(): Promise<void> {
    const running = pw;
    pw = undefined;
    await halt(running);
  }

  /** Our chain's rules in the kernel as "ns/name ip" strings, per family. */
  async function rules(family: "ipv4" | "ipv6" = "ipv4", where: Netns = node, save = family === "ipv4" ? "iptables-save" : "ip6tables-save"): Promise<string[]> {
    const text = await where.must(save, ["-t", "nat"]);
    return parseNatSave(text).rules.map((r) => {
      const d = describeRule(r);
      return `${d.pod} ${d.ip}`;
    });
  }

  /** Sources the enforce chain drops, in kernel order (IPv4). */
  async function dropped(where: Netns = node): Promise<string[]> {
    const text = await where.must("iptables-save", ["-t", "filter"]);
    return [...text.matchAll(/^-A TPROXY-ENFORCE -s (\S+) .*-j DROP$/gm)].map((m) => m[1] ?? "");
  }

  async function jumps(): Promise<string[]> {
    return [...parseNatSave(await node.must("iptables-save", ["-t", "nat"])).jumps];
  }

  const waitRules = (what: string, want: string[], family: "ipv4" | "ipv6" = "ipv4", ms = 5_000, where: Netns = node, save?: string) =>
    waitFor(what, async () => JSON.stringify(await rules(family, where, save)) === JSON.stringify(want), ms, 20).catch(async (err: unknown) => {
      throw new Error(`${(err as Error).message}; kernel has ${JSON.stringify(await rules(family, where, save))}`);
    });

  /**
   * Waits for podwatch's debug line about `verb` on `pod`, then for the reconcile pass that follows it:
   * after this, the kernel shows what podwatch made of that event.
   */
  async function passAfterEvent(running: Running, verb: string, pod: string): Promise<void> {
    let at = -1;
    await waitFor(`podwatch to see "${verb}" of ${pod}`, () => (at = running.logs.findIndex((l) => l.msg === "pod event" && l.verb === verb && l.pod === pod)) >= 0, 5_000);
    await waitFor(`a reconcile pass after "${verb}" of ${pod}`, () => running.logs.some((l, i) => i > at && l.msg === "reconciled"), 5_000);
  }

  async function metrics(running: Running): Promise<string> {
    return running.node.must("curl", ["-sS", `http://127.0.0.1:${running.statusPort}/metrics`]);
  }

  /** One series' value; a labelled counter not incremented yet has no line, which reads as 0 when `absent` says so. */
  function metric(text: string, series: string, absent?: number): number {
    const line = text.split("\n").find((l) => l.startsWith(`${series} `));
    if (line === undefined && absent !== undefined) return absent;
    if (line === undefined) throw new Error(`no ${series} in /metrics`);
    return Number(line.slice(series.length + 1));
  }

  async function health(running: Running): Promise<{ status: string; body: Record<string, unknown> }> {
    const out = (await running.node.must("curl", ["-sS", "-w", "\n%{http_code}", `http://127.0.0.1:${running.statusPort}/healthz`])).trim().split("\n");
    return { status: out.at(-1) ?? "", body: JSON.parse(out[0] ?? "{}") as Record<string, unknown> };
  }

  /** Another node namespace with its own view of the API (for podwatch instances with other flags). */
  async function otherNode(): Promise<{ node: Netns; exposure: Exposure }> {
    const n = await Netns.create(uniqueName("tpw"));
    extraNodes.push(n);
    return { node: n, exposure: await api.exposeIn(n) };
  }

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
    pw = await launch();
  });

  after(async () => {
    await stopPodwatch();
    await api?.close();
    for (const n of extraNodes) await n.destroy();
    await node?.destroy();
  });

  it("adds an annotated pod's rule when its IP appears, keeps it while the pod terminates, removes it when deleted", async () => {
    api.createPod({ name: "web", namespace: "shop", nodeName: "node-a", annotations: ON });
    await passAfterEvent(pw!, "add", "shop/web");
    expect(await rules()).to.deep.equal([]);
    api.setPodIP("shop", "web", "10.244.0.10");
    await waitRules("web's rule", ["shop/web 10.244.0.10"]);
    const save = await node.must("iptables-save", ["-t", "nat"]);
    expect(save).to.include('-A TPROXY-REDIRECT -s 10.244.0.10/32 -p tcp -m multiport --dports 80,443 -m comment --comment "shop/web" -j REDIRECT --to-ports 15170');
    expect(await jumps()).to.deep.equal(["-A PREROUTING -j TPROXY-REDIRECT"]);
    await waitFor("a log line for the added redirect", () => pw?.logs.some((l) => l.msg === "redirect added" && l.pod === "shop/web") ?? false, 2_000);

    // Deletion is graceful: the pod has a deletionTimestamp but its containers still run (and still send
    // traffic) until they stop; the kubelet then confirms and the pod is gone. The rule follows that.
    const updatesBefore = pw!.logs.filter((l) => l.msg === "pod event" && l.verb === "update" && l.pod === "shop/web").length;
    api.deletePod("shop", "web");
    await waitFor("the terminating pod's update", () => pw!.logs.filter((l) => l.msg === "pod event" && l.verb === "update" && l.pod === "shop/web").length > updatesBefore, 5_000);
    const at = pw!.logs.findLastIndex((l) => l.msg === "pod event" && l.verb === "update" && l.pod === "shop/web");
    await waitFor("a pass after it", () => pw!.logs.some((l, i) => i > at && l.msg === "reconciled"), 5_000);
    expect(api.getPod("shop", "web")?.metadata.deletionTimestamp).to.be.a("string");
    expect(await rules()).to.deep.equal(["shop/web 10.244.0.10"]);
    api.finishDeletion("shop", "web");
    await waitRules("web's rule to go", []);
    await waitFor("a log line for the removed redirect", () => pw?.logs.some((l) => l.msg === "redirect removed" && l.pod === "shop/web") ?? false, 2_000);
  });

  it("redirects a Pending pod as soon as it has an IP (its init container needs the redirect to finish)", async () => {
    api.createPod({ name: "starting", nodeName: "node-a", annotations: ON, initContainers: ["sidecar-init"] });
    api.setPodIP("default", "starting", "10.244.0.15", "Pending");
    await waitRules("the Pending pod's rule", ["default/starting 10.244.0.15"]);
    api.updatePod("default", "starting", { status: { phase: "Running" } });
    await passAfterEvent(pw!, "update", "default/starting");
    expect(await rules()).to.deep.equal(["default/starting 10.244.0.15"]);
    api.deletePod("default", "starting", { gracePeriodSeconds: 0 });
    await waitRules("its rule to go", []);
  });

  it("takes the redirect away when the annotation of a running pod without sidecar-init is removed or changed", async () => {
    for (const [name, ip] of [["removed", "10.244.0.16"], ["off", "10.244.0.17"], ["other", "10.244.0.18"]] as const) {
      api.createPod({ name, nodeName: "node-a", annotations: ON, podIP: ip });
    }
    await waitRules("three rules", ["default/off 10.244.0.17", "default/other 10.244.0.18", "default/removed 10.244.0.16"]);
    api.updatePod("default", "removed", { metadata: { annotations: { [A]: null } } });
    await waitRules("the rule of the pod whose annotation was removed to go", ["default/off 10.244.0.17", "default/other 10.244.0.18"]);
    api.updatePod("default", "off", { metadata: { annotations: { [A]: "false" } } });
    await waitRules("the rule of the pod annotated \"false\" to go", ["default/other 10.244.0.18"]);
    api.updatePod("default", "other", { metadata: { annotations: { [A]: "yes" } } });
    await waitRules("the rule of the pod annotated \"yes\" to go", []);
    for (const name of ["removed", "off", "other"]) api.deletePod("default", name, { gracePeriodSeconds: 0 });
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
    // A pod moved to this node (an unusual but legal update of an unbound-then-bound pod) is seen too.
    api.updatePod("default", "elsewhere", { spec: { nodeName: "node-a" } });
    await waitRules("the pod now on this node", ["default/control 10.244.0.23", "default/elsewhere 10.244.1.5"]);
    for (const name of ["elsewhere", "plain", "hostnet", "job", "control"]) api.deletePod("default", name, { gracePeriodSeconds: 0 });
    await waitRules("all gone", []);
  });

  it("keeps a reused IP's rule while a locked pod still claims it (fail closed), and drops it when that pod is gone", async () => {
    api.createPod({ name: "first", nodeName: "node-a", annotations: ON, podIP: "10.244.0.30" });
    await waitRules("first's rule", ["default/first 10.244.0.30"]);
    api.deletePod("default", "first"); // graceful: still in the cache while the address is handed out again
    api.createPod({ name: "second", nodeName: "node-a", podIP: "10.244.0.30" });
    await passAfterEvent(pw!, "add", "default/second");
    expect(await rules()).to.deep.equal(["default/first 10.244.0.30"]);
    api.deletePod("default", "first", { gracePeriodSeconds: 0 });
    await waitRules("the reused IP to lose its rule once no locked pod claims it", []);
    api.deletePod("default", "second", { gracePeriodSeconds: 0 });
  });

  it("keeps a pod locked whose spec has the lock's init container when its annotation is removed or set to \"false\": redirect and enforce rules stay", async () => {
    api.createPod({ name: "spec-locked", nodeName: "node-a", annotations: ON, initContainers: ["tproxy"], podIP: "10.244.0.31" });
    api.createPod({ name: "annotation-only", nodeName: "node-a", annotations: ON, initContainers: ["migrate"], podIP: "10.244.0.32" });
    try {
      await waitRules("both rules", ["default/annotation-only 10.244.0.32", "default/spec-locked 10.244.0.31"]);
      expect(await dropped()).to.deep.equal(["10.244.0.32/32", "10.244.0.31/32"]);
      api.updatePod("default", "spec-locked", { metadata: { annotations: { [A]: null } } });
      api.updatePod("default", "annotation-only", { metadata: { annotations: { [A]: null } } });
      await waitRules("only the pod without the lock's init container to lose its rule", ["default/spec-locked 10.244.0.31"]);
      expect(await dropped()).to.deep.equal(["10.244.0.31/32"]);
      const seen = pw!.logs.length;
      api.updatePod("default", "spec-locked", { metadata: { annotations: { [A]: "false" } } });
      let at = -1;
      await waitFor("the update to \"false\"", () => (at = pw!.logs.findIndex((l, i) => i >= seen && l.msg === "pod event" && l.verb === "update" && l.pod === "default/spec-locked")) >= 0, 5_000);
      await waitFor("a pass after it", () => pw!.logs.some((l, i) => i > at && l.msg === "reconciled"), 5_000);
      expect(await rules()).to.deep.equal(["default/spec-locked 10.244.0.31"]);
      expect(await dropped()).to.deep.equal(["10.244.0.31/32"]);
    } finally {
      for (const name of ["spec-locked", "annotation-only"]) api.deletePod("default", name, { gracePeriodSeconds: 0 });
    }
    await waitRules("both gone", []);
    expect(await dropped()).to.deep.equal([]);
  });

  it("redirects IPv6 pod addresses with ip6tables", async () => {
    api.createPod({ name: "dual", nodeName: "node-a", annotations: ON });
    api.setPodIP("default", "dual", ["10.244.0.40", "fd00:10:244::40"]);
    await waitRules("dual's IPv4 rule", ["default/dual 10.244.0.40"]);
    await waitRules("dual's IPv6 rule", ["default/dual fd00:10:244::40"], "ipv6");
    api.deletePod("default", "dual", { gracePeriodSeconds: 0 });
    await waitRules("dual's IPv6 rule to go", [], "ipv6");
  });

  it("watches only the --namespace namespaces (two of them), ignoring pods of the others", async () => {
    const other = await otherNode();
    const scoped = await launch({ ...other, args: ["--node-name", "node-ns", "--namespace", "team-a", "--namespace", "team-b", "--resync", LONG_RESYNC, "--metrics-port", "0"] });
    try {
      for (const [ns, ip] of [["team-a", "10.245.0.1"], ["team-b", "10.245.0.2"], ["team-c", "10.245.0.3"], ["default", "10.245.0.4"]] as const) {
        api.createPod({ name: "app", namespace: ns, nodeName: "node-ns", annotations: ON, podIP: ip });
      }
      await waitRules("team-a's and team-b's rules", ["team-a/app 10.245.0.1", "team-b/app 10.245.0.2"], "ipv4", 5_000, other.node);
      api.createPod({ name: "late", namespace: "team-c", nodeName: "node-ns", annotations: ON, podIP: "10.245.0.5" });
      api.createPod({ name: "late", namespace: "team-b", nodeName: "node-ns", annotations: ON, podIP: "10.245.0.6" });
      await waitRules("team-b's new pod, and still nothing of team-c", ["team-a/app 10.245.0.1", "team-b/app 10.245.0.2", "team-b/late 10.245.0.6"], "ipv4", 5_000, other.node);
      expect(scoped.logs.filter((l) => l.msg === "initial pod list received").map((l) => l.scope).sort()).to.deep.equal(["team-a", "team-b"]);
      expect(scoped.logs.some((l) => l.msg === "pod event" && String(l.pod).startsWith("team-c/"))).to.equal(false);
    } finally {
      await halt(scoped);
      for (const [ns, name] of [["team-a", "app"], ["team-b", "app"], ["team-c", "app"], ["default", "app"], ["team-c", "late"], ["team-b", "late"]] as const) {
        api.deletePod(ns, name, { gracePeriodSeconds: 0 });
      }
    }
  });

  it("takes every flag from its environment variable, as --help lists them", async () => {
    const help = await must(process.execPath, [CLI, "--help"]);
    const listed = [...help.matchAll(/env:\s+([A-Z][A-Z_]+)\)/g)].map((m) => m[1]).sort();
    expect(listed).to.deep.equal([
      "NODE_NAME", "TPROXY_ALLOW_DNS", "TPROXY_ANNOTATION", "TPROXY_CNI_SOCKET", "TPROXY_DAEMONSET", "TPROXY_INIT_CONTAINER", "TPROXY_IPTABLES_BACKEND", "TPROXY_METRICS_ADDRESS", "TPROXY_METRICS_PORT", "TPROXY_NAMESPACES", "TPROXY_POD_IDENTITY_FILE", "TPROXY_PROXY_PORT", "TPROXY_REDIRECT_TO_ADDRESS", "TPROXY_RESYNC", "TPROXY_STANDARD_PORT",
    ]);

    const other = await otherNode();
    const identityFile = join(tmpdir(), `podwatch-env-${process.pid}-pods.json`);
    const fromEnv = await launch({
      ...other,
      args: [],
      env: {
        NODE_NAME: "node-env",
        TPROXY_ANNOTATION: "example.com/locked",
        TPROXY_INIT_CONTAINER: "lock",
        TPROXY_ALLOW_DNS: "10.96.0.10,10.96.0.11",
        TPROXY_STANDARD_PORT: "1080",
        TPROXY_NAMESPACES: "env-a,env-b",
        TPROXY_PROXY_PORT: "3129",
        TPROXY_REDIRECT_TO_ADDRESS: "10.246.9.9,fd00::9",
        TPROXY_RESYNC: "500ms",
        TPROXY_METRICS_PORT: "19391",
        TPROXY_METRICS_ADDRESS: "0.0.0.0",
        TPROXY_IPTABLES_BACKEND: "nft",
        TPROXY_DAEMONSET: "tproxy-system/not-there",
        TPROXY_POD_IDENTITY_FILE: identityFile,
      },
    });
    try {
      expect(fromEnv.statusPort).to.equal(19391);
      expect(fromEnv.logs.map((l) => l.msg)).to.include("iptables backend nft: as configured");
      // Every address, as the variable says (the default is the node's loopback only).
      expect(await other.node.must("ss", ["-Hltn", "sport", "=", ":19391"])).to.include("0.0.0.0:19391");
      expect((await health(fromEnv)).status).to.match(/^(200|503)$/);
      const custom = { "example.com/locked": "true" };
      api.createPod({ name: "yes", namespace: "env-a", nodeName: "node-env", annotations: custom, podIP: "10.246.0.1" });
      api.createPod({ name: "yes", namespace: "env-b", nodeName: "node-env", annotations: custom, podIP: ["10.246.0.2", "fd00:246::2"] });
      api.createPod({ name: "default-key", namespace: "env-a", nodeName: "node-env", annotations: ON, podIP: "10.246.0.3" });
      api.createPod({ name: "other-ns", namespace: "env-c", nodeName: "node-env", annotations: custom, podIP: "10.246.0.4" });
      api.createPod({ name: "other-node", namespace: "env-a", nodeName: "node-a", annotations: custom, podIP: "10.246.0.5" });
      api.createPod({ name: "init", namespace: "env-b", nodeName: "node-env", initContainers: ["lock"], podIP: "10.246.0.6" });
      await waitRules("rules of env-a and env-b with the custom key and init container", ["env-a/yes 10.246.0.1", "env-b/init 10.246.0.6", "env-b/yes 10.246.0.2"], "ipv4", 5_000, other.node);
      await waitFor("the pod identity file of TPROXY_POD_IDENTITY_FILE", () => { try { return readFileSync(identityFile, "utf8").includes('"10.246.0.6"'); } catch { return false; } }, 5_000);
      const filter = await other.node.must("iptables-save", ["-t", "filter"]);
      expect(filter).to.match(/^-A TPROXY-ENFORCE -p udp -m conntrack --ctorigdst 10\.96\.0\.11 --ctorigdstport 53 -m comment .*-j RETURN$/m);
      expect(filter).to.match(/^-A TPROXY-ENFORCE -p tcp -m tcp --dport 1080 -m addrtype --dst-type LOCAL -m comment .*-j RETURN$/m);
      expect(filter).to.match(/^-A TPROXY-ENFORCE -p tcp -m tcp --dport 3129 -m conntrack --ctstate DNAT -m comment .*-j RETURN$/m);
      expect(filter).to.match(/^-A TPROXY-ENFORCE -s 10\.246\.0\.1\/32 -m comment .*-j DROP$/m);
      const save = await other.node.must("iptables-save", ["-t", "nat"]);
      expect(save).to.include('-A TPROXY-REDIRECT -s 10.246.0.1/32 -p tcp -m multiport --dports 80,443 -m comment --comment "env-a/yes" -j DNAT --to-destination 10.246.9.9:3129');
      // Each family DNATs to its own address; the IPv6 one comes back from the kernel in brackets, as rendered.
      await waitRules("the IPv6 rule of env-b/yes", ["env-b/yes fd00:246::2"], "ipv6", 5_000, other.node);
      expect(await other.node.must("ip6tables-save", ["-t", "nat"])).to.include('-A TPROXY-REDIRECT -s fd00:246::2/128 -p tcp -m multiport --dports 80,443 -m comment --comment "env-b/yes" -j DNAT --to-destination [fd00::9]:3129');
      // TPROXY_RESYNC: a hand-flushed chain comes back with no pod event at all.
      await other.node.must("iptables", ["-t", "nat", "-F", "TPROXY-REDIRECT"]);
      await waitRules("the 500ms resync to repair the chain", ["env-a/yes 10.246.0.1", "env-b/init 10.246.0.6", "env-b/yes 10.246.0.2"], "ipv4", 5_000, other.node);
      // TPROXY_DAEMONSET: at SIGTERM it asked for that DaemonSet, found none, and took the uninstall path.
      await halt(fromEnv);
      expect(fromEnv.logs.find((l) => String(l.msg).startsWith("uninstall"))?.why).to.equal("daemonset tproxy-system/not-there not found");
    } finally {
      await halt(fromEnv);
      for (const [ns, name] of [["env-a", "yes"], ["env-b", "yes"], ["env-a", "default-key"], ["env-c", "other-ns"], ["env-a", "other-node"], ["env-b", "init"]] as const) {
        api.deletePod(ns, name, { gracePeriodSeconds: 0 });
      }
    }
  });

  it("applies its chain with the legacy backend when --iptables-backend legacy names it (as podwatch.iptablesBackend does)", async () => {
    const other = await otherNode();
    const legacy = await launch({ ...other, args: ["--node-name", "node-legacy", "--resync", LONG_RESYNC, "--metrics-port", "0", "--iptables-backend", "legacy"] });
    expect(legacy.logs.find((l) => l.msg === "iptables backend legacy: as configured")?.ipv4).to.deep.equal(["/usr/sbin/iptables-legacy-save", "/usr/sbin/iptables-legacy-restore"]);
    try {
      api.createPod({ name: "old-node", nodeName: "node-legacy", annotations: ON, podIP: "10.247.0.1" });
      await waitRules("the rule in the legacy tables", ["default/old-node 10.247.0.1"], "ipv4", 5_000, other.node, "iptables-legacy-save");
      const save = await other.node.must("iptables-legacy-save", ["-t", "nat"]);
      expect(save).to.include("-A PREROUTING -j TPROXY-REDIRECT");
      expect(await other.node.must("iptables-nft-save", ["-t", "nat"])).to.not.include("TPROXY-REDIRECT");
      api.deletePod("default", "old-node", { gracePeriodSeconds: 0 });
      await waitRules("the rule to go from the legacy tables", [], "ipv4", 5_000, other.node, "iptables-legacy-save");
    } finally {
      await halt(legacy);
    }
  });

  it("repairs a chain flushed by hand and a deleted jump at the next resync, leaving kube-proxy's chain alone", async () => {
    api.createPod({ name: "steady", nodeName: "node-a", annotations: ON, podIP: "10.244.0.50" });
    await waitRules("steady's rule", ["default/steady 10.244.0.50"]);
    await stopPodwatch();
    pw = await launch({ args: ["--node-name", "node-a", "--resync", "1s", "--metrics-port", "0"] });
    try {
      await waitFor("the first pass", () => pw!.logs.some((l) => l.msg === "reconciled"), 5_000);
      await node.must("iptables", ["-t", "nat", "-F", "TPROXY-REDIRECT"]);
      await node.must("iptables", ["-t", "nat", "-D", "PREROUTING", "-j", "TPROXY-REDIRECT"]);
      expect(await rules()).to.deep.equal([]);
      const enforce = await node.must("iptables-save", ["-t", "filter"]);
      await node.must("iptables", ["-F", "TPROXY-ENFORCE"]);
      await node.must("iptables", ["-D", "FORWARD", "-j", "TPROXY-ENFORCE"]);
      await waitFor("the enforce chain and its FORWARD jump to come back", async () => (await node.must("iptables-save", ["-t", "filter"])).replace(/^#.*\n/gm, "") === enforce.replace(/^#.*\n/gm, ""), 5_000, 50);
      await waitRules("the chain to come back", ["default/steady 10.244.0.50"], "ipv4", 5_000);
      await waitFor("the jump to come back", async () => (await jumps()).length === 1, 5_000);
      const save = await node.must("iptables-save", ["-t", "nat"]);
      expect(save).to.include('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES');
      expect(save).to.include("-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j RETURN");
    } finally {
      await stopPodwatch();
      pw = await launch();
    }
  });

  it("keeps the rules while the API is down, and catches up when it is back", async () => {
    await waitFor("the first pass", () => pw!.logs.some((l) => l.msg === "reconciled"), 5_000);
    const restartsBefore = metric(await metrics(pw!), "tproxy_podwatch_watch_restarts_total");
    await api.stop();
    api.createPod({ name: "late", nodeName: "node-a", annotations: ON, podIP: "10.244.0.51" });
    await waitFor("two failed reconnections", () => pw!.logs.filter((l) => l.msg === "pod watch failed, restarting").length >= 2, 10_000);
    expect(await rules()).to.deep.equal(["default/steady 10.244.0.50"]);
    await api.restart(); // its history is gone: the watch gets 410 Gone and the informer lists again
    await waitRules("late's rule after the API is back", ["default/late 10.244.0.51", "default/steady 10.244.0.50"], "ipv4", 35_000);
    expect(metric(await metrics(pw!), "tproxy_podwatch_watch_restarts_total") - restartsBefore).to.be.at.least(2);
  });

  it("re-lists after 410 Gone with rules intact meanwhile, dropping pods deleted in between", async () => {
    const listsBefore = api.stats.lists;
    await api.stop();
    api.deletePod("default", "late", { gracePeriodSeconds: 0 });
    await api.restart();
    await waitRules("late's rule to go after the re-list", ["default/steady 10.244.0.50"], "ipv4", 35_000);
    expect(api.stats.lists).to.be.above(listsBefore);

    const lists = api.stats.lists;
    api.force410();
    await waitFor("a re-list after 410", () => api.stats.lists > lists, 10_000);
    expect(await rules()).to.deep.equal(["default/steady 10.244.0.50"]);
    api.createPod({ name: "after410", nodeName: "node-a", annotations: ON, podIP: "10.244.0.52" });
    await waitRules("a pod added after the 410", ["default/after410 10.244.0.52", "default/steady 10.244.0.50"]);
    api.deletePod("default", "after410", { gracePeriodSeconds: 0 });
    await waitRules("after410 to go", ["default/steady 10.244.0.50"]);
  });

  it("serves /healthz and /metrics that follow what it did", async () => {
    const h = await health(pw!);
    expect(h.status).to.equal("200");
    expect(h.body).to.include({ healthy: true, synced: true, lastApplyOk: true });
    const before = await metrics(pw!);
    expect(metric(before, "tproxy_podwatch_synced")).to.equal(1);
    expect(metric(before, "tproxy_podwatch_pods_selected")).to.equal((await rules()).length);
    expect(metric(before, 'tproxy_podwatch_rules{family="ipv4"}')).to.equal((await rules()).length);

    api.createPod({ name: "counted", nodeName: "node-a", annotations: ON, podIP: "10.244.0.53" });
    await waitRules("counted's rule", ["default/counted 10.244.0.53", "default/steady 10.244.0.50"]);
    await waitFor("the gauges to follow", async () => metric(await metrics(pw!), "tproxy_podwatch_pods_selected") === 2, 2_000);
    const after = await metrics(pw!);
    expect(metric(after, 'tproxy_podwatch_rules{family="ipv4"}')).to.equal(2);
    expect(metric(after, 'tproxy_podwatch_applies_total{family="ipv4"}') - metric(before, 'tproxy_podwatch_applies_total{family="ipv4"}')).to.equal(1);
    expect(metric(after, "tproxy_podwatch_apply_duration_seconds_count")).to.be.above(metric(before, "tproxy_podwatch_apply_duration_seconds_count"));
    expect(metric(after, 'tproxy_podwatch_apply_errors_total{family="ipv4"}', 0)).to.equal(metric(before, 'tproxy_podwatch_apply_errors_total{family="ipv4"}', 0));
    api.deletePod("default", "counted", { gracePeriodSeconds: 0 });
    await waitRules("counted's rule to go", ["default/steady 10.244.0.50"]);
  });

  it("reports iptables failures (stderr logged, /healthz 503), keeps retrying, and recovers", async () => {
    await stopPodwatch();
    // The node's backend (nft: kube-proxy's rules are there) with an iptables-nft-restore first on PATH
    // that refuses while the file `broken` exists, standing for a broken or locked iptables; podwatch
    // found it at start and keeps calling it.
    const bin = mkdtempSync(join(tmpdir(), "tpw-bin-"));
    const fake = join(bin, "broken");
    writeFileSync(fake, "");
    writeFileSync(
      join(bin, "iptables-nft-restore"),
      `#!/bin/sh\nif [ -e ${fake} ]; then cat >/dev/null; echo 'iptables-restore: line 3 failed (stand-in failure)' >&2; exit 1; fi\nexec /usr/sbin/iptables-nft-restore "$@"\n`,
      { mode: 0o755 },
    );
    try {
      pw = await launch({ env: { PATH: `${bin}:${process.env.PATH ?? ""}` } });
      api.createPod({ name: "blocked", nodeName: "node-a", annotations: ON, podIP: "10.244.0.70" });
      await waitFor("/healthz to report the failure", async () => (await health(pw!)).status === "503", 5_000, 100);
      expect((await health(pw!)).body).to.include({ healthy: false, lastApplyOk: false });
      await waitFor("the command's stderr in the log", () => pw!.logs.some((l) => JSON.stringify(l).includes("line 3 failed (stand-in failure)")), 3_000, 50);
      expect(metric(await metrics(pw!), 'tproxy_podwatch_apply_errors_total{family="ipv4"}')).to.be.at.least(1);
      expect(await rules()).to.not.include("default/blocked 10.244.0.70"); // the kernel kept what it had
      rmSync(fake); // iptables works again: the next retry applies
      await waitFor("the retry to apply", async () => (await rules()).includes("default/blocked 10.244.0.70"), 40_000, 100);
      await waitFor("/healthz to recover", async () => (await health(pw!)).status === "200", 10_000, 100);
    } finally {
      rmSync(bin, { recursive: true, force: true });
      api.deletePod("default", "blocked", { gracePeriodSeconds: 0 });
      await stopPodwatch();
      pw = await launch();
      await waitFor("the blocked pod's rule to go", async () => !(await rules()).includes("default/blocked 10.244.0.70"), 5_000, 50);
    }
  });

  it("removes the rule of a pod deleted while podwatch was stopped, at the first sync after start", async () => {
    await stopPodwatch();
    api.deletePod("default", "steady", { gracePeriodSeconds: 0 });
    api.createPod({ name: "meanwhile", nodeName: "node-a", annotations: ON, podIP: "10.244.0.60" });
    await sleep(300);
    expect(await rules()).to.deep.equal(["default/steady 10.244.0.50"]); // nothing touches the kernel while stopped
    pw = await launch();
    await waitRules("the stale rule to go at the first sync", ["default/meanwhile 10.244.0.60"], "ipv4", 3_000);
  });

  it("started while the API is unreachable, keeps the node's rules untouched until its first full list, then converges", async () => {
    await stopPodwatch();
    await api.stop();
    api.deletePod("default", "meanwhile", { gracePeriodSeconds: 0 });
    api.createPod({ name: "newcomer", nodeName: "node-a", annotations: ON, podIP: "10.244.0.61" });
    pw = await launch();
    // Two failed lists, a second apart (the restart backoff): any pass run before the list would have
    // flushed the chain (an empty cache wants no rules) long before the second failure.
    await waitFor("two failed lists", () => pw!.logs.filter((l) => l.msg === "pod watch failed, restarting").length >= 2, 10_000);
    expect(await rules()).to.deep.equal(["default/meanwhile 10.244.0.60"]);
    expect(pw!.logs.some((l) => l.msg === "reconciled")).to.equal(false);
    const h = await health(pw!);
    expect(h.status).to.equal("503");
    expect(h.body).to.include({ synced: false });
    expect(metric(await metrics(pw!), "tproxy_podwatch_apply_duration_seconds_count")).to.equal(0);
    await api.restart();
    await waitRules("the rules of the listed pods", ["default/newcomer 10.244.0.61"], "ipv4", 35_000);
    api.deletePod("default", "newcomer", { gracePeriodSeconds: 0 });
    await waitRules("newcomer's rule to go", []);
  });
  // ---- the guard, overlapping podwatches, uninstall: each on a node namespace of its own ----

  /** iptables-save of both tables and both families, without the comment lines (counters, dates). */
  async function tables(where: Netns): Promise<string> {
    const parts: string[] = [];
    for (const save of ["iptables-save", "ip6tables-save"]) for (const t of ["nat", "filter"]) parts.push(await where.must(save, ["-t", t]));
    return parts.join("").replace(/^#.*\n/gm, "");
  }
  const owned = (text: string) => text.split("\n").filter((l) => /TPROXY-/.test(l));
  const WRITES = new Set(["redirect added", "redirect removed", "PREROUTING jump repaired", "chain rewritten", "enforce chain rewritten", "guard chain written: only redirected connections reach the proxy's port"]);

  it("keeps the guard on the proxy's port from its start, no pod locked, in both families: one INPUT jump, a reset for what was not redirected", async () => {
    const other = await otherNode();
    const g = await launch({ ...other, args: ["--node-name", "node-g", "--resync", LONG_RESYNC, "--metrics-port", "0", "--proxy-port", "15170"] });
    try {
      await waitFor("the first pass", () => g.logs.some((l) => l.msg === "reconciled"), 5_000);
      for (const save of ["iptables-save", "ip6tables-save"]) {
        const filter = await other.node.must(save, ["-t", "filter"]);
        expect(filter.split("\n").filter((l) => l.includes("-j TPROXY-GUARD")), save).to.deep.equal(["-A INPUT -j TPROXY-GUARD"]);
        const rules = filter.split("\n").filter((l) => l.startsWith("-A TPROXY-GUARD "));
        expect(rules, save).to.have.length(1);
        expect(rules[0]).to.match(/--dport 15170 .*! --ctstate DNAT .*-j REJECT --reject-with tcp-reset$/);
        expect(filter, save).to.not.include("TPROXY-ENFORCE"); // nothing locked: no enforce chain
      }
    } finally {
      await halt(g);
    }
  });

  it("warns at start when the node's net.ipv4.tcp_migrate_req is 0 (a rolling update's hand-over then resets queued connections), not when it is 1", async () => {
    const MSG = /^net\.ipv4\.tcp_migrate_req is 0 on this node/;
    const other = await otherNode();
    const args = ["--node-name", "node-m", "--resync", LONG_RESYNC, "--metrics-port", "0"];
    await other.node.must("sysctl", ["-w", "net.ipv4.tcp_migrate_req=0"]);
    const off = await launch({ ...other, args });
    await halt(off);
    expect(off.logs.filter((l) => MSG.test(String(l.msg))).map((l) => l.level)).to.deep.equal([40]);
    await other.node.must("sysctl", ["-w", "net.ipv4.tcp_migrate_req=1"]);
    const on = await launch({ ...other, args });
    await halt(on);
    expect(on.logs.filter((l) => MSG.test(String(l.msg)))).to.deep.equal([]);
  });

  it("two podwatches at once (a rolling update's overlap) share their status port (SO_REUSEPORT) and write the same rules without fighting", async () => {
    const other = await otherNode();
    const args = ["--node-name", "node-r", "--resync", "200ms", "--metrics-port", "15999"];
    const first = await launch({ ...other, args });
    const second = await launch({ ...other, args });
    try {
      expect(first.statusPort).to.equal(15999);
      expect(second.statusPort).to.equal(15999);
      api.createPod({ name: "both", nodeName: "node-r", annotations: ON, podIP: ["10.244.9.7", "fd00:9::7"] });
      await waitRules("both's rule", ["default/both 10.244.9.7"], "ipv4", 5_000, other.node);
      await waitRules("both's IPv6 rule", ["default/both fd00:9::7"], "ipv6", 5_000, other.node);
      const writes = (r: Running) => r.logs.filter((l) => WRITES.has(String(l.msg))).length;
      // Settled: neither has written for a second (their first passes may still write on a busy machine). Two
      // that fight never settle, and this times out.
      let seen = -1;
      await waitFor("both podwatches to settle (a second without a write)", () => {
        const n = writes(first) + writes(second);
        const quiet = n === seen;
        seen = n;
        return quiet;
      }, 15_000, 1_000);
      const before = await tables(other.node);
      const [w1, w2] = [writes(first), writes(second)];
      const passes = (r: Running) => r.logs.filter((l) => l.msg === "reconciled").length;
      const [p1, p2] = [passes(first), passes(second)];
      await sleep(2_000); // some ten resync passes each
      expect(passes(first) - p1, "passes of the first").to.be.at.least(5);
      expect(passes(second) - p2, "passes of the second").to.be.at.least(5);
      expect(writes(first) - w1, "writes of the first").to.equal(0);
      expect(writes(second) - w2, "writes of the second").to.equal(0);
      expect(await tables(other.node)).to.equal(before);
      // One jump per chain, hook and family: PREROUTING (redirect), INPUT (guard), INPUT and FORWARD (enforce).
      expect(owned(before).filter((l) => l.startsWith("-A INPUT") || l.startsWith("-A FORWARD") || l.startsWith("-A PREROUTING"))).to.have.length(8);
      // The old one goes (SIGTERM, its DaemonSet unknown to it): the new one still answers on the port.
      await halt(first);
      expect((await other.node.must("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:15999/healthz"]))).to.equal("200");
      expect(await tables(other.node)).to.equal(before);
    } finally {
      await halt(first);
      await halt(second);
      api.deletePod("default", "both", { gracePeriodSeconds: 0 });
    }
  });

  describe("its final stop (SIGTERM) and the DaemonSet (--daemonset)", () => {
    const DS = ["tproxy-system", "tproxy"] as const;
    const flags = (nodeName: string) => ["--node-name", nodeName, "--resync", LONG_RESYNC, "--metrics-port", "0", "--daemonset", DS.join("/")];

    async function started(nodeName: string, locked: string | undefined): Promise<{ other: { node: Netns; exposure: Exposure }; running: Running }> {
      const other = await otherNode();
      if (locked) api.createPod({ name: locked, nodeName, annotations: ON, podIP: ["10.244.8.5", "fd00:8::5"] });
      const running = await launch({ ...other, args: flags(nodeName) });
      if (locked) {
        await waitRules(`${locked}'s rule`, [`default/${locked} 10.244.8.5`], "ipv4", 5_000, other.node);
        await waitRules(`${locked}'s IPv6 rule`, [`default/${locked} fd00:8::5`], "ipv6", 5_000, other.node);
      }
      else await waitFor("the first pass", () => running.logs.some((l) => l.msg === "reconciled"), 5_000);
      return { other, running };
    }

    afterEach(() => {
      api.deleteDaemonSet(...DS);
      api.forbidDaemonSets = false;
    });

    it("with the DaemonSet still there (a rolling update, a restart): leaves every chain and jump for the next podwatch", async () => {
      api.putDaemonSet(...DS);
      const { other, running } = await started("node-u1", "kept");
      const before = await tables(other.node);
      expect(owned(before).some((l) => l.startsWith("-A TPROXY-GUARD "))).to.equal(true);
      await halt(running);
      expect(running.logs.some((l) => String(l.msg).includes("the daemonset is still there"))).to.equal(true);
      expect(await tables(other.node)).to.equal(before);
      api.deletePod("default", "kept", { gracePeriodSeconds: 0 });
    });

    it("with --cni-socket: leaves no CNI uninstall marker on a restart, and one beside the socket on an uninstall (the install-cni container acts on it)", async () => {
      const dir = mkdtempSync(join(tmpdir(), "podwatch-cni-marker-"));
      const sock = join(dir, "cni.sock");
      try {
        api.putDaemonSet(...DS);
        const other = await otherNode();
        const args = [...flags("node-u9"), "--cni-socket", sock];
        // A marker of an earlier uninstall goes at start: it must not take the plugin off this install's node.
        writeFileSync(`${sock}.uninstall`, "old\n");
        const restart = await launch({ ...other, args });
        await waitFor("the CNI socket", () => existsSync(sock) && !existsSync(`${sock}.uninstall`), 5_000);
        await halt(restart);
        expect(existsSync(`${sock}.uninstall`)).to.equal(false);
        api.deleteDaemonSet(...DS);
        const uninstall = await launch({ ...other, args });
        await waitFor("the CNI socket", () => existsSync(sock), 5_000);
        await halt(uninstall);
        expect(readFileSync(`${sock}.uninstall`, "utf8")).to.equal(`daemonset ${DS.join("/")} not found\n`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it("stopped (SIGTERM) while it is still starting: its final stop runs once started (an uninstall's CNI marker is left), not the signal's default", async () => {
      const dir = mkdtempSync(join(tmpdir(), "podwatch-cni-early-"));
      const sock = join(dir, "cni.sock");
      try {
        // The start made slow where it is surely under way: the first iptables program it runs (to choose the
        // backend) waits, once, after leaving a flag the test sees.
        const bin = join(dir, "bin");
        mkdirSync(bin);
        for (const tool of ["iptables-nft-save", "iptables-legacy-save"]) {
          const real = execFileSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" }).trim();
          writeFileSync(join(bin, tool), `#!/bin/sh\nif mkdir ${dir}/slowed 2>/dev/null; then sleep 2; fi\nexec ${real} "$@"\n`, { mode: 0o755 });
        }
        const other = await otherNode();
        const early = await launch({ ...other, args: [...flags("node-u10"), "--cni-socket", sock], env: { PATH: `${bin}:${process.env.PATH ?? ""}` }, unready: true });
        await waitFor("its start to be under way", () => existsSync(join(dir, "slowed")), 5_000);
        expect(existsSync(sock)).to.equal(false);
        await halt(early);
        expect({ code: early.child.exitCode, signal: early.child.signalCode }).to.deep.equal({ code: 0, signal: null });
        expect(early.logs.some((l) => l.msg === "stopping once started")).to.equal(true);
        expect(readFileSync(`${sock}.uninstall`, "utf8")).to.equal(`daemonset ${DS.join("/")} not found\n`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it("with the DaemonSet gone (an uninstall) and no locked pod on the node: removes every chain and jump, both families, nothing else", async () => {
      const { other, running } = await started("node-u2", "leaving");
      await other.node.must("iptables-restore", ["--noflush"], { input: "*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n" });
      expect(owned(await tables(other.node))).to.have.length.above(10);
      api.deletePod("default", "leaving", { gracePeriodSeconds: 0 });
      await waitRules("leaving's rule to go", [], "ipv4", 5_000, other.node);
      await halt(running); // no DaemonSet in the API: 404
      expect(running.logs.some((l) => String(l.msg).startsWith("uninstall: every chain and jump"))).to.equal(true);
      const after = await tables(other.node);
      expect(owned(after)).to.deep.equal([]);
      expect(after).to.include("-A PREROUTING -j KUBE-SERVICES");
    });

    it("refused (403) at its stop after reading the DaemonSet at start, as when helm uninstall has deleted the RoleBinding by then: an uninstall; refused from the start: the chains stay", async () => {
      api.putDaemonSet(...DS);
      const { other, running } = await started("node-u4", undefined);
      await waitFor("the start's read of the DaemonSet", () => api.requests.some((r) => r.startsWith(`GET /apis/apps/v1/namespaces/${DS[0]}/daemonsets/${DS[1]}`)), 5_000);
      expect(owned(await tables(other.node)).length).to.be.above(0);
      api.deleteDaemonSet(...DS); // what a 404 would say is not what this podwatch gets to see:
      api.forbidDaemonSets = true;
      await halt(running);
      expect(running.logs.find((l) => String(l.msg).startsWith("uninstall: every chain"))?.why).to.match(/refused \(403\), though it was readable at start/);
      expect(owned(await tables(other.node))).to.deep.equal([]);

      // Control: never readable (RBAC missing from the start): nothing tells an uninstall, the chains stay.
      const again = await launch({ ...other, args: flags("node-u4") });
      await waitFor("the first pass", () => again.logs.some((l) => l.msg === "reconciled"), 5_000);
      await waitFor("the warning about the unreadable DaemonSet", () => again.logs.some((l) => String(l.msg).startsWith("cannot read this podwatch's daemonset at start")), 5_000);
      const before = await tables(other.node);
      await halt(again);
      expect(again.logs.some((l) => String(l.msg).startsWith("stopping; cannot tell an uninstall from a restart"))).to.equal(true);
      expect(await tables(other.node)).to.equal(before);
    });

    it("with the DaemonSet being deleted while a locked pod runs: keeps that pod's redirect and enforce rules (fail closed), removes the guard, and names the pod in a warning", async () => {
      api.putDaemonSet(...DS, { deleting: true });
      const { other, running } = await started("node-u3", "stays");
      const before = owned(await tables(other.node));
      await halt(running);
      const warning = running.logs.find((l) => l.level === 40 && String(l.msg).startsWith("uninstall: locked pods still run"));
      expect(warning?.lockedPods).to.deep.equal(["default/stays"]);
      const after = owned(await tables(other.node));
      expect(after).to.deep.equal(before.filter((l) => !l.includes("TPROXY-GUARD")));
      expect(after.some((l) => l.includes("-s 10.244.8.5/32") && l.includes("REDIRECT"))).to.equal(true);
      expect(after.some((l) => l.includes("-s 10.244.8.5/32") && l.endsWith("-j DROP"))).to.equal(true);
      api.deletePod("default", "stays", { gracePeriodSeconds: 0 });
    });
  });
});
