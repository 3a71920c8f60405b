// The CA is a Secret mounted in the proxy's container; rotating it (the kubelet swaps the volume's `..data`)
// must not need a restart: new connections get certificates of the new CA within moments, and a pair that
// cannot be used (a key of another certificate) is refused while the CA in force stays. Seen from a pod
// with curl, trusting one CA or the other, in network namespaces with the node's REDIRECT.
import { expect } from "chai";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { ProxyWorld, type Proc } from "../../../test/support/world.ts";
import { waitFor } from "../../../test/support/netns.ts";
import { lineAfter, metric, metricsOf, readyz } from "./helpers.ts";

// /exit ends the serving thread that runs it (a thread to be replaced).
const FILTER = `export default { request(flow) { if (flow.request.path === "/exit") process.exit(3); } };\n`;

describe("tproxy CA rotation (mounted Secret swapped, network namespaces)", function () {
  this.timeout(60_000);
  let world: ProxyWorld;
  let proxy: Proc;
  let caDir: string;
  const pems: Record<"a" | "b", { cert: string; key: string; certPath: string }> = {} as never;
  /** The trust bundle of the overlap: both CAs, which have the same subject name ("tproxy CA"). */
  let both: string;

  before(async () => {
    world = await ProxyWorld.create("tpa");
    for (const name of ["a", "b"] as const) {
      const made = await world.makeProxyCa();
      const cert = readFileSync(made.cert, "utf8");
      const certPath = join(world.dir, `trust-${name}.pem`);
      writeFileSync(certPath, cert);
      pems[name] = { cert, key: readFileSync(made.key, "utf8"), certPath };
    }
    both = join(world.dir, "trust-both.pem");
    writeFileSync(both, pems.b.cert + pems.a.cert);
    caDir = join(world.dir, "ca");
    writeConfigMap(caDir, { "tls.crt": pems.a.cert, "tls.key": pems.a.key });
    const filterDir = join(world.dir, "filter");
    writeConfigMap(filterDir, { "filter.ts": FILTER });
    proxy = await world.startProxy(["--ca-cert", join(caDir, "tls.crt"), "--ca-key", join(caDir, "tls.key"), "--filter", join(filterDir, "filter.ts"),
      "--upstream-ca", world.publicCa.certPath, "--workers", "2"]);
    await world.redirectPod();
  });
  after(async () => {
    await world?.close();
  });

  /** curl's exit code and the status, trusting only `ca`, on a new connection. */
  const get = async (ca: "a" | "b" | "both", path: string) => {
    const r = await world.curl(["--cacert", ca === "both" ? both : pems[ca].certPath, "-o", "/dev/null", "-w", "%{http_code}", `https://storage.googleapis.com${path}`]);
    return { code: r.code, status: r.stdout, err: r.stderr };
  };

  /** The pod's TLS client refused the proxy's certificate (curl 60: it cannot be authenticated). */
  const refused = (r: { code: number; status: string; err: string }): boolean =>
    r.code === 60 && r.status === "000" && /certificate/i.test(r.err);

  it("signs with the CA it started with: a pod trusting it is served, one trusting another CA is not (control)", async () => {
    expect(await get("a", "/before")).to.include({ code: 0, status: "200" });
    // During a rotation pods trust both: the leaf names its signer (authorityKeyIdentifier), so the
    // same-named new CA listed first is not mistaken for it.
    expect(await get("both", "/before")).to.include({ code: 0, status: "200" });
    expect(refused(await get("b", "/before"))).to.equal(true);
  });

  it("signs with the new CA once the Secret volume is swapped, without a restart, in every thread", async () => {
    const pid = proxy.child.pid;
    const from = proxy.lines.length;
    writeConfigMap(caDir, { "tls.crt": pems.b.cert, "tls.key": pems.b.key });
    await lineAfter(proxy, from, /CA reloaded: new connections get certificates it signs/, 5000);
    // Several new connections: the kernel spreads them over both threads, and each must use the new CA.
    for (let i = 0; i < 8; i += 1) {
      expect(await get("b", `/after/${i}`)).to.include({ code: 0, status: "200" });
      expect(refused(await get("a", `/after/${i}`))).to.equal(true);
      expect(await get("both", `/after/${i}`)).to.include({ code: 0, status: "200" });
    }
    expect(proxy.child.pid).to.equal(pid);
    expect(proxy.child.exitCode).to.equal(null);
    const m = await metricsOf(world);
    expect(metric(m, "tproxy_ca_reloads_total", { result: "success" })).to.equal(1);
  });

  it("refuses a pair that does not belong together and keeps the CA in force", async () => {
    const from = proxy.lines.length;
    writeConfigMap(caDir, { "tls.crt": pems.a.cert, "tls.key": pems.b.key });
    await lineAfter(proxy, from, /the mounted CA changed but cannot be used; the CA in force stays .*does not belong to the certificate/, 5000);
    expect(await get("b", "/kept")).to.include({ code: 0, status: "200" });
    expect(metric(await metricsOf(world), "tproxy_ca_reloads_total", { result: "error" })).to.equal(1);
    // Looked at again (another event in the volume), the same broken pair is not reported again.
    writeFileSync(join(caDir, "unrelated"), "x");
    await new Promise((r) => setTimeout(r, 500));
    expect(metric(await metricsOf(world), "tproxy_ca_reloads_total", { result: "error" })).to.equal(1);
    expect(proxy.lines.slice(from).filter((l) => l.includes("cannot be used"))).to.have.length(1);
  });

  it("starts a replacement thread with the CA in force, not with the broken pair now on disk", async () => {
    const from = proxy.lines.length;
    await world.curl(["--cacert", pems.b.certPath, "-o", "/dev/null", "https://storage.googleapis.com/exit"]);
    await lineAfter(proxy, from, /serving thread exited; starting another/);
    await lineAfter(proxy, from, /serving thread listening/);
    await waitFor("/readyz 200 with the new thread", async () => (await readyz(world)).status === 200);
    // New connections reach both threads: every one is signed by the CA in force.
    for (let i = 0; i < 8; i += 1) expect(await get("b", `/replaced/${i}`)).to.include({ code: 0, status: "200" });
    expect(proxy.lines.slice(from).filter((l) => l.includes("could not start"))).to.deep.equal([]);
  });
});
