// Escapes the in-pod lock cannot stop, caught on the node: raw Ethernet frames written with AF_PACKET
// (the pod's OUTPUT hooks never see them) and the lock's annotation removed through the API. What the
// node does here is podwatch's filter chain TPROXY-ENFORCE and its spec-keyed redirect; every "nothing
// arrived" is shown beside a control that does arrive, sent on the same path after it.
import { expect } from "chai";
import { join } from "node:path";
import { waitFor } from "../support/netns.ts";
import { RAW_FRAME } from "../support/raw-frame.ts";
import { REPO, type Proc } from "../support/world.ts";
import { wiringTitle } from "../support/datapath.ts";
import {
  ANNOTATION, APP_IP, DNS_IP, GOOGLE_IP, LOCKED_IP, SIDECAR_INIT_CONTAINER, TutorialWorld, type PodNs,
} from "../support/tutorial-world.ts";

const UDP_ECHO = join(REPO, "test/support/udp-echo.ts");
const UDP_PORT = 9999;
const TCP_PORT = 8081;

describe(`escapes caught on the node: raw frames and the lock's annotation removed (namespaces, ${wiringTitle()}; Kubernetes API stand-in)`, function () {
  this.timeout(60_000);
  let world: TutorialWorld;
  let echo: Proc;
  const savedLogLevel = process.env.TPROXY_LOG_LEVEL;

  before(async function () {
    this.timeout(120_000);
    // podwatch's debug lines ("pod event", "reconciled") let the tests await the pass after an API change.
    process.env.TPROXY_LOG_LEVEL = "debug";
    try {
      world = await TutorialWorld.installed("tpxn");
    } finally {
      if (savedLogLevel === undefined) delete process.env.TPROXY_LOG_LEVEL;
      else process.env.TPROXY_LOG_LEVEL = savedLogLevel;
    }
    echo = world.spawn(world.internet, process.execPath, [UDP_ECHO, GOOGLE_IP, String(UDP_PORT), "53"]);
    await echo.waitForLine(/listening/);
    // The internet host counts TCP SYNs to TCP_PORT per source: its receiver for frames no socket answers.
    for (const ip of [LOCKED_IP, APP_IP]) {
      await world.internet.must("iptables", ["-I", "INPUT", "-s", ip, "-p", "tcp", "--dport", String(TCP_PORT), "--tcp-flags", "SYN,ACK", "SYN", "-m", "comment", "--comment", `syn-from-${ip}`]);
    }
  });
  after(async () => {
    await world?.close();
  });

  /** The pod's interface, and the MAC of the node's side of its link (its gateway). */
  async function linkOf(pod: PodNs): Promise<{ ifname: string; gatewayMac: string }> {
    const mine = (await pod.ns.must("ip", ["-o", "-4", "addr", "show"])).split("\n").find((l) => l.includes(` ${pod.ip}/`));
    const ifname = mine?.split(/\s+/)[1]?.replace(/@.*/, "") ?? "";
    const gateway = pod.ip.replace(/\.\d+$/, ".1");
    const nodeSide = (await world.node.must("ip", ["-o", "-4", "addr", "show"])).split("\n").find((l) => l.includes(` ${gateway}/`));
    // A datapath whose node side has no address (Calico's) names its device in the world's links.
    const nodeIf = world.links.get(pod.ns.name)?.nodeDevice ?? nodeSide?.split(/\s+/)[1]?.replace(/@.*/, "") ?? "";
    const gatewayMac = /link\/ether (\S+)/.exec(await world.node.must("ip", ["-o", "link", "show", "dev", nodeIf]))?.[1] ?? "";
    expect(ifname, "pod interface").to.not.equal("");
    expect(gatewayMac, "gateway MAC").to.match(/^[0-9a-f:]{17}$/);
    return { ifname, gatewayMac };
  }

  async function rawFrame(pod: PodNs, proto: "udp" | "tcp", dst: string, port: number, payload: string): Promise<void> {
    const { ifname, gatewayMac } = await linkOf(pod);
    const out = await pod.ns.must("python3", ["-c", RAW_FRAME, ifname, gatewayMac, pod.ip, dst, proto, String(port), payload], { timeoutMs: 10_000 });
    expect(out).to.match(/^sent \d+/);
  }

  const arrived = (payload: string) => echo.lines.filter((l) => l.endsWith(` ${payload}`));
  async function synsFrom(ip: string): Promise<number> {
    const listing = await world.internet.must("iptables", ["-nvxL", "INPUT"]);
    const line = listing.split("\n").find((l) => l.includes(`syn-from-${ip} `));
    return Number(line?.trim().split(/\s+/)[0] ?? Number.NaN);
  }
  async function udp(pod: PodNs, host: string, port: number, text: string): Promise<{ error: string | null; reply?: string | null }> {
    return JSON.parse(await pod.ns.must(process.execPath, [UDP_ECHO, "send", host, String(port), text], { timeoutMs: 10_000 })) as { error: string | null; reply?: string | null };
  }
  const enforceChain = async () => (await world.node.must("iptables-save", ["-t", "filter"])).split("\n").filter((l) => l.startsWith("-A TPROXY-ENFORCE "));

  /** Waits for podwatch's pass after the next event of `pod` (from the log lines from `from` on). */
  async function passAfterEvent(from: number, verb: string, pod: string): Promise<void> {
    const pw = world.podwatch!;
    const parsed = () => pw.lines.map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {};
      }
    });
    let at = -1;
    await waitFor(`podwatch to see "${verb}" of ${pod}`, () => (at = parsed().findIndex((l, i) => i >= from && l.msg === "pod event" && l.verb === verb && l.pod === pod)) >= 0, 5_000);
    await waitFor(`a pass after "${verb}" of ${pod}`, () => parsed().some((l, i) => i > at && l.msg === "reconciled"), 5_000);
  }

  it("raw UDP and TCP SYN frames from the locked pod, with its own source address, never reach the internet host; the same from the unlocked pod do", async () => {
    // The locked pod's frames go first; the control's, sent after them on the same node, arriving proves
    // the node has handled the earlier ones.
    await rawFrame(world.locked, "udp", GOOGLE_IP, UDP_PORT, "raw-udp-locked");
    await rawFrame(world.locked, "tcp", GOOGLE_IP, TCP_PORT, "raw-syn-locked");
    await rawFrame(world.app, "udp", GOOGLE_IP, UDP_PORT, "raw-udp-app");
    await rawFrame(world.app, "tcp", GOOGLE_IP, TCP_PORT, "raw-syn-app");
    await waitFor("the unlocked pod's raw UDP frame to arrive", () => arrived("raw-udp-app").length === 1, 5_000);
    await waitFor("the unlocked pod's raw SYN to arrive", async () => (await synsFrom(APP_IP)) >= 1, 5_000);
    expect(arrived("raw-udp-app")).to.deep.equal([`got ${APP_IP} ${UDP_PORT} raw-udp-app`]);
    expect(arrived("raw-udp-locked")).to.deep.equal([]);
    expect(await synsFrom(LOCKED_IP)).to.equal(0);
    // The node's chain is what dropped them: its DROP for the locked address counted them.
    const drop = (await world.node.must("iptables", ["-nvxL", "TPROXY-ENFORCE"])).split("\n").find((l) => / DROP /.test(l) && l.includes(LOCKED_IP));
    expect(Number(drop?.trim().split(/\s+/)[0])).to.be.at.least(2);
  });

  it("holds a locked address on its own, without any in-pod lock: only allowed DNS leaves; the same traffic flows with the enforce chain flushed, and podwatch restores it", async () => {
    // A pod whose spec has the lock's init container, which never ran: nothing inside it refuses anything.
    const bare = await world.addPod("spec-locked-bare");
    world.schedulePod(bare, false, { initContainers: [SIDECAR_INIT_CONTAINER] });
    await waitFor("the node's DROP for the bare pod", async () => (await enforceChain()).some((l) => l.includes(`-s ${bare.ip}/32`) && l.endsWith("-j DROP")), 10_000, 100);
    await world.internet.must("iptables", ["-I", "INPUT", "-s", bare.ip, "-p", "tcp", "--dport", String(TCP_PORT), "--tcp-flags", "SYN,ACK", "SYN", "-m", "comment", "--comment", `syn-from-${bare.ip}`]);

    expect(await udp(bare, GOOGLE_IP, UDP_PORT, "bare-udp")).to.deep.equal({ error: null, reply: null });
    expect(await udp(bare, GOOGLE_IP, 53, "bare-dns-elsewhere")).to.deep.equal({ error: null, reply: null });
    await rawFrame(bare, "tcp", GOOGLE_IP, TCP_PORT, "bare-syn");
    const tcp = await world.curlFrom(bare, [`http://${GOOGLE_IP}:${TCP_PORT}/`], 2);
    expect(tcp.code, "curl to another port").to.equal(28); // timed out: the SYNs vanish, nothing refuses them
    // DNS to the allowed resolver (lock.allowDns) is the one thing that leaves; an echo server answers there.
    const resolver = world.spawn(world.internet, process.execPath, [UDP_ECHO, DNS_IP, "53"]);
    await resolver.waitForLine(/listening/);
    expect(await udp(bare, DNS_IP, 53, "bare-dns")).to.deep.equal({ error: null, reply: "echo: bare-dns" });
    expect(arrived("bare-udp")).to.deep.equal([]);
    expect(arrived("bare-dns-elsewhere")).to.deep.equal([]);
    expect(await synsFrom(bare.ip)).to.equal(0);

    // Control: the chain flushed, the very same traffic gets out.
    await world.node.must("iptables", ["-F", "TPROXY-ENFORCE"]);
    try {
      expect(await udp(bare, GOOGLE_IP, UDP_PORT, "bare-udp-flushed")).to.deep.equal({ error: null, reply: "echo: bare-udp-flushed" });
      await rawFrame(bare, "tcp", GOOGLE_IP, TCP_PORT, "bare-syn-flushed");
      await waitFor("the bare pod's SYN to arrive with the chain flushed", async () => (await synsFrom(bare.ip)) >= 1, 5_000);
    } finally {
      // podwatch's first pass after a start repairs the chain.
      await world.podwatch!.stop();
      process.env.TPROXY_LOG_LEVEL = "debug";
      try {
        await world.startPodwatch();
      } finally {
        if (savedLogLevel === undefined) delete process.env.TPROXY_LOG_LEVEL;
        else process.env.TPROXY_LOG_LEVEL = savedLogLevel;
      }
      await waitFor("the enforce chain back", async () => (await enforceChain()).some((l) => l.includes(`-s ${bare.ip}/32`) && l.endsWith("-j DROP")), 10_000, 100);
    }
    expect(await udp(bare, GOOGLE_IP, UDP_PORT, "bare-udp-again")).to.deep.equal({ error: null, reply: null });
    expect(arrived("bare-udp-again")).to.deep.equal([]);
  });

  it("the locked pod still serves: the node (a kubelet probe) and the internet host get answers from a server in it", async () => {
    const server = world.spawn(world.locked.ns, "python3", ["-m", "http.server", "8000", "--bind", LOCKED_IP]);
    await waitFor("the pod's server", async () => (await world.locked.ns.run("ss", ["-ltnH"])).stdout.includes(`${LOCKED_IP}:8000`), 5_000);
    for (const from of [world.node, world.internet]) {
      const r = await from.run("curl", ["-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", `http://${LOCKED_IP}:8000/`], { timeoutMs: 10_000 });
      expect(r.stdout, `from ${from.name}: ${r.stderr}`).to.equal("200");
    }
    await server.stop();
  });

  it("the lock's annotation patched off through the API: the locked pod's https to a denied site still gets the filter's 418; a pod locked by annotation only goes direct", async () => {
    const deny = ["-k", "-o", "/dev/null", "-w", "%{http_code}", "https://www.google.com/"];
    // Control first: a pod with the annotation but neither the init container in its spec nor an in-pod lock.
    const loose = await world.addPod("annotation-only");
    world.kubelet.startPod({ name: loose.name, ip: loose.ip, annotations: { [ANNOTATION]: "true" } });
    await world.waitForRedirect(loose.ip);
    expect((await world.curlFrom(loose, deny)).stdout, "annotated: filtered").to.equal("418");

    const from = world.podwatch!.lines.length;
    world.api.updatePod("default", loose.name, { metadata: { annotations: { [ANNOTATION]: null } } });
    world.api.updatePod("default", world.locked.name, { metadata: { annotations: { [ANNOTATION]: null } } });
    try {
      await passAfterEvent(from, "update", `default/${world.locked.name}`);
      await world.waitForRedirect(loose.ip, false);
      expect((await world.curlFrom(loose, deny)).stdout, "annotation removed, nothing in its spec: direct").to.equal("200");
      const body = await world.curlFrom(loose, ["-k", "https://www.google.com/"]);
      expect(body.stdout).to.equal("www.google.com GET /\n");

      expect(world.api.getPod("default", world.locked.name)?.metadata.annotations?.[ANNOTATION]).to.equal(undefined);
      const r = await world.curlFrom(world.locked, ["-w", "\n%{http_code}", "https://www.google.com/"]);
      expect(r.stdout, "the locked pod, its annotation removed").to.equal("Access Denied by Administrator\n418");
      expect(await world.node.must("iptables-save", ["-t", "nat"])).to.include(`-s ${LOCKED_IP}/32`);
      // "false" instead of removed: the same.
      const again = world.podwatch!.lines.length;
      world.api.updatePod("default", world.locked.name, { metadata: { annotations: { [ANNOTATION]: "false" } } });
      await passAfterEvent(again, "update", `default/${world.locked.name}`);
      expect((await world.curlFrom(world.locked, deny)).stdout).to.equal("418");
    } finally {
      world.api.updatePod("default", world.locked.name, { metadata: { annotations: { [ANNOTATION]: "true" } } });
    }
  });
});
