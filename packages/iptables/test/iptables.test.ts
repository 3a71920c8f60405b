// The shared iptables pieces without root: failure kinds from real iptables messages, the arguments
// restore runs with, and the backend detection's order (kubelet chains in nft, then in legacy, then
// rule counts) against a stand-in runner that plays each backend's saves.
import { expect } from "chai";
import { classify, detectBackend, execRunner, IptablesFailure, restore, save, type FamilyTools, type Runner, type Tools } from "../src/index.ts";

const tools = (b: "nft" | "legacy"): Tools => ({
  backend: b,
  ipv4: { family: "ipv4", save: `/sbin/iptables-${b}-save`, restore: `/sbin/iptables-${b}-restore` },
  ipv6: { family: "ipv6", save: `/sbin/ip6tables-${b}-save`, restore: `/sbin/ip6tables-${b}-restore` },
});
const both = { nft: tools("nft"), legacy: tools("legacy") };

/** A node: what each `save` program prints, by program and table ("" for a full save). */
function node(tables: Record<string, string>, calls: string[] = []): Runner {
  return async (file, args) => {
    const table = args[0] === "-t" ? (args[1] ?? "") : "";
    calls.push(`${file.split("/").at(-1)} ${args.join(" ")}`.trim());
    const key = `${file.split("/").at(-1)} ${table}`.trim();
    return { code: 0, stdout: tables[key] ?? "", stderr: "" };
  };
}

const HINT = "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";
const CANARY = "*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n";
const rules = (n: number) => `*nat\n:KUBE-SERVICES - [0:0]\n${"-A KUBE-SERVICES -j RETURN\n".repeat(n)}COMMIT\n`;

describe("@tproxy/iptables", () => {
  describe("failure kinds", () => {
    it("tells the lock, a refused permission, bad rules, a missing program and a timeout apart", () => {
      expect(classify(4, "Another app is currently holding the xtables lock. Stopped waiting after 10s.\n")).to.equal("lock");
      expect(classify(4, "iptables-restore v1.8.9 (legacy): iptables-restore: unable to initialize table 'filter'\n\nError occurred at line: 1\n")).to.equal("other");
      expect(classify(4, "iptables-legacy-save v1.8.9 (legacy): Cannot initialize: Permission denied (you must be root)\n")).to.equal("permission");
      expect(classify(1, "iptables-nft-restore: line 2 failed: Could not fetch rule set generation id: Operation not permitted\n")).to.equal("permission");
      expect(classify(1, "iptables-nft-restore: line 2 failed: No chain/target/match by that name.\n")).to.equal("rules");
      expect(classify(2, "iptables-restore v1.8.9 (nf_tables): unknown option \"--bogus\"\n")).to.equal("rules");
      expect(classify(127, "env: 'iptables-nft-restore': No such file or directory\n")).to.equal("missing");
      expect(classify(null, "", true)).to.equal("timeout");
      expect(classify(1, "something else\n")).to.equal("other");
    });

    it("runs the real programs: a rule the parser refuses is `rules`, a program not there is `missing`", async () => {
      const run = execRunner();
      const t: FamilyTools = { family: "ipv4", save: "/usr/sbin/iptables-nft-save", restore: "/usr/sbin/iptables-nft-restore" };
      const bad = await restore(t, "*filter\n-A OUTPUT --no-such-option\nCOMMIT\n", run, { test: true }).then(() => undefined, (e: unknown) => e);
      expect(bad).to.be.instanceOf(IptablesFailure);
      expect((bad as IptablesFailure).kind).to.equal("rules");
      expect((bad as IptablesFailure).command).to.equal("iptables-nft-restore -w 10 --noflush --test");
      const gone = await save({ ...t, save: "/nonexistent/iptables-save" }, run).then(() => undefined, (e: unknown) => e);
      expect(gone).to.be.instanceOf(IptablesFailure);
      expect((gone as IptablesFailure).kind).to.equal("missing");
      expect((gone as IptablesFailure).message).to.match(/^iptables-save failed \(no exit status, missing\): cannot start \/nonexistent\/iptables-save: .*ENOENT/);
    });
  });

  it("restore waits for the xtables lock, keeps other rules (--noflush) and checks only with --test", async () => {
    const calls: string[] = [];
    const run: Runner = async (file, args, input) => {
      calls.push(`${file} ${args.join(" ")} <${input?.length}`);
      return { code: 0, stdout: "", stderr: "" };
    };
    await restore(tools("nft").ipv4, "*nat\nCOMMIT\n", run);
    await restore(tools("legacy").ipv6, "*filter\nCOMMIT\n", run, { test: true, lockWaitSeconds: 3 });
    expect(calls).to.deep.equal(["/sbin/iptables-nft-restore -w 10 --noflush <12", "/sbin/ip6tables-legacy-restore -w 3 --noflush --test <15"]);
  });

  describe("backend detection (as kubernetes-sigs/iptables-wrappers)", () => {
    it("the kubelet's chains in nft's mangle table: nft, read with -t mangle, before anything of legacy", async () => {
      const calls: string[] = [];
      const d = await detectBackend(both, node({ "ip6tables-nft-save mangle": CANARY, "iptables-legacy-save": HINT + rules(9) }, calls));
      expect(d).to.deep.equal({ backend: "nft", reason: "KUBE-KUBELET-CANARY in the nft mangle table" });
      expect(calls).to.deep.equal(["iptables-nft-save -t mangle", "ip6tables-nft-save -t mangle"]);
    });

    it("the kubelet's chains in legacy: legacy, read with full saves (-t mangle would create the table)", async () => {
      const calls: string[] = [];
      const d = await detectBackend(both, node({ "iptables-legacy-save": HINT, "iptables-nft-save": rules(5) }, calls));
      expect(d).to.deep.equal({ backend: "legacy", reason: "KUBE-IPTABLES-HINT in the legacy mangle table" });
      expect(calls.filter((c) => c.includes("legacy"))).to.deep.equal(["iptables-legacy-save", "ip6tables-legacy-save"]);
    });

    it("no kubelet chain: legacy only when it holds more rules, both families counted; a failing save counts as empty", async () => {
      expect((await detectBackend(both, node({ "iptables-legacy-save": rules(2), "ip6tables-legacy-save": rules(2), "iptables-nft-save": rules(3) }))).backend).to.equal("legacy");
      expect((await detectBackend(both, node({ "iptables-legacy-save": rules(3), "iptables-nft-save": rules(3) }))).backend).to.equal("nft");
      expect((await detectBackend(both, node({}))).reason).to.equal("no kubelet chain in either backend; legacy does not hold more rules (0 against nft's 0), and nft is the default");
      const failing: Runner = async (file) => (file.includes("legacy") ? { code: 0, stdout: rules(1), stderr: "" } : { code: 4, stdout: "", stderr: "Permission denied" });
      expect(await detectBackend(both, failing)).to.deep.equal({ backend: "legacy", reason: "no kubelet chain in either backend; legacy holds more rules (2 against nft's 0)" });
    });
  });
});
