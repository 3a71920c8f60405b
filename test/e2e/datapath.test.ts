// Interception and the lock on the datapaths clusters use (test/support/datapath.ts): the reference CNI
// plugins' bridge (a gateway address on the node's bridge, as kubenet) and Calico's wiring (the node's
// veth has no address; proxy ARP; the pod routes via 169.254.1.1 onlink). On each, the tutorial's
// locked pod is locked by the real sidecar-init and intercepted by the real podwatch and proxy, with the
// chart's setting: DNAT to the node's address. Each escape attempt sits beside its control from the
// unlocked pod. REDIRECT, podwatch's target without an address, is shown working on the bridge and
// failing on the Calico-like wiring: the reason for the DNAT.
import { expect } from "chai";
import { join } from "node:path";
import { BRIDGE_GATEWAY, BRIDGE_NAME, BRIDGE_SUBNET, CALICO_GATEWAY, CALICO_GATEWAY6, CALICO_MAC, type Datapath } from "../support/datapath.ts";
import { waitFor } from "../support/netns.ts";
import { RAW_FRAME } from "../support/raw-frame.ts";
import { REPO, TRANSPARENT_PORT, type Proc } from "../support/world.ts";
import { BUCKET_URL, GOOGLE_IP, NODE_IP, TutorialWorld, type PodNs } from "../support/tutorial-world.ts";

const UDP_ECHO = join(REPO, "test/support/udp-echo.ts");
const UDP_PORT = 9999;

const CASES: Array<{ datapath: Exclude<Datapath, "veth">; prefix: string; redirectWorks: boolean }> = [
  { datapath: "bridge-cni", prefix: "tpdb", redirectWorks: true },
  { datapath: "calico", prefix: "tpdc", redirectWorks: false },
];

