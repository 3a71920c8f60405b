// Every way out of a locked pod, tried: each must fail to get out. Where the way exists for an
// unlocked pod, that is shown too, so a test cannot pass merely because the target is missing.
import { expect } from "chai";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { waitFor } from "../support/netns.ts";
import { REPO, TRANSPARENT_PORT, type Proc } from "../support/world.ts";
import { APP_IP, BUCKET_URL, CHART_FILTER, DNS_IP, GOOGLE_IP, INTERNET_IP6, LOCKED_IP, LOCKED_IP6, STORAGE_IP, TutorialWorld, type PodNs } from "../support/tutorial-world.ts";
import { wiringTitle } from "../support/datapath.ts";

const UDP_ECHO = join(REPO, "test/support/udp-echo.ts");

describe(`escape attempts from a locked pod (namespaces, ${wiringTitle()}; Kubernetes API stand-in)`, function () {
  this.timeout(60_000);
  let world: TutorialWorld;
  let echo: Proc;
  let echo6: Proc;
  let resolver: Proc;

  before(async function () {
    this.timeout(120_000);
    world = await TutorialWorld.installed("tpx2");
    await world.extraServer("other-port", GOOGLE_IP, 8081, 8443);
    await world.extraServer("ipv6-server", INTERNET_IP6, 80, 443);
    echo = world.spawn(world.internet, process.execPath, [UDP_ECHO, GOOGLE_IP, "53", "443"]);
    await echo.waitForLine(/listening/);
    echo6 = world.spawn(world.internet, process.execPath, [UDP_ECHO, INTERNET_IP6, "443"]);
    await echo6.waitForLine(/listening/);
    // The allowed resolver's address answers udp/53 too, to show what the lock lets through.
    resolver = world.spawn(world.internet, process.execPath, [UDP_ECHO, DNS_IP, "53"]);
    await resolver.waitForLine(/listening/);
  });
  after(async () => {
    await world?.close();
  });

  /** One datagram from the pod: the error its send saw, or the echo that came back. */
  const udp = async (pod: PodNs, host: string, port: number): Promise<{ error: string | null; reply?: string | null }> =>
    JSON.parse(await pod.ns.must(process.execPath, [UDP_ECHO, "send", host, String(port), `from ${pod.name}`], { timeoutMs: 10_000 })) as { error: string | null; reply?: string | null };
  /** The datagrams an echo server saw from this address. */
  const arrivedFrom = (server: Proc, ip: string) => server.lines.filter((l) => l.startsWith(`got ${ip} `));
  const body = async (pod: PodNs, args: string[]) => (await world.curlFrom(pod, args)).stdout;

  it("another TCP port is refused: the connection fails, no bytes come back", async () => {
    expect(await body(world.app, [`http://${GOOGLE_IP}:8081/`])).to.equal("other-port GET /\n");
    const r = await world.curlFrom(world.locked, [`http://${GOOGLE_IP}:8081/`]);
    expect(r.code).to.equal(7);
    expect(r.stdout).to.equal("");
    expect(r.stderr).to.match(/Failed to connect to 10\.90\.2\.10 port 8081 after \d+ ms: Couldn't connect to server/);
  });

  it("UDP is refused: the send fails with EPERM (DNS to a resolver that is not allowed, QUIC on udp/443), nothing arrives", async () => {
    for (const port of [53, 443]) {
      const r = await udp(world.locked, GOOGLE_IP, port);
      expect(r, `udp/${port} from the locked pod`).to.deep.equal({ error: "EPERM" });
    }
    // Control: the same datagrams from the unlocked pod get out and are echoed.
    for (const port of [53, 443]) {
      expect(await udp(world.app, GOOGLE_IP, port), `udp/${port} from the unlocked pod`).to.deep.equal({ error: null, reply: "echo: from debian-app" });
    }
    expect(arrivedFrom(echo, APP_IP).map((l) => l.split(" ")[2])).to.include.members(["53", "443"]);
    expect(arrivedFrom(echo, LOCKED_IP)).to.deep.equal([]);
  });

  it("UDP to the allowed resolver's port 53 gets out (the lock refuses the rest, not all UDP)", async () => {
    expect(await udp(world.locked, DNS_IP, 53)).to.deep.equal({ error: null, reply: "echo: from debian-app-locked" });
    expect(arrivedFrom(resolver, LOCKED_IP)).to.deep.equal([`got ${LOCKED_IP} 53 from debian-app-locked`]);
    // The same resolver address on another UDP port is refused.
    expect(await udp(world.locked, DNS_IP, 443)).to.deep.equal({ error: "EPERM" });
  });

  it("IPv6 is refused: TCP 80 with a reset, UDP with EPERM, though the pod has an IPv6 address and route", async () => {
    // The locked pod has IPv6 (so a refusal below is the lock's, not a missing route).
    expect(await world.locked.ns.must("ip", ["-6", "-o", "addr", "show", "scope", "global"])).to.include(`${LOCKED_IP6}/${world.datapath === "calico" ? 128 : 64}`);
    expect(await world.locked.ns.must("ip", ["-6", "route", "show", "default"])).to.match(world.datapath === "calico" ? /^default via fe80::ecee:eeff:feee:eeee / : /^default via fd90:3::1 /);
    const r = await world.curlFrom(world.locked, ["-6", `http://[${INTERNET_IP6}]/`]);
    expect(r.code).to.equal(7);
    expect(r.stdout).to.equal("");
    expect(r.stderr).to.match(/Failed to connect to fd90:2::10 port 80 after \d+ ms: Couldn't connect to server/);
    expect(await udp(world.locked, INTERNET_IP6, 443)).to.deep.equal({ error: "EPERM" });
    // Control: the unlocked pod reaches both.
    expect(await body(world.app, ["-6", `http://[${INTERNET_IP6}]/`])).to.equal("ipv6-server GET /\n");
    expect(await udp(world.app, INTERNET_IP6, 443)).to.deep.equal({ error: null, reply: "echo: from debian-app" });
    expect(arrivedFrom(echo6, LOCKED_IP6)).to.deep.equal([]);
  });

  it("HTTPS claiming the allowed name at another address reaches the named server only (SNI)", async () => {
    const r = await body(world.locked, ["--resolve", `storage.googleapis.com:443:${GOOGLE_IP}`, BUCKET_URL]);
    expect(r).to.equal("storage.googleapis.com GET /solutions-public-assets/\n");
  });

  it("HTTP with the allowed Host at another address reaches the named server only", async () => {
    // The tutorial's filter allows the bucket over https only; allow it over http too for this check.
    const chart = readFileSync(CHART_FILTER, "utf8");
    world.updateFilter(chart.replace("/^https:", "/^https?:"));
    const spoof = () => world.curlFrom(world.locked, ["-H", "Host: storage.googleapis.com", `http://${GOOGLE_IP}/solutions-public-assets/`]);
    try {
      await waitFor("the http-allowing filter", async () => !(await spoof()).stdout.includes("Access Denied"), 5000, 100);
      expect((await spoof()).stdout).to.equal("storage.googleapis.com GET /solutions-public-assets/\n");
    } finally {
      world.updateFilter(chart);
      await waitFor("the tutorial's filter again", async () => (await spoof()).stdout.includes("Access Denied"), 5000, 100);
    }
  });

  it("HTTPS to an IP literal without SNI is judged on that address (denied)", async () => {
    const r = await world.curlFrom(world.locked, ["-w", "\n%{http_code}", `https://${STORAGE_IP}/solutions-public-assets/`]);
    expect(r.stdout).to.equal("Access Denied by Administrator\n418");
  });

  it("a new pod's init container keeps waiting while the node has no redirect for it; then the app is filtered", async () => {
    await world.podwatch!.stop("SIGKILL");
    const late = await world.addPod("debian-app-late");
    world.schedulePod(late, true);
    world.mountRootCerts(late);
    const init = world.sidecarInit(late); // not awaited: it must still be waiting below
    await new Promise((r) => setTimeout(r, 2500));
    expect(init.child.exitCode, "init container must still be waiting").to.equal(null);
    await world.startPodwatch();
    await waitFor("the init container to finish", () => init.child.exitCode !== null, 15_000, 100);
    expect(init.child.exitCode, init.output).to.equal(0);
    expect((await world.curlFrom(late, ["-o", "/dev/null", "-w", "%{http_code}", "https://www.google.com/"])).stdout).to.equal("418");
  });

  it("podwatch killed: the rules stay and filtering goes on", async () => {
    await world.podwatch!.stop("SIGKILL");
    expect(await world.node.must("iptables-save", ["-t", "nat"])).to.include(`-s ${LOCKED_IP}/32`);
    expect((await world.curlFrom(world.locked, ["-o", "/dev/null", "-w", "%{http_code}", "https://www.google.com/"])).stdout).to.equal("418");
    expect((await world.curlFrom(world.locked, ["-o", "/dev/null", "-w", "%{http_code}", BUCKET_URL])).stdout).to.equal("200");
    await world.startPodwatch();
  });

  it("proxy killed: redirected connections are refused, nothing leaks; back when it restarts", async () => {
    await world.proxy!.stop("SIGKILL");
    // Its worker processes follow the primary within moments (as a killed container's processes do).
    await waitFor("nothing listening on the transparent port", async () => !(await world.node.must("ss", ["-ltnH"])).includes(`:${TRANSPARENT_PORT} `), 5000, 50);
    for (const url of ["https://www.google.com/", BUCKET_URL, "http://www.google.com/"]) {
      const r = await world.curlFrom(world.locked, ["-o", "/dev/null", "-w", "%{http_code}", url]);
      expect(r.stdout, url).to.equal("000");
      expect(r.code, url).to.equal(7);
    }
    await world.startProxy();
    expect((await world.curlFrom(world.locked, ["-o", "/dev/null", "-w", "%{http_code}", BUCKET_URL])).stdout).to.equal("200");
  });
});
