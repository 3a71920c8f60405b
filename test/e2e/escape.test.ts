// Every way out of a locked pod, tried: each must fail to get out. Where the way exists for an
// unlocked pod, that is shown too, so a test cannot pass merely because the target is missing.
import { expect } from "chai";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { waitFor } from "../support/netns.ts";
import { REPO } from "../support/world.ts";
import { BUCKET_URL, CHART_FILTER, DNS_IP, GOOGLE_IP, INTERNET_IP6, LOCKED_IP, STORAGE_IP, TutorialWorld, type PodNs } from "../support/tutorial-world.ts";

describe("escape attempts from a locked pod (namespaces; Kubernetes API stand-in)", function () {
  this.timeout(60_000);
  let world: TutorialWorld;

  before(async function () {
    this.timeout(120_000);
    world = await TutorialWorld.installed("tpx2");
    await world.extraServer("other-port", GOOGLE_IP, 8081, 8443);
    await world.extraServer("ipv6-server", INTERNET_IP6, 80, 443);
    const echo = world.spawn(world.internet, process.execPath, [join(REPO, "test/support/udp-echo.ts"), GOOGLE_IP, "53", "443"]);
    await echo.waitForLine(/listening/);
  });
  after(async () => {
    await world?.close();
  });

  const udp = (pod: PodNs, port: number) =>
    pod.ns.run("sh", ["-c", `printf 'hello' | nc -u -w 2 ${GOOGLE_IP} ${port}; echo " exit=$?"`], { timeoutMs: 10_000 });
  const body = async (pod: PodNs, args: string[]) => (await world.curlFrom(pod, args)).stdout;

  it("another TCP port is refused", async () => {
    expect(await body(world.app, [`http://${GOOGLE_IP}:8081/`])).to.equal("other-port GET /\n");
    const r = await world.curlFrom(world.locked, [`http://${GOOGLE_IP}:8081/`]);
    expect(r.code).to.equal(7);
    expect(r.stdout).to.equal("");
  });

  it("UDP is refused: DNS to a resolver that is not allowed, and QUIC on udp/443", async () => {
    expect((await udp(world.app, 53)).stdout).to.match(/^echo: hello/);
    expect((await udp(world.app, 443)).stdout).to.match(/^echo: hello/);
    for (const port of [53, 443]) {
      const r = await udp(world.locked, port);
      expect(r.stdout, `udp/${port}`).to.not.match(/echo/);
    }
    // The allowed resolver stays reachable on udp/53 (nothing listens there: the packet leaves, ICMP says so).
    const rules = await world.locked.ns.must("iptables-save", []);
    expect(rules).to.match(new RegExp(`-d ${DNS_IP.replace(/\./g, "\\.")}/32 -p udp -m udp --dport 53 -j ACCEPT`));
  });

  it("IPv6 is refused", async () => {
    await world.app.ns.must("ip", ["-6", "route", "show"]);
    const r = await world.curlFrom(world.locked, ["-6", `http://[${INTERNET_IP6}]/`]);
    expect(r.code).to.equal(7);
    expect(r.stdout).to.equal("");
    expect(await body(world.app, ["-6", `http://[${INTERNET_IP6}]/`])).to.equal("ipv6-server GET /\n");
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
    await waitFor("nothing listening on the transparent port", async () => !(await world.node.must("ss", ["-ltnH"])).includes(":8080 "), 5000, 50);
    for (const url of ["https://www.google.com/", BUCKET_URL, "http://www.google.com/"]) {
      const r = await world.curlFrom(world.locked, ["-o", "/dev/null", "-w", "%{http_code}", url]);
      expect(r.stdout, url).to.equal("000");
      expect(r.code, url).to.equal(7);
    }
    await world.startProxy();
    expect((await world.curlFrom(world.locked, ["-o", "/dev/null", "-w", "%{http_code}", BUCKET_URL])).stdout).to.equal("200");
  });
});
