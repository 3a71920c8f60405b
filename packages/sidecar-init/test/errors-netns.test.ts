// Every way sidecar-init refuses to run: one line naming the cause on stderr, a documented exit code,
// and the namespace's rules exactly as they were (nothing half-applied).
import { expect } from "chai";
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Netns, uniqueName, type RunResult } from "../../../test/support/netns.ts";
import { which } from "../src/iptables.ts";
import { CLI, NODE, envArgs, lastLine, ruleset, sidecar, removeOldStale } from "./support.ts";

describe("sidecar-init error cases", function () {
  this.timeout(30_000);
  let ns: Netns;
  let before4: string;
  let before6: string;
  let fakeDir: string;

  before(async () => {
    await removeOldStale("tsie");
    ns = await Netns.create(uniqueName("tsie"));
    // The pod's resolv.conf as the kubelet writes it: the lock allows DNS to its nameserver by default.
    writeFileSync(`/etc/netns/${ns.name}/resolv.conf`, "nameserver 10.96.0.10\n");
    // Another tool's rule, to show it survives every failure untouched.
    await ns.must("iptables", ["-A", "OUTPUT", "-d", "10.1.2.3/32", "-j", "ACCEPT"]);
    before4 = await ruleset(ns, "iptables-save");
    before6 = await ruleset(ns, "ip6tables-save");
    // A PATH where IPv4 iptables works but the IPv6 restore is refused.
    fakeDir = mkdtempSync(join(tmpdir(), "tsi-fakebin-"));
    for (const name of ["iptables-nft-save", "iptables-nft-restore", "ip6tables-nft-save"]) symlinkSync(which(name)!, join(fakeDir, name));
    writeFileSync(join(fakeDir, "ip6tables-nft-restore"), "#!/bin/sh\ncat >/dev/null\necho 'ip6tables-restore v1.8.9 (nf_tables): line 5: RULE_APPEND failed (Invalid argument): rule in chain TPROXY-EGRESS' >&2\nexit 4\n");
    chmodSync(join(fakeDir, "ip6tables-nft-restore"), 0o755);
  });

  after(async () => {
    await ns?.destroy();
    rmSync(fakeDir, { recursive: true, force: true });
  });

  async function expectUntouched(): Promise<void> {
    expect(await ruleset(ns, "iptables-save")).to.equal(before4);
    expect(await ruleset(ns, "ip6tables-save")).to.equal(before6);
  }

  function expectFailure(r: RunResult, code: number, message: RegExp): void {
    expect(r.code, r.stderr).to.equal(code);
    expect(lastLine(r.stderr)).to.match(message);
    expect(r.stdout).to.equal("");
  }

  it("a missing iptables binary: exit 3, names the program and the PATH", async () => {
    const r = await ns.run("env", ["-i", "PATH=/nonexistent", NODE, CLI, "--no-wait"]);
    expectFailure(r, 3, /^tproxy-sidecar-init: iptables binary not found: iptables-save is not on PATH \(\/nonexistent\); the init container image needs the iptables package/);
    await expectUntouched();
  });

  it("a missing binary of the chosen backend: exit 3", async () => {
    const r = await sidecar(ns, ["--no-wait", "--iptables-backend", "legacy"], { PATH: fakeDir });
    expectFailure(r, 3, /^tproxy-sidecar-init: iptables binary not found: iptables-legacy-save is not on PATH \(.*\), or choose another --iptables-backend$/);
    await expectUntouched();
  });

  it("no NET_ADMIN capability: exit 3, says which capability and that privileged is not needed", async () => {
    const r = await ns.run("setpriv", ["--bounding-set", "-net_admin", "--inh-caps", "-net_admin", "env", ...envArgs(), NODE, CLI, "--no-wait"]);
    expectFailure(r, 3, /^tproxy-sidecar-init: missing capability NET_ADMIN: .*securityContext\.capabilities\.add \(privileged is not needed\)$/);
    await expectUntouched();
  });

  it("no NET_RAW with the legacy backend: exit 3", async () => {
    const r = await ns.run("setpriv", ["--bounding-set", "-net_raw", "--inh-caps", "-net_raw", "env", ...envArgs(), NODE, CLI, "--no-wait", "--iptables-backend", "legacy"]);
    expectFailure(r, 3, /^tproxy-sidecar-init: missing capability NET_RAW: the legacy iptables backend opens a raw socket/);
    await expectUntouched();
  });

  it("an invalid CIDR: exit 2, names the flag and the value", async () => {
    const r = await sidecar(ns, ["--no-wait", "--block-cidr", "10.96.0.0/33"]);
    expectFailure(r, 2, /^tproxy-sidecar-init: --block-cidr: invalid value "10\.96\.0\.0\/33", expected a CIDR such as 10\.96\.0\.0\/12 or fd00:10:96::\/112 \(prefix 0-32\)$/);
    await expectUntouched();
  });

  it("an invalid IP in a tutorial variable: exit 2, names the variable", async () => {
    const r = await sidecar(ns, ["--no-wait"], { ALLOW_DNS: "10.96.0.10,10.96.0.256" });
    expectFailure(r, 2, /^tproxy-sidecar-init: ALLOW_DNS \(environment, for --allow-dns\): invalid value "10\.96\.0\.256", expected an IPv4 or IPv6 address/);
    await expectUntouched();
  });

  it("a resolv.conf without a nameserver and no --allow-dns: exit 2, names the file and the way out", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tsi-resolv-"));
    try {
      writeFileSync(join(dir, "resolv.conf"), "search cluster.local\noptions ndots:5\n");
      const r = await sidecar(ns, ["--no-wait"], { RESOLV_CONF: join(dir, "resolv.conf") });
      expectFailure(r, 2, /^tproxy-sidecar-init: \/\S+\/resolv\.conf \(--resolv-conf, RESOLV_CONF\) lists no nameserver, so the lock would allow DNS to none; name the resolvers with --allow-dns IP \(or ALLOW_DNS\), or --allow-dns any to allow every address$/);
      await expectUntouched();
      // --allow-dns given: the file is not needed.
      const given = await sidecar(ns, ["--dry-run", "--resolv-conf", join(dir, "resolv.conf"), "--allow-dns", "10.96.0.10"]);
      expect(given.code, given.stderr).to.equal(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a node name that does not resolve: exit 3, names it", async () => {
    const r = await sidecar(ns, ["--no-wait"], { NODE_NAME: "gke-no-such-node" });
    expectFailure(r, 3, /^tproxy-sidecar-init: cannot resolve node name "gke-no-such-node" \(--node-name \/ NODE_NAME\): (ENOTFOUND|EAI_AGAIN|EAI_FAIL); pass the node's IP with --node-ip, or check the pod's DNS$/);
    await expectUntouched();
  });

  it("an IPv6 transaction the kernel refuses: exit 3, and the IPv4 one is not applied either", async () => {
    const r = await sidecar(ns, ["--no-wait", "--iptables-backend", "nft"], { PATH: `${fakeDir}:/usr/bin:/bin` });
    expectFailure(r, 3, /^tproxy-sidecar-init: \S*ip6tables-nft-restore failed while checking the rules \(exit 4\): ip6tables-restore v1\.8\.9 \(nf_tables\): line 5: RULE_APPEND failed/);
    await expectUntouched();
  });

  it("an unknown flag: exit 2", async () => {
    const r = await sidecar(ns, ["--allow-dnss", "10.0.0.10"]);
    expectFailure(r, 2, /^tproxy-sidecar-init: unknown option '--allow-dnss'/);
    await expectUntouched();
  });
});
