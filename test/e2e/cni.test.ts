// CNI mode (lock.mode cni) as a node runs it: tproxy-cni installed by its installer into a "host" CNI bin
// folder (node binary + bundle + wrapper) and last in the host's conflist, chained after the reference bridge and host-local plugins
// (Debian's containernetworking-plugins), run by a runtime stand-in as libcni runs a conflist. The real
// podwatch answers on its --cni-socket from its informer (Kubernetes API stand-in); the real proxy filters.
// Each escape attempt of the locked pod sits beside the same attempt of an unlocked pod through the same chain.
import { expect } from "chai";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { install } from "../../packages/sidecar-init/src/cni/install.ts";
import { bundlePlugin } from "../../packages/sidecar-init/src/cni/bundle.ts";
import { bridgeConflist, CniRuntime, type Conflist, type SandboxPod } from "../support/cni-runtime.ts";
import { CNI_PATH } from "../support/datapath.ts";
import { Netns, uniqueName, waitFor } from "../support/netns.ts";
import { ANNOTATION, DNS_IP, GOOGLE_IP, NODE_NAME, SERVICE_CIDR, SIDECAR_CLI, TutorialWorld } from "../support/tutorial-world.ts";

const PREFIX = "tpcn";
const SUBNET = "10.90.9.0/24";
const GATEWAY = "10.90.9.1";
/** Runs a command with no capability at all: empty bounding set, so even uid 0 gets none on exec. */
const NO_CAPS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs"];

