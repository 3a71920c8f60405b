// sidecar-init in a network namespace standing for a pod, routed through a "node" namespace to an
// "upstream" namespace. Asserts with real clients what gets out after the lockdown, and how the wait
// for interception behaves against the node's REDIRECT and the real tproxy.
import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { once } from "node:events";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ChildProcess } from "node:child_process";
import { Netns, enableForwarding, link, uniqueName, waitFor } from "../../../test/support/netns.ts";
import { CLIENT, NODE, lastLine, ruleset, sidecar, spawnSidecar, startServers, stop, removeOldStale } from "./support.ts";

const UPSTREAM = "10.50.2.2";
const OTHER_RESOLVER = "10.50.2.3";
const SERVICE = "10.96.0.10"; // inside the blocked "service range", also an allowed resolver
const UPSTREAM6 = "fd50:2::2";
const NODE_IP = "10.50.1.1";
const POD_IP = "10.50.1.2";
const TPROXY_CLI = fileURLToPath(new URL("../../tproxy/dist/cli.js", import.meta.url));

/** The tutorial's variables; NODE_NAME is resolved through the pod's hosts file. */
const TUTORIAL_ENV = { ALLOW_DNS: `${UPSTREAM},${SERVICE}`, BLOCK_SVC_CIDR: "10.96.0.0/12", NODE_NAME: "node-a" };

