// The nft and legacy backends in fresh namespaces: idempotence, auto following the backend in use, and
// --dry-run printing exactly what a run applies.
import { expect } from "chai";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Netns, uniqueName } from "../../../test/support/netns.ts";
import { PATH, lastLine, ruleset, sidecar, removeOldStale } from "./support.ts";

const ARGS = ["--no-wait", "--allow-dns", "10.96.0.10,fd00:10:96::a", "--block-cidr", "10.96.0.0/12,fd00:10:96::/112", "--node-ip", "10.128.0.2"];

describe("sidecar-init iptables backends", function () {
  this.timeout(30_000);
  const spaces: Netns[] = [];
  const fresh = async (): Promise<Netns> => {
    const ns = await Netns.create(uniqueName("tsib"));
    spaces.push(ns);
    // The pod's interface and addresses (the lock allows only them as sources); no link-local address,
    // so two namespaces get the same rules.
    await ns.must("ip", ["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
    await ns.must("ip", ["addr", "add", "10.128.1.5/24", "dev", "eth0"]);
    await ns.must("ip", ["addr", "add", "fd00:128:1::5/64", "dev", "eth0", "nodad"]);
    for (const dev of ["eth0", "eth0p"]) await ns.must("ip", ["link", "set", dev, "addrgenmode", "none"]);
    for (const dev of ["eth0", "eth0p"]) await ns.must("ip", ["link", "set", dev, "up"]);
    return ns;
  };

  // PATH folders whose restore programs refuse every input, as a backend whose kernel side is broken does.
  const dirs: string[] = [];
  const refusing = (...programs: string[]): string => {
    const dir = mkdtempSync(join(tmpdir(), "tsi-refuse-"));
    dirs.push(dir);
    for (const p of programs) {
      writeFileSync(join(dir, p), `#!/bin/sh\ncat >/dev/null\necho '${p}: line 2 failed: Could not process rule: No such file or directory' >&2\nexit 1\n`);
      chmodSync(join(dir, p), 0o755);
    }
    return `${dir}:${PATH}`;
  };

  before(() => removeOldStale("tsib"));
  after(async () => {
    for (const ns of spaces) await ns.destroy();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it("legacy: a second run leaves iptables-legacy-save and ip6tables-legacy-save byte-identical", async () => {
    const ns = await fresh();
    const first = await sidecar(ns, [...ARGS, "--iptables-backend", "legacy"]);
    expect(first.code, first.stderr).to.equal(0);
    const v4 = await ruleset(ns, "iptables-legacy-save");
    const v6 = await ruleset(ns, "ip6tables-legacy-save");
    expect(v4).to.include("-A OUTPUT -j TPROXY-EGRESS\n");
    expect(v6).to.include("-A TPROXY-EGRESS -s fd00:128:1::5/128 -d fd00:10:96::a/128 -p udp -m udp --dport 53 -j ACCEPT\n");
    const second = await sidecar(ns, [...ARGS, "--iptables-backend", "legacy"]);
    expect(second.code, second.stderr).to.equal(0);
    expect(await ruleset(ns, "iptables-legacy-save")).to.equal(v4);
    expect(await ruleset(ns, "ip6tables-legacy-save")).to.equal(v6);
    // Nothing went to nf_tables.
    expect(await ruleset(ns, "iptables-nft-save")).not.to.include("TPROXY-EGRESS");

    // auto follows the backend that already holds the rules.
    const auto = await sidecar(ns, [...ARGS, "--log-level", "debug"]);
    expect(auto.code, auto.stderr).to.equal(0);
    expect(auto.stderr).to.include('"backend":"legacy"');
    expect(await ruleset(ns, "iptables-legacy-save")).to.equal(v4);
    expect(await ruleset(ns, "iptables-nft-save")).not.to.include("TPROXY-EGRESS");
  });

  it("--dry-run changes nothing, and what it prints is exactly what a run applies", async () => {
    const printed = await fresh();
    const empty4 = await ruleset(printed, "iptables-save");
    const empty6 = await ruleset(printed, "ip6tables-save");
    const dry = await sidecar(printed, [...ARGS, "--dry-run"]);
    expect(dry.code, dry.stderr).to.equal(0);
    expect(await ruleset(printed, "iptables-save")).to.equal(empty4);
    expect(await ruleset(printed, "ip6tables-save")).to.equal(empty6);

    const [v4, v6] = dry.stdout.split(/^# IPv6: .*\n/m);
    expect(v4).to.match(/^# IPv4: \S+ --noflush\n\*filter\n:TPROXY-EGRESS - \[0:0\]\n-I OUTPUT 1 -j TPROXY-EGRESS\n/);
    await printed.must("iptables-nft-restore", ["--noflush"], { input: v4! });
    await printed.must("ip6tables-nft-restore", ["--noflush"], { input: v6! });

    const applied = await fresh();
    const run = await sidecar(applied, ARGS);
    expect(run.code, run.stderr).to.equal(0);
    expect(await ruleset(printed, "iptables-save")).to.equal(await ruleset(applied, "iptables-save"));
    expect(await ruleset(printed, "ip6tables-save")).to.equal(await ruleset(applied, "ip6tables-save"));
  });

  it("auto: when the backend it chose cannot apply the lock, the other one takes it, and the log says so", async () => {
    const ns = await fresh();
    // A fresh namespace: no rules anywhere, so auto picks nft, whose restore refuses here.
    const r = await sidecar(ns, ARGS, { PATH: refusing("iptables-nft-restore", "ip6tables-nft-restore") });
    expect(r.code, r.stderr).to.equal(0);
    const logs = r.stderr.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(logs.map((l) => l["msg"])).to.include.members(["iptables backend nft: no kubelet chain in either backend; legacy does not hold more rules (0 against nft's 0), and nft is the default", "iptables backend nft cannot apply the lock; falling back to legacy"]);
    expect(logs.filter((l) => l["msg"] === "egress locked").map((l) => l["backend"])).to.deep.equal(["legacy", "legacy"]);
    // The lock is in the kernel, in legacy's tables, and nowhere in nft's.
    expect(await ruleset(ns, "iptables-legacy-save")).to.include("-A OUTPUT -j TPROXY-EGRESS\n");
    expect(await ruleset(ns, "ip6tables-legacy-save")).to.include("-A OUTPUT -j TPROXY-EGRESS\n");
    expect(await ruleset(ns, "iptables-nft-save")).not.to.include("TPROXY-EGRESS");
    expect(await ruleset(ns, "ip6tables-nft-save")).not.to.include("TPROXY-EGRESS");
  });

  it("auto: when neither backend can apply, the error names both and nothing is locked; a named backend is not swapped", async () => {
    const ns = await fresh();
    const before4 = await ruleset(ns, "iptables-nft-save");
    const both = await sidecar(ns, ARGS, { PATH: refusing("iptables-nft-restore", "ip6tables-nft-restore", "iptables-legacy-restore", "ip6tables-legacy-restore") });
    expect(both.code, both.stderr).to.equal(3);
    expect(lastLine(both.stderr)).to.match(
      /^tproxy-sidecar-init: neither iptables backend could apply the lock: nft: \S*iptables-nft-restore failed while checking the rules \(exit 1\): iptables-nft-restore: line 2 failed: .*; legacy: \S*iptables-legacy-restore failed while checking the rules \(exit 1\): iptables-legacy-restore: line 2 failed: /,
    );
    // Control: nft named, the same refusal is final (no fallback).
    const named = await sidecar(ns, [...ARGS, "--iptables-backend", "nft"], { PATH: refusing("iptables-nft-restore", "ip6tables-nft-restore") });
    expect(named.code, named.stderr).to.equal(3);
    expect(lastLine(named.stderr)).to.match(/^tproxy-sidecar-init: \S*iptables-nft-restore failed while checking the rules \(exit 1\)/);
    expect(named.stderr).not.to.include("falling back");
    for (const save of ["iptables-legacy-save", "ip6tables-legacy-save", "iptables-nft-save", "ip6tables-nft-save"]) {
      expect(await ruleset(ns, save), save).not.to.include("TPROXY-EGRESS");
    }
    expect(await ruleset(ns, "iptables-nft-save")).to.equal(before4);
  });
});