describe("CNI mode: tproxy-cni chained after bridge + host-local (namespaces; Kubernetes API stand-in)", function () {
  this.timeout(60_000);
  let world: TutorialWorld;
  let runtime: CniRuntime;
  let binDir: string;
  let socket: string;
  const netnsOf = (ns: Netns) => `/var/run/netns/${ns.name}`;
  const pods: Netns[] = [];

  /** The cluster's network before tproxy: the reference bridge with host-local, as a node's /etc/cni/net.d holds it. */
  const bridgeNetwork = (): Conflist => bridgeConflist({ name: "tproxy-cni-test", bridge: "cnitp0", subnet: SUBNET, gateway: GATEWAY, dataDir: join(world.dir, "host-local") });
  /** The conflist the installer left (tproxy-cni last), with some of the plugin's keys changed for a test. */
  let installed: Conflist;
  const conflist = (settings: Record<string, unknown> = {}): Conflist => ({ ...installed, plugins: installed.plugins.map((p) => (p.type === "tproxy-cni" ? { ...p, ...settings } : p)) });

  async function newPodNs(): Promise<Netns> {
    const ns = await Netns.create(uniqueName(`${PREFIX}p`));
    pods.push(ns);
    return ns;
  }

  /** Schedules a pod (the API knows it, no IP yet) and creates its sandbox through the chain. */
  async function sandbox(name: string, annotated: boolean, opts: { namespace?: string; create?: boolean; uid?: string; settings?: Record<string, unknown> } = {}) {
    const namespace = opts.namespace ?? "default";
    let uid = opts.uid;
    if (opts.create !== false) {
      const pod = world.api.createPod({ name, namespace, nodeName: NODE_NAME, annotations: annotated ? { [ANNOTATION]: "true" } : {}, phase: "Pending" });
      uid ??= pod.metadata.uid;
    }
    const ns = await newPodNs();
    const id = uniqueName("ctr");
    const pod: SandboxPod = { namespace, name, ...(uid ? { uid } : {}) };
    const list = conflist(opts.settings);
    const added = await runtime.add(list, id, netnsOf(ns), pod);
    return { ns, id, pod, list, added };
  }

  const ipOf = (result: Record<string, unknown> | undefined): string => ((result?.["ips"] as Array<{ address: string }>)[0]?.address ?? "").split("/")[0] ?? "";
  const egressRules = async (ns: Netns) => (await ns.must("iptables-save", ["-t", "filter"])).split("\n").filter((l) => l.includes("TPROXY-EGRESS"));
  const curl = (ns: Netns, args: string[]) => ns.run("curl", ["-sS", "--max-time", "5", ...args], { timeoutMs: 10_000 });

  let locked: Awaited<ReturnType<typeof sandbox>>;
  let plain: Awaited<ReturnType<typeof sandbox>>;
  let lockedIp: string;
  let plainIp: string;

  before(async function () {
    this.timeout(180_000);
    await TutorialWorld.removeLeftovers(PREFIX);
    world = await TutorialWorld.create(PREFIX, { datapath: "veth" });
    await world.installTproxy();
    await world.extraServer("other-port", GOOGLE_IP, 8081, 8443);
    // The chart's DaemonSet in lock.mode cni: podwatch answers on its socket in a hostPath folder.
    socket = join(world.dir, "run-tproxy", "cni.sock");
    await world.podwatch!.stop();
    await world.startPodwatch(["--cni-socket", socket]);
    await waitFor("podwatch's CNI socket", () => existsSync(socket), 15_000);
    // The installer on a "host": node + bundle + wrapper in its CNI bin folder (the conflist is the test's).
    binDir = join(world.dir, "opt-cni-bin");
    const confDir = join(world.dir, "etc-cni-net.d");
    mkdirSync(binDir, { recursive: true });
    mkdirSync(confDir, { recursive: true });
    writeFileSync(join(confDir, "10-bridge.conflist"), JSON.stringify(bridgeNetwork()));
    const settings = { socket, allowDns: [DNS_IP], blockCidrs: [SERVICE_CIDR], excludeNamespaces: ["kube-system"], askTimeoutMs: 1500 };
    install({ binDir, confDir, nodeBinary: process.execPath, bundle: await bundlePlugin(join(world.dir, "tproxy-cni.cjs")), settings });
    installed = JSON.parse(readFileSync(join(confDir, "10-bridge.conflist"), "utf8")) as Conflist;
    // The runtime finds tproxy-cni in the installed folder, bridge and host-local in Debian's.
    runtime = new CniRuntime(world.node, [binDir, CNI_PATH]);
    locked = await sandbox("cni-locked", true);
    plain = await sandbox("cni-plain", false);
    expect(locked.added.ok, locked.added.failed?.stdout).to.equal(true);
    expect(plain.added.ok, plain.added.failed?.stdout).to.equal(true);
    lockedIp = ipOf(locked.added.result);
    plainIp = ipOf(plain.added.result);
    // The kubelet reports the sandbox's address; podwatch then redirects the locked pod.
    world.api.setPodIP("default", "cni-locked", lockedIp, "Pending");
    world.api.setPodIP("default", "cni-plain", plainIp, "Running");
    await world.waitForRedirect(lockedIp, true, 15_000);
  });
  after(async () => {
    for (const ns of pods) await ns.destroy().catch(() => undefined);
    await world?.close();
  });

  it("ADD prints the previous plugin's result unchanged, for a locked pod and an unlocked one", () => {
    // The runtime ran the installer's conflist: the cluster's bridge, then tproxy-cni through its wrapper.
    expect(installed.plugins.map((p) => p.type)).to.deep.equal(["bridge", "tproxy-cni"]);
    for (const sb of [locked, plain]) {
      expect(sb.added.runs.map((r) => [r.type, r.code])).to.deep.equal([["bridge", 0], ["tproxy-cni", 0]]);
      expect(JSON.parse(sb.added.runs[1]!.stdout)).to.deep.equal(JSON.parse(sb.added.runs[0]!.stdout));
    }
    expect(lockedIp.startsWith("10.90.9.")).to.equal(true);
  });

  it("locks the annotated pod's namespace with exactly the chain sidecar-init writes; the unannotated pod's has none", async () => {
    const rules = await egressRules(locked.ns);
    expect(rules[0]).to.equal(":TPROXY-EGRESS - [0:0]");
    expect((await locked.ns.must("iptables-save", ["-t", "filter"])).split("\n").filter((l) => l.startsWith("-A OUTPUT"))).to.deep.equal(["-A OUTPUT -j TPROXY-EGRESS"]);
    // sidecar-init's own rendering for the same pod and settings (--dry-run, run in the pod) has the same rules.
    // Both families: the dry run prints the IPv4 transaction, then the IPv6 one.
    const dry = await locked.ns.must(process.execPath, [SIDECAR_CLI, "--dry-run", "--allow-dns", DNS_IP, "--block-cidr", SERVICE_CIDR, "--log-level", "silent"]);
    const [dry4 = "", dry6 = ""] = dry.split("# IPv6");
    const chainOf = (text: string) => text.split("\n").filter((l) => l.startsWith("-A TPROXY-EGRESS "));
    expect(chainOf(dry4).length).to.be.above(5);
    expect(chainOf(dry6).length).to.be.above(3);
    expect(rules.filter((l) => l.startsWith("-A TPROXY-EGRESS "))).to.deep.equal(chainOf(dry4));
    expect(chainOf(await locked.ns.must("ip6tables-save", ["-t", "filter"]))).to.deep.equal(chainOf(dry6));
    expect(rules).to.include(`-A TPROXY-EGRESS -s ${lockedIp}/32 -d ${DNS_IP}/32 -p udp -m udp --dport 53 -j ACCEPT`);
    expect(await egressRules(plain.ns)).to.deep.equal([]);
  });

  it("refuses another TCP port from the locked pod at once; the unlocked pod reaches it", async () => {
    expect((await curl(plain.ns, [`http://${GOOGLE_IP}:8081/`])).stdout.trim()).to.equal("other-port GET /");
    const r = await curl(locked.ns, [`http://${GOOGLE_IP}:8081/`]);
    expect(r.code).to.equal(7);
    expect(r.stderr).to.match(/Couldn't connect to server/);
  });

  it("refuses ICMP (raw socket) from the locked pod; the unlocked pod's ping is answered", async () => {
    const ping = (ns: Netns) => ns.run("ping", ["-c", "1", "-W", "2", GOOGLE_IP], { timeoutMs: 10_000 });
    expect((await ping(plain.ns)).code).to.equal(0);
    const r = await ping(locked.ns);
    expect(r.code).to.not.equal(0);
    // EPERM: refused in the pod's own namespace (the node's enforce chain would only drop it silently).
    expect(r.stdout + r.stderr).to.match(/Operation not permitted/);
  });

  it("sidecar-init --mode wait, without any capability, succeeds in the locked pod once the node intercepts it; the proxy's filter answers", async () => {
    // The control: the same process without capabilities cannot write rules (lock mode refuses).
    const caps = await locked.ns.run(NO_CAPS[0]!, [...NO_CAPS.slice(1), "grep", "^CapEff", "/proc/self/status"]);
    expect(caps.stdout.trim()).to.equal("CapEff:\t0000000000000000");
    const lockMode = await locked.ns.run(NO_CAPS[0]!, [...NO_CAPS.slice(1), process.execPath, SIDECAR_CLI, "--allow-dns", DNS_IP, "--no-wait"], { timeoutMs: 20_000 });
    expect(lockMode.code).to.equal(3);
    expect(lockMode.stderr).to.match(/missing capability NET_ADMIN/);
    const wait = await locked.ns.run(NO_CAPS[0]!, [...NO_CAPS.slice(1), process.execPath, SIDECAR_CLI, "--mode", "wait", "--wait-timeout", "20s"], { timeoutMs: 30_000 });
    expect(wait.code, wait.stderr).to.equal(0);
    expect(wait.stderr).to.match(/lock in place/);
    expect(wait.stderr).to.match(/interception live/);
    // The filter's answer (the tutorial's 418) for the locked pod; the site itself for the unlocked one.
    const resolve = ["--resolve", `www.google.com:80:${GOOGLE_IP}`, "-w", "%{http_code}", "http://www.google.com/"];
    expect((await curl(locked.ns, resolve)).stdout.replace(/\n/g, "")).to.equal("Access Denied by Administrator418");
    expect((await curl(plain.ns, resolve)).stdout.replace(/\n/g, "")).to.equal("www.google.com GET /200");
  });

  it("sidecar-init --mode wait holds the pod until the node redirects it (the kubelet reports the address after the sandbox)", async () => {
    const sb = await sandbox("cni-late", true);
    expect(sb.added.ok, sb.added.failed?.stdout).to.equal(true);
    const wait = world.spawn(sb.ns, NO_CAPS[0]!, [...NO_CAPS.slice(1), process.execPath, SIDECAR_CLI, "--mode", "wait", "--wait-timeout", "30s"]);
    await wait.waitForLine(/lock in place/, 10_000);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(wait.child.exitCode, "still waiting: no redirect yet").to.equal(null);
    world.api.setPodIP("default", "cni-late", ipOf(sb.added.result), "Pending");
    if (wait.child.exitCode === null) await new Promise((r) => wait.child.once("exit", r));
    expect(wait.child.exitCode, wait.output).to.equal(0);
    expect(wait.output).to.match(/interception live/);
  });

  it("sidecar-init --mode wait fails, saying so, in a pod the plugin did not lock", async () => {
    const r = await plain.ns.run(NO_CAPS[0]!, [...NO_CAPS.slice(1), process.execPath, SIDECAR_CLI, "--mode", "wait", "--wait-timeout", "2s"], { timeoutMs: 20_000 });
    expect(r.code).to.equal(5);
    expect(r.stderr).to.match(/not locked \(--mode wait\)/);
  });

  it("CHECK passes on the locked pod and fails with a CNI error once a rule of its lock is gone", async () => {
    const sb = await sandbox("cni-check", true);
    expect(sb.added.ok).to.equal(true);
    expect((await runtime.check(sb.list, sb.id, netnsOf(sb.ns), sb.pod)).ok).to.equal(true);
    await sb.ns.must("iptables", ["-D", "TPROXY-EGRESS", "-o", "lo", "-j", "ACCEPT"]);
    const r = await runtime.check(sb.list, sb.id, netnsOf(sb.ns), sb.pod);
    expect(r.failed?.type).to.equal("tproxy-cni");
    expect(r.failed?.code).to.equal(1);
    const err = JSON.parse(r.failed!.stdout) as { cniVersion: string; code: number; msg: string };
    expect(err).to.include({ cniVersion: "1.0.0", code: 101 });
    expect(err.msg).to.match(/not in place: ipv4: 1 rule\(s\) of TPROXY-EGRESS missing, first: -A TPROXY-EGRESS -o lo -j ACCEPT/);
  });

  it("DEL succeeds, and again once the namespace is gone", async () => {
    const sb = await sandbox("cni-del", true);
    expect(sb.added.ok).to.equal(true);
    expect((await runtime.del(sb.list, sb.id, netnsOf(sb.ns), sb.pod)).ok).to.equal(true);
    await sb.ns.destroy();
    const again = await runtime.del(sb.list, sb.id, "", sb.pod);
    const tp = again.runs.find((r) => r.type === "tproxy-cni")!;
    expect([tp.code, tp.stdout]).to.deep.equal([0, ""]);
  });

  it("VERSION lists the versions it speaks", async () => {
    const r = await runtime.raw("tproxy-cni", { CNI_COMMAND: "VERSION" }, "");
    expect(r.code).to.equal(0);
    expect(JSON.parse(r.stdout)).to.deep.equal({ cniVersion: "1.0.0", supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] });
  });

  describe("fails closed: ADD fails with a CNI error when whether the pod is locked cannot be learned", () => {
    const failedWith = (added: Awaited<ReturnType<typeof sandbox>>["added"]) => {
      expect(added.ok).to.equal(false);
      expect(added.runs.map((r) => [r.type, r.code])).to.deep.equal([["bridge", 0], ["tproxy-cni", 1]]);
      return JSON.parse(added.failed!.stdout) as { cniVersion: string; code: number; msg: string; details: string };
    };

    it("podwatch not reachable (no socket): try again later (11); the runtime tears the sandbox down", async () => {
      const sb = await sandbox("cni-nopodwatch", true, { settings: { socket: join(world.dir, "nothing-here.sock") } });
      const err = failedWith(sb.added);
      expect(err).to.include({ cniVersion: "1.0.0", code: 11 });
      expect(err.msg).to.match(/cannot tell whether pod default\/cni-nopodwatch must be locked: cannot reach podwatch at .*: ENOENT/);
      expect(err.details).to.match(/failing closed/);
      expect((await runtime.del(sb.list, sb.id, netnsOf(sb.ns), sb.pod)).ok).to.equal(true);
    });

    it("a pod podwatch does not know: 11", async () => {
      const err = failedWith((await sandbox("cni-unknown", true, { create: false })).added);
      expect(err.code).to.equal(11);
      expect(err.msg).to.match(/podwatch does not know pod default\/cni-unknown/);
    });

    it("another pod's uid (a recreated pod the cache does not have yet): 11", async () => {
      const err = failedWith((await sandbox("cni-wronguid", true, { uid: "00000000-0000-0000-0000-000000000000" })).added);
      expect(err.code).to.equal(11);
      expect(err.msg).to.match(/with uid [0-9a-f-]{36}, not the uid 00000000-0000-0000-0000-000000000000 being created/);
    });

    it("control: a pod of an excluded namespace passes unlocked even with podwatch unreachable", async () => {
      const sb = await sandbox("coredns-x", false, { namespace: "kube-system", create: false, settings: { socket: join(world.dir, "nothing-here.sock") } });
      expect(sb.added.ok, sb.added.failed?.stdout).to.equal(true);
      expect(await egressRules(sb.ns)).to.deep.equal([]);
    });
  });
});