describe("sidecar-init in a pod network namespace", function () {
  this.timeout(60_000);
  let pod: Netns;
  let node: Netns;
  let upstream: Netns;
  let servers: ChildProcess | undefined;
  let nodeServers: ChildProcess | undefined;
  /** What the upstream servers printed after they started: one line per datagram their udp/443 echo received. */
  let serverLog = "";
  const udpArrived = () => serverLog.split("\n").filter((l) => l.startsWith("udp 443 from "));

  const curl = (url: string, extra: readonly string[] = []) => pod.run("curl", ["-sS", "--max-time", "3", ...extra, url]);
  const client = async (...args: string[]): Promise<{ ok: boolean; code?: string; addresses?: string[] }> =>
    JSON.parse(await pod.must(NODE, [CLIENT, ...args])) as { ok: boolean; code?: string; addresses?: string[] };
  const redirect = (port: number) =>
    node.must("iptables-restore", ["--noflush"], {
      input: `*nat\n:TPROXY-REDIRECT - [0:0]\n-I PREROUTING 1 -j TPROXY-REDIRECT\n-A TPROXY-REDIRECT -s ${POD_IP}/32 -p tcp -m multiport --dports 80,443 -j REDIRECT --to-ports ${port}\nCOMMIT\n`,
    });
  const unredirect = async () => {
    await node.run("iptables", ["-t", "nat", "-D", "PREROUTING", "-j", "TPROXY-REDIRECT"]);
    await node.run("iptables", ["-t", "nat", "-F", "TPROXY-REDIRECT"]);
    await node.run("iptables", ["-t", "nat", "-X", "TPROXY-REDIRECT"]);
  };

  before(async () => {
    for (const prefix of ["tsip", "tsin", "tsiu"]) await removeOldStale(prefix);
    pod = await Netns.create(uniqueName("tsip"));
    node = await Netns.create(uniqueName("tsin"));
    upstream = await Netns.create(uniqueName("tsiu"));
    await link(pod, [`${POD_IP}/24`, "fd50:1::2/64"], node, [`${NODE_IP}/24`, "fd50:1::1/64"]);
    await link(node, ["10.50.2.1/24", "fd50:2::1/64"], upstream, [`${UPSTREAM}/24`, `${OTHER_RESOLVER}/24`, `${SERVICE}/32`, `${UPSTREAM6}/64`]);
    await enableForwarding(node);
    await pod.must("ip", ["route", "add", "default", "via", NODE_IP]);
    await pod.must("ip", ["-6", "route", "add", "default", "via", "fd50:1::1"]);
    await upstream.must("ip", ["route", "add", "default", "via", "10.50.2.1"]);
    await upstream.must("ip", ["-6", "route", "add", "default", "via", "fd50:2::1"]);
    await node.must("ip", ["route", "add", "10.96.0.0/12", "via", UPSTREAM]);
    pod.hosts({ "node-a": NODE_IP });
    servers = await startServers(upstream, "upstream", [80, 443, 8081]);
    servers.stdout?.on("data", (d: Buffer) => (serverLog += d.toString()));
    // The node's standard-mode port (1080) and a port next to it that stays closed to the pod.
    nodeServers = await startServers(node, "upstream", [1080, 1081]);
  });

  after(async () => {
    await stop(servers);
    await stop(nodeServers);
    for (const ns of [pod, node, upstream]) await ns?.destroy();
  });

  it("reaches everything before the lockdown (so each refusal below is the lockdown's doing)", async () => {
    expect((await curl(`http://${UPSTREAM}:8081/`)).stdout).to.equal("upstream 8081\n");
    expect((await curl(`http://${SERVICE}/`)).stdout).to.equal("upstream 80\n");
    expect((await curl(`http://[${UPSTREAM6}]/`)).stdout).to.equal("upstream 80\n");
    expect((await curl(`http://[${UPSTREAM6}]:443/`)).stdout).to.equal("upstream 443\n");
    expect((await curl(`http://[${UPSTREAM6}]:8081/`)).stdout).to.equal("upstream 8081\n");
    expect((await curl(`http://${NODE_IP}:1081/`)).stdout).to.equal("upstream 1081\n");
    expect(await client("udp", UPSTREAM, "443")).to.deep.equal({ ok: true });
    expect(await client("udp", UPSTREAM6, "443")).to.deep.equal({ ok: true });
    // The echo saw both (so "nothing arrived" below can be told apart from a deaf receiver).
    expect(udpArrived()).to.deep.equal([`udp 443 from ${POD_IP}`, "udp 443 from fd50:1::2"]);
    expect((await pod.run("ping", ["-6", "-c", "1", "-W", "2", UPSTREAM6])).code).to.equal(0);
    expect(await client("dns", OTHER_RESOLVER, "example.test")).to.deep.equal({ ok: true, addresses: ["203.0.113.7"] });
    expect((await pod.run("nc", ["-z", "-w", "2", OTHER_RESOLVER, "53"])).code).to.equal(0);
    expect((await pod.run("ping", ["-c", "1", "-W", "2", UPSTREAM])).code).to.equal(0);
  });

  describe("after a lockdown with the tutorial's variables", () => {
    let first: { code: number; stdout: string; stderr: string };
    let saved: { v4: string; v6: string };

    before(async () => {
      first = await sidecar(pod, ["--no-wait"], TUTORIAL_ENV);
      saved = { v4: await ruleset(pod, "iptables-save"), v6: await ruleset(pod, "ip6tables-save") };
    });

    it("exits 0 and logs what it locked", () => {
      expect(first.code, first.stderr).to.equal(0);
      const logs = first.stderr.trim().split("\n").map((l) => JSON.parse(l) as { msg: string; family?: string; addresses?: string[] });
      expect(logs.filter((l) => l.msg === "egress locked").map((l) => l.family)).to.deep.equal(["ipv4", "ipv6"]);
      expect(logs.find((l) => l.msg === "node name resolved")?.addresses).to.deep.equal([NODE_IP]);
    });

    it("keeps tcp 80 and 443 open", async () => {
      expect((await curl(`http://${UPSTREAM}/`)).stdout).to.equal("upstream 80\n");
      expect((await curl(`http://${UPSTREAM}:443/`)).stdout).to.equal("upstream 443\n");
    });

    it("refuses tcp to another port at once", async () => {
      const r = await curl(`http://${UPSTREAM}:8081/`);
      expect(r.code).to.equal(7);
      expect(r.stderr).to.match(/Failed to connect to 10\.50\.2\.2 port 8081 after \d+ ms: Couldn't connect to server/);
    });

    it("lets DNS reach the allowed resolvers over udp and tcp, even inside the blocked range", async () => {
      expect(await client("dns", UPSTREAM, "example.test")).to.deep.equal({ ok: true, addresses: ["203.0.113.7"] });
      expect(await client("dns", SERVICE, "example.test")).to.deep.equal({ ok: true, addresses: ["203.0.113.7"] });
      expect((await pod.run("nc", ["-z", "-w", "2", UPSTREAM, "53"])).code).to.equal(0);
    });

    it("refuses DNS to a resolver that is not allowed, and udp/443 (QUIC)", async () => {
      // Refused at once (not a timeout): the resolver answered before the lockdown.
      expect(await client("dns", OTHER_RESOLVER, "example.test")).to.deep.equal({ ok: false, code: "ECONNREFUSED" });
      const before = udpArrived().length;
      expect(await client("udp", UPSTREAM, "443")).to.deep.equal({ ok: false, code: "EPERM" });
      expect(await client("udp", UPSTREAM6, "443")).to.deep.equal({ ok: false, code: "EPERM" });
      expect(udpArrived().slice(before)).to.deep.equal([]);
    });

    it('makes ping say "Operation not permitted"', async () => {
      const r = await pod.run("ping", ["-c", "1", "-W", "2", UPSTREAM]);
      expect(r.code).to.not.equal(0);
      expect(r.stderr).to.include("ping: sendmsg: Operation not permitted");
    });

    it("refuses the blocked CIDR on an allowed port", async () => {
      const r = await curl(`http://${SERVICE}/`);
      expect(r.code).to.equal(7);
      expect(r.stderr).to.match(/Failed to connect to 10\.96\.0\.10 port 80 after \d+ ms: Couldn't connect to server/);
    });

    it("refuses IPv6 egress to a reachable IPv6 upstream", async () => {
      const r = await curl(`http://[${UPSTREAM6}]/`);
      expect(r.code).to.equal(7);
      const ping = await pod.run("ping", ["-6", "-c", "1", "-W", "2", UPSTREAM6]);
      expect(ping.code).to.not.equal(0);
      expect(ping.stderr).to.include("ping: sendmsg: Operation not permitted");
    });

    it("allows the node's standard-mode port, found by NODE_NAME, and nothing else on the node", async () => {
      expect((await curl(`http://${NODE_IP}:1080/`)).stdout).to.equal("upstream 1080\n");
      expect((await curl(`http://${NODE_IP}:1081/`)).code).to.equal(7);
    });

    it("puts its chain first in OUTPUT, for IPv4 and IPv6", () => {
      for (const text of [saved.v4, saved.v6]) {
        const output = text.split("\n").filter((l) => l.startsWith("-A OUTPUT "));
        expect(output).to.deep.equal(["-A OUTPUT -j TPROXY-EGRESS"]);
        expect(text).to.include(":TPROXY-EGRESS - [0:0]");
      }
      expect(saved.v4).to.include(`-A TPROXY-EGRESS -s ${POD_IP}/32 -d 10.50.1.1/32 -p tcp -m tcp --dport 1080 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT`);
      expect(saved.v4).to.include(`-A TPROXY-EGRESS -s ${POD_IP}/32 -d 10.96.0.0/12 -p tcp -j REJECT --reject-with tcp-reset`);
    });

    it("lets packets leave only from the pod's own addresses (read from its interfaces, both families) and drops INVALID ones", async () => {
      const linkLocal = (await pod.must("ip", ["-6", "-o", "addr", "show", "scope", "link"])).match(/inet6 (fe80::[0-9a-f:]+)\//)?.[1];
      expect(linkLocal).to.be.a("string");
      const sources = (text: string) => [...new Set([...text.matchAll(/^-A TPROXY-EGRESS -s (\S+) /gm)].map((m) => m[1]))];
      expect(sources(saved.v4)).to.deep.equal([`${POD_IP}/32`]);
      expect(sources(saved.v6)).to.deep.equal(["fd50:1::2/128", `${linkLocal}/128`]);
      for (const text of [saved.v4, saved.v6]) {
        const chain = text.split("\n").filter((l) => l.startsWith("-A TPROXY-EGRESS "));
        expect(chain.slice(0, 2)).to.deep.equal(["-A TPROXY-EGRESS -o lo -j ACCEPT", "-A TPROXY-EGRESS -m conntrack --ctstate INVALID -j DROP"]);
        expect(chain.at(-1)).to.equal("-A TPROXY-EGRESS -j DROP");
      }
      expect(saved.v4).to.include(`-A TPROXY-EGRESS -s ${POD_IP}/32 -p tcp -m tcp --dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT\n`);
    });

    it("leaves iptables-save and ip6tables-save byte-identical when run again", async () => {
      const again = await sidecar(pod, ["--no-wait"], TUTORIAL_ENV);
      expect(again.code, again.stderr).to.equal(0);
      expect(await ruleset(pod, "iptables-save")).to.equal(saved.v4);
      expect(await ruleset(pod, "ip6tables-save")).to.equal(saved.v6);
    });

    it("repairs a duplicated jump and keeps rules other tools added to OUTPUT", async () => {
      await pod.must("iptables", ["-A", "OUTPUT", "-j", "TPROXY-EGRESS"]);
      await pod.must("iptables", ["-I", "OUTPUT", "1", "-d", "10.1.2.3/32", "-j", "ACCEPT"]);
      const r = await sidecar(pod, ["--no-wait"], TUTORIAL_ENV);
      expect(r.code, r.stderr).to.equal(0);
      const output = (await ruleset(pod, "iptables-save")).split("\n").filter((l) => l.startsWith("-A OUTPUT "));
      expect(output).to.deep.equal(["-A OUTPUT -j TPROXY-EGRESS", "-A OUTPUT -d 10.1.2.3/32 -j ACCEPT"]);
      await pod.must("iptables", ["-D", "OUTPUT", "-d", "10.1.2.3/32", "-j", "ACCEPT"]);
      expect(await ruleset(pod, "iptables-save")).to.equal(saved.v4);
    });

    it("--dry-run prints the transaction (no jump to add now) and changes nothing", async () => {
      const r = await sidecar(pod, ["--dry-run", "--block-cidr", "10.0.0.0/8"], TUTORIAL_ENV);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.match(/^# IPv4: \/\S+iptables-nft-restore --noflush\n\*filter\n:TPROXY-EGRESS - \[0:0\]\n-A TPROXY-EGRESS -o lo -j ACCEPT\n/);
      expect(r.stdout).to.include(`-A TPROXY-EGRESS -s ${POD_IP}/32 -d 10.0.0.0/8 -p tcp -j REJECT --reject-with tcp-reset\n`);
      expect(r.stdout).to.match(/\n# IPv6: \/\S+ip6tables-nft-restore --noflush\n\*filter\n/);
      expect(r.stdout).not.to.include("-I OUTPUT");
      expect(await ruleset(pod, "iptables-save")).to.equal(saved.v4);
      expect(await ruleset(pod, "ip6tables-save")).to.equal(saved.v6);
    });
  });

  describe("DNS without --allow-dns: only the nameservers of the pod's own resolv.conf", () => {
    const resolvConf = () => `/etc/netns/${pod.name}/resolv.conf`;
    let original = "";
    before(() => {
      original = readFileSync(resolvConf(), "utf8");
      writeFileSync(resolvConf(), `# as the kubelet writes it\nsearch default.svc.cluster.local\nnameserver ${UPSTREAM}\nnameserver ${UPSTREAM6}\noptions ndots:5\n`);
    });
    after(() => writeFileSync(resolvConf(), original));

    it("allows them over udp and tcp, IPv4 and IPv6, and refuses port 53 of every other address", async () => {
      const r = await sidecar(pod, ["--no-wait"], { BLOCK_SVC_CIDR: "10.96.0.0/12" });
      expect(r.code, r.stderr).to.equal(0);
      const logs = r.stderr.trim().split("\n").map((l) => JSON.parse(l) as { msg: string; resolvers?: string[]; file?: string });
      expect(logs.find((l) => l.msg === "DNS allowed to the pod's own nameservers")).to.deep.include({ resolvers: [UPSTREAM, UPSTREAM6], file: "/etc/resolv.conf" });
      expect(await client("dns", UPSTREAM, "example.test")).to.deep.equal({ ok: true, addresses: ["203.0.113.7"] });
      expect(await client("dns", UPSTREAM6, "example.test")).to.deep.equal({ ok: true, addresses: ["203.0.113.7"] });
      expect((await pod.run("nc", ["-z", "-w", "2", UPSTREAM, "53"])).code).to.equal(0);
      // Every other address: udp refused at once, a tcp stream to port 53 refused, even inside the blocked range.
      for (const other of [OTHER_RESOLVER, SERVICE]) {
        expect(await client("dns", other, "example.test"), other).to.deep.equal({ ok: false, code: "ECONNREFUSED" });
        const nc = await pod.run("nc", ["-v", "-w", "2", other, "53"], { input: "data out\n" });
        expect(nc.code, other).to.equal(1);
        expect(nc.stderr, other).to.include("Connection refused");
      }
    });

    it("--allow-dns any: port 53 of every address, with a warning", async () => {
      const r = await sidecar(pod, ["--no-wait", "--allow-dns", "any"]);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stderr).to.include('"level":40,');
      expect(r.stderr).to.include("DNS allowed to every address (--allow-dns any)");
      expect(await client("dns", OTHER_RESOLVER, "example.test")).to.deep.equal({ ok: true, addresses: ["203.0.113.7"] });
      expect((await pod.run("nc", ["-z", "-w", "2", OTHER_RESOLVER, "53"])).code).to.equal(0);
    });
  });

  describe("IPv6 with and without --ipv6-intercepted (the node intercepts the pod's IPv6 too)", () => {
    const v6Port = async (port: number) => curl(`http://[${UPSTREAM6}]:${port}/`);
    const expectOtherIpv6Refused = async () => {
      const tcp = await v6Port(8081);
      expect(tcp.code).to.equal(7);
      expect(tcp.stderr).to.match(/Failed to connect to fd50:2::2 port 8081 after \d+ ms: Couldn't connect to server/);
      expect(await client("udp", UPSTREAM6, "443")).to.deep.equal({ ok: false, code: "EPERM" });
      const ping = await pod.run("ping", ["-6", "-c", "1", "-W", "2", UPSTREAM6]);
      expect(ping.code).to.not.equal(0);
      expect(ping.stderr).to.include("ping: sendmsg: Operation not permitted");
    };

    it("with it: tcp 80 and 443 over IPv6 get out; every other IPv6 port, udp and ping stay refused", async () => {
      const r = await sidecar(pod, ["--no-wait", "--ipv6-intercepted"], TUTORIAL_ENV);
      expect(r.code, r.stderr).to.equal(0);
      expect(await ruleset(pod, "ip6tables-save")).to.include(
        "-A TPROXY-EGRESS -s fd50:1::2/128 -p tcp -m tcp --dport 80 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT\n-A TPROXY-EGRESS -s fd50:1::2/128 -p tcp -m tcp --dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT\n",
      );
      expect((await v6Port(80)).stdout).to.equal("upstream 80\n");
      expect((await v6Port(443)).stdout).to.equal("upstream 443\n");
      await expectOtherIpv6Refused();
      // IPv4 stays as locked as without the flag.
      expect((await curl(`http://${UPSTREAM}:8081/`)).code).to.equal(7);
    });

    it("without it (IPV6_INTERCEPTED=false, as by default): tcp 80 and 443 over IPv6 are refused too", async () => {
      const r = await sidecar(pod, ["--no-wait"], { ...TUTORIAL_ENV, IPV6_INTERCEPTED: "false" });
      expect(r.code, r.stderr).to.equal(0);
      expect(await ruleset(pod, "ip6tables-save")).not.to.include("--dport 80 ");
      for (const port of [80, 443]) {
        const c = await v6Port(port);
        expect(c.code, `tcp/${port} over IPv6`).to.equal(7);
        expect(c.stdout).to.equal("");
        expect(c.stderr).to.include(`Failed to connect to fd50:2::2 port ${port} after`);
      }
      await expectOtherIpv6Refused();
    });

    it("IPV6_INTERCEPTED=true does what the flag does", async () => {
      const r = await sidecar(pod, ["--no-wait"], { ...TUTORIAL_ENV, IPV6_INTERCEPTED: "true" });
      expect(r.code, r.stderr).to.equal(0);
      expect((await v6Port(443)).stdout).to.equal("upstream 443\n");
      expect((await v6Port(8081)).code).to.equal(7);
    });
  });

  describe("waiting for interception", () => {
    let proxy: ChildProcess | undefined;
    let plain: ChildProcess | undefined;
    let dir: string;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "tsi-proxy-"));
      writeFileSync(join(dir, "filter.ts"), "export default { request() {} };\n");
    });

    afterEach(async () => {
      await unredirect();
    });

    after(async () => {
      await stop(proxy);
      await stop(plain);
      rmSync(dir, { recursive: true, force: true });
    });

    it("fails after --wait-timeout with the documented message when no redirect ever appears", async () => {
      const started = Date.now();
      const r = await sidecar(pod, ["--wait-timeout", "2s"], TUTORIAL_ENV);
      const elapsed = Date.now() - started;
      expect(r.code).to.equal(4);
      expect(lastLine(r.stderr)).to.match(
        /^tproxy-sidecar-init: interception not live after 2s: expected HTTP 200 with "x-tproxy-probe: ok" from http:\/\/192\.0\.2\.1\/, which only the node's tproxy answers once it redirects this pod, but the last attempt saw (EHOSTUNREACH|ENETUNREACH|no answer within \d+ ms); check that the tproxy DaemonSet has a running pod on this node and that this pod carries the opt-in annotation \(default initializer\.kubernetes\.io\/tproxy: "true"\)$/,
      );
      expect(elapsed).to.be.at.least(2_000); // it waited the whole timeout (how much longer is the machine's business)
      // Fail closed: the lockdown stays.
      expect((await curl(`http://${UPSTREAM}:8081/`)).code).to.equal(7);
    });

    it("does not take another server's 200 for the proxy's answer", async () => {
      plain = await startServers(node, "plain", [8090]);
      await redirect(8090);
      const r = await sidecar(pod, ["--wait-timeout", "1500ms"], TUTORIAL_ENV);
      expect(r.code).to.equal(4);
      expect(lastLine(r.stderr)).to.include("but the last attempt saw HTTP 200 without x-tproxy-probe (not the node's proxy);");
    });

    it("succeeds as soon as the node redirects the pod to a running tproxy, and not before", async () => {
      await node.must(NODE, [TPROXY_CLI, "ca", "create", "--cert", join(dir, "ca.crt"), "--key", join(dir, "ca.key")]);
      proxy = node.spawn(NODE, [TPROXY_CLI, "run", "--ca-cert", join(dir, "ca.crt"), "--ca-key", join(dir, "ca.key"), "--filter", join(dir, "filter.ts"), "--transparent-port", "8080", "--metrics-port", "0"]);
      let proxyLog = "";
      proxy.stderr?.on("data", (d: Buffer) => (proxyLog += d.toString()));
      proxy.stdout?.on("data", (d: Buffer) => (proxyLog += d.toString()));
      await waitFor("tproxy listening on 8080", async () => (await node.run("ss", ["-Hltn", "sport", "=", ":8080"])).stdout.trim() !== "", 15_000, 100);

      const init = spawnSidecar(pod, ["--wait-timeout", "30s"], TUTORIAL_ENV);
      let stderr = "";
      init.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
      const exited = once(init, "exit") as Promise<[number | null, string | null]>;

      // While it waits, the pod is already locked and the init container has not finished.
      await new Promise((r) => setTimeout(r, 1_500));
      expect(init.exitCode, stderr).to.equal(null);
      expect((await curl(`http://${UPSTREAM}:8081/`)).code).to.equal(7);
      expect(stderr).to.include("waiting for the node to intercept this pod's traffic");

      const redirectedAt = Date.now();
      await redirect(8080);
      const [code] = await exited;
      const latency = Date.now() - redirectedAt;
      expect(code, `${stderr}\n${proxyLog}`).to.equal(0);
      expect(stderr).to.include('"msg":"interception live"');
      // Same answer as the probe saw: the proxy itself, never forwarded.
      const answer = await curl("http://192.0.2.1/", ["-i"]);
      expect(answer.stdout).to.match(/^HTTP\/1\.1 200/);
      expect(answer.stdout.toLowerCase()).to.include("x-tproxy-probe: ok");
      console.log(`      interception seen ${latency} ms after the REDIRECT rule appeared`);
    });
  });
});