for (const { datapath, prefix, redirectWorks } of CASES) {
  describe(`datapath ${datapath}: interception and the lock (namespaces; Kubernetes API stand-in)`, function () {
    this.timeout(60_000);
    let world: TutorialWorld;
    let echo: Proc;

    before(async function () {
      this.timeout(120_000);
      // podwatch DNATs to the node's address, as the chart runs it (TutorialWorld.redirectToAddress). The
      // locked pod's sidecar-init exits 0 only once its probe got through the node's proxy.
      world = await TutorialWorld.installed(prefix, { datapath });
      expect(world.redirectToAddress).to.equal(NODE_IP);
      await world.extraServer("other-port", GOOGLE_IP, 8081, 8443);
      echo = world.spawn(world.internet, process.execPath, [UDP_ECHO, GOOGLE_IP, "53", String(UDP_PORT)]);
      await echo.waitForLine(/listening/);
    });
    after(async () => {
      await world?.close();
    });

    const natRules = async () => (await world.node.must("iptables-save", ["-t", "nat"])).split("\n").filter((l) => l.startsWith("-A TPROXY-REDIRECT "));
    /** Packets a rule of the chain counted, found by a piece of its listing. */
    const counted = async (table: string, chain: string, piece: string): Promise<number> => {
      const line = (await world.node.must("iptables", ["-t", table, "-nvxL", chain])).split("\n").find((l) => l.includes(piece));
      return Number(line?.trim().split(/\s+/)[0] ?? Number.NaN);
    };
    const get = async (pod: PodNs, url: string, maxTime = 5) => {
      const r = await world.curlFrom(pod, ["-s", "-w", "%{http_code}", url], maxTime);
      return { code: r.code, status: r.stdout.slice(-3), body: r.stdout.slice(0, -3).replace(/\n$/, "") };
    };
    const wantedRule = (target: string) => `-A TPROXY-REDIRECT -s ${world.locked.ip}/32 -p tcp -m multiport --dports 80,443 -m comment --comment "default/debian-app-locked" ${target}`;
    async function restartPodwatch(redirectToAddress: string | undefined, target: string): Promise<void> {
      world.redirectToAddress = redirectToAddress;
      await world.podwatch?.stop();
      await world.startPodwatch();
      await waitFor(`podwatch's rule "${target}"`, async () => (await natRules()).join("\n") === wantedRule(target), 10_000, 100);
    }

    it(datapath === "bridge-cni"
      ? "wires the pods with the reference bridge and host-local plugins: the bridge holds the gateway address"
      : "wires the pods as Calico does: no address on the node's veth, proxy ARP, a /32 route, the pod's default via 169.254.1.1 onlink", async () => {
      const podAddr = await world.locked.ns.must("ip", ["-o", "-4", "addr", "show", "dev", "eth0"]);
      const podRoute = await world.locked.ns.must("ip", ["-4", "route", "show", "default"]);
      const nodeDevice = world.links.get(world.locked.ns.name)!.nodeDevice;
      if (datapath === "bridge-cni") {
        const results = [...world.cni!.results.values()];
        expect(results.map((r) => r.ips?.map((i) => [i.address, i.gateway]))).to.deep.equal([
          [[`${world.app.ip}/24`, BRIDGE_GATEWAY]],
          [[`${world.locked.ip}/24`, BRIDGE_GATEWAY]],
        ]);
        expect(world.locked.ip.startsWith(BRIDGE_SUBNET.replace(/0\/24$/, ""))).to.equal(true);
        expect(nodeDevice).to.equal(BRIDGE_NAME);
        expect(await world.node.must("ip", ["-o", "-4", "addr", "show", "dev", BRIDGE_NAME])).to.include(`inet ${BRIDGE_GATEWAY}/24`);
        expect(podAddr).to.include(`inet ${world.locked.ip}/24`);
        expect(podRoute).to.match(new RegExp(`^default via ${BRIDGE_GATEWAY.replace(/\./g, "\\.")} dev eth0`));
      } else {
        expect(nodeDevice).to.match(/^cali/);
        expect(await world.node.must("ip", ["-o", "-4", "addr", "show", "dev", nodeDevice])).to.equal("");
        expect((await world.node.must("sysctl", ["-n", `net.ipv4.conf.${nodeDevice}.proxy_arp`])).trim()).to.equal("1");
        expect(await world.node.must("ip", ["-4", "route", "show", `${world.locked.ip}/32`])).to.match(new RegExp(`^${world.locked.ip.replace(/\./g, "\\.")} dev ${nodeDevice} scope link`));
        expect(podAddr).to.include(`inet ${world.locked.ip}/32`);
        expect(podRoute).to.match(new RegExp(`^default via ${CALICO_GATEWAY.replace(/\./g, "\\.")} dev eth0 onlink`));
        // IPv6 as Calico has it: the pod's /128, its default via the link-local of the node's veth, whose
        // MAC is Calico's ee:ee:ee:ee:ee:ee.
        expect(await world.node.must("ip", ["-o", "link", "show", "dev", nodeDevice])).to.include(`link/ether ${CALICO_MAC} `);
        expect(await world.locked.ns.must("ip", ["-6", "route", "show", "default"])).to.match(new RegExp(`^default via ${CALICO_GATEWAY6} dev eth0`));
      }
    });

    it("intercepts the locked pod with a DNAT to the node's address, written as the kernel prints it back: the proxy reads the original destination, allowed 200 from the right upstream, denied 418; the unlocked pod goes direct", async () => {
      expect(await natRules()).to.deep.equal([wantedRule(`-j DNAT --to-destination ${NODE_IP}:${TRANSPARENT_PORT}`)]);
      const allowed = await get(world.locked, `${BUCKET_URL}x`);
      expect(allowed.status, allowed.body).to.equal("200");
      // The upstream answers with its name: the proxy connected to where the pod meant to go.
      expect(allowed.body).to.equal("storage.googleapis.com GET /solutions-public-assets/x");
      // The proxy answers sidecar-init's probe only on a connection whose original destination it read as
      // 192.0.2.1:80 (SO_ORIGINAL_DST after the DNAT); the same request sent to its port directly, with no
      // original destination to read, gets no such answer (podwatch's guard refuses direct connections
      // to the port: one accepted for this control only).
      const probe = await world.curlFrom(world.locked, ["-s", "-i", "http://192.0.2.1/"]);
      expect(probe.stdout).to.match(/^HTTP\/1\.1 200 [^]*\r\nx-tproxy-probe: ok\r\n/i);
      const pass = ["INPUT", "-p", "tcp", "--dport", String(TRANSPARENT_PORT), "-j", "ACCEPT"];
      await world.node.must("iptables", ["-I", ...pass]);
      const direct = await world.node.run("curl", ["-s", "-i", "--max-time", "5", "-H", "Host: 192.0.2.1", `http://${NODE_IP}:${TRANSPARENT_PORT}/`], { timeoutMs: 10_000 });
      await world.node.must("iptables", ["-D", ...pass]);
      expect(direct.stdout).to.match(/^HTTP\/1\.1 /);
      expect(direct.stdout).not.to.match(/x-tproxy-probe/i);
      const denied = await get(world.locked, "https://www.google.com/");
      expect(denied.status).to.equal("418");
      // The unlocked pod's request is not intercepted: the site itself answers.
      expect(await get(world.app, "https://www.google.com/")).to.include({ status: "200", body: "www.google.com GET /" });
      // The node's DNAT rule took the pod's connections, and the filter chain's "redirected to the proxy"
      // rule (conntrack state DNAT, the proxy port) let them in: DNAT keeps what REDIRECT gave it.
      expect(await counted("nat", "TPROXY-REDIRECT", world.locked.ip)).to.be.at.least(2);
      expect(await counted("filter", "TPROXY-ENFORCE", "redirected to the proxy")).to.be.at.least(2);
    });

    it("refuses another TCP port from the locked pod; the unlocked pod reaches it", async () => {
      expect(await get(world.app, `http://${GOOGLE_IP}:8081/`)).to.include({ status: "200", body: "other-port GET /" });
      const r = await world.curlFrom(world.locked, [`http://${GOOGLE_IP}:8081/`]);
      expect(r.code).to.equal(7);
      expect(r.stdout).to.equal("");
      expect(r.stderr).to.match(/Couldn't connect to server/);
    });

    it("refuses DNS to a resolver that is not allowed (EPERM); the unlocked pod's query gets its echo", async () => {
      const udp = async (pod: PodNs) => JSON.parse(await pod.ns.must(process.execPath, [UDP_ECHO, "send", GOOGLE_IP, "53", `dns from ${pod.name}`], { timeoutMs: 10_000 })) as { error: string | null; reply?: string | null };
      expect(await udp(world.locked)).to.deep.equal({ error: "EPERM" });
      expect(await udp(world.app)).to.deep.equal({ error: null, reply: "echo: dns from debian-app" });
      expect(echo.lines.filter((l) => l.startsWith(`got ${world.locked.ip} `))).to.deep.equal([]);
    });

    it("drops on the node a raw frame the locked pod writes below its lock (AF_PACKET); the unlocked pod's arrives", async () => {
      const send = async (pod: PodNs, payload: string) => {
        const wired = world.links.get(pod.ns.name)!;
        const mac = /link\/ether (\S+)/.exec(await world.node.must("ip", ["-o", "link", "show", "dev", wired.nodeDevice]))?.[1] ?? "";
        expect(mac, `MAC of ${wired.nodeDevice}`).to.match(/^[0-9a-f:]{17}$/);
        expect(await pod.ns.must("python3", ["-c", RAW_FRAME, wired.podIf, mac, pod.ip, GOOGLE_IP, "udp", String(UDP_PORT), payload], { timeoutMs: 10_000 })).to.match(/^sent \d+/);
      };
      // The locked pod's frame goes first: the control's arriving after it shows the node handled both.
      await send(world.locked, "raw-locked");
      await send(world.app, "raw-app");
      await waitFor("the unlocked pod's raw frame to arrive", () => echo.lines.some((l) => l.endsWith(" raw-app")), 5_000);
      expect(echo.lines.filter((l) => l.endsWith(" raw-app"))).to.deep.equal([`got ${world.app.ip} ${UDP_PORT} raw-app`]);
      expect(echo.lines.filter((l) => l.endsWith(" raw-locked"))).to.deep.equal([]);
    });

    it(redirectWorks
      ? "REDIRECT (podwatch without --redirect-to-address) works here too: the bridge has an address"
      : "REDIRECT (podwatch without --redirect-to-address) fails here: the kernel drops the pod's SYNs, as the node's veth has no address; DNAT again fixes it", async function () {
      this.timeout(90_000);
      try {
        await restartPodwatch(undefined, `-j REDIRECT --to-ports ${TRANSPARENT_PORT}`);
        const before = await counted("nat", "TPROXY-REDIRECT", world.locked.ip);
        const r = await get(world.locked, `${BUCKET_URL}redirect`, 3);
        // The rule matched either way; what differs is whether the connection got through.
        expect(await counted("nat", "TPROXY-REDIRECT", world.locked.ip)).to.be.above(before);
        if (redirectWorks) {
          expect(r).to.deep.equal({ code: 0, status: "200", body: "storage.googleapis.com GET /solutions-public-assets/redirect" });
        } else {
          expect(r.code, "curl: operation timed out").to.equal(28);
          expect(r.status).to.equal("000");
        }
      } finally {
        await restartPodwatch(NODE_IP, `-j DNAT --to-destination ${NODE_IP}:${TRANSPARENT_PORT}`);
      }
      expect(await get(world.locked, `${BUCKET_URL}dnat`)).to.include({ status: "200", body: "storage.googleapis.com GET /solutions-public-assets/dnat" });
    });
  });
}
