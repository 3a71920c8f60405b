import { expect } from "chai";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chooseTools, IptablesMissingError, type Runner } from "../src/index.ts";

/** A PATH directory holding empty executables with the given names. */
function fakeBin(names: readonly string[]): string {
  const dir = mkdtempSync(join(tmpdir(), "tsi-bin-"));
  for (const n of names) {
    writeFileSync(join(dir, n), "#!/bin/sh\nexit 0\n");
    chmodSync(join(dir, n), 0o755);
  }
  return dir;
}

const variant = (v: string): string[] => ["iptables", "ip6tables"].flatMap((f) => [`${f}${v}-save`, `${f}${v}-restore`]);

/** Reports `legacyRules` rules from legacy saves and `nftRules` from nft saves. */
function counting(legacyRules: number, nftRules: number): Runner {
  return async (file) => {
    const n = file.includes("legacy") ? legacyRules : nftRules;
    return { code: 0, stdout: "*filter\n" + "-A OUTPUT -j ACCEPT\n".repeat(n) + "COMMIT\n", stderr: "" };
  };
}

describe("sidecar-init iptables backend choice", () => {
  const dirs: string[] = [];
  after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  const bin = (names: readonly string[]): string => {
    const d = fakeBin(names);
    dirs.push(d);
    return d;
  };

  it("auto prefers nft, and legacy only when legacy already holds more rules", async () => {
    const both = bin([...variant("-nft"), ...variant("-legacy")]);
    expect((await chooseTools("auto", counting(0, 0), both)).backend).to.equal("nft");
    expect((await chooseTools("auto", counting(3, 1), both)).backend).to.equal("legacy");
    const t = await chooseTools("auto", counting(1, 3), both);
    expect(t).to.deep.include({ backend: "nft" });
    expect(t.ipv6.restore).to.equal(join(both, "ip6tables-nft-restore"));
  });

  it("auto falls back to the unsuffixed binaries", async () => {
    const plain = bin(variant(""));
    const t = await chooseTools("auto", counting(0, 0), plain);
    expect(t.backend).to.equal("default");
    expect(t.ipv4.save).to.equal(join(plain, "iptables-save"));
  });

  it("names the missing program and the PATH searched", async () => {
    const onlyV4 = bin(["iptables-legacy-save", "iptables-legacy-restore"]);
    const err = await chooseTools("legacy", counting(0, 0), onlyV4).then(() => undefined, (e: unknown) => e);
    expect(err).to.be.instanceOf(IptablesMissingError);
    expect((err as Error).message).to.equal(
      `iptables binary not found: ip6tables-legacy-save is not on PATH (${onlyV4}); the init container image needs the iptables package (iptables-restore and ip6tables-restore), or choose another --iptables-backend`,
    );
    const none = await chooseTools("auto", counting(0, 0), "/nonexistent").then(() => undefined, (e: unknown) => e);
    expect((none as Error).message).to.match(/^iptables binary not found: iptables-save is not on PATH \(\/nonexistent\)/);
  });
});
