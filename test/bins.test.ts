// The workspace packages' bins, as `npx tproxy --help` reaches them right after `npm ci` in a fresh
// clone: npm links them before the root `prepare` builds dist/, so each bin must be a committed file.
import { expect } from "chai";
import { execFile } from "node:child_process";
import { readFileSync, realpathSync, statSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { REPO_ROOT } from "./support/helm.ts";

const pexec = promisify(execFile);
const BIN_DIR = join(REPO_ROOT, "node_modules/.bin");

const bins: { pkg: string; bin: string; target: string }[] = [];
for (const pkg of ["tproxy", "podwatch", "sidecar-init", "injector"]) {
  const p = JSON.parse(readFileSync(join(REPO_ROOT, "packages", pkg, "package.json"), "utf8")) as { bin: Record<string, string> };
  for (const [bin, target] of Object.entries(p.bin)) bins.push({ pkg, bin, target: join("packages", pkg, target) });
}

describe("the packages' bins (npx tproxy --help after npm ci)", () => {
  it("names bins, each a committed, executable file outside dist/", async () => {
    expect(bins.map((b) => b.bin)).to.deep.equal(["tproxy", "tproxy-podwatch", "tproxy-sidecar-init", "tproxy-cni-install", "tproxy-injector"]);
    const tracked = (await pexec("git", ["ls-files", "--stage", ...bins.map((b) => b.target)], { cwd: REPO_ROOT })).stdout;
    for (const b of bins) {
      expect(b.target, b.bin).not.to.match(/(^|\/)dist\//);
      // Mode 100755 in git: a clone gets the executable bit without any build step.
      expect(tracked, `${b.target} is committed as executable`).to.match(new RegExp(`^100755 \\S+ 0\\t${b.target}$`, "m"));
    }
    const lock = JSON.parse(readFileSync(join(REPO_ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, { bin?: Record<string, string> }> };
    for (const b of bins) {
      // npm ci links what the lockfile says, not package.json.
      expect(lock.packages[`packages/${b.pkg}`]?.bin?.[b.bin], `package-lock.json bin ${b.bin}`).to.equal(b.target.replace(`packages/${b.pkg}/`, "").replace(/^\.\//, ""));
    }
  });

  for (const { bin, target } of bins) {
    it(`node_modules/.bin/${bin} --help exits 0`, async () => {
      const link = join(BIN_DIR, bin);
      expect(realpathSync(link)).to.equal(join(REPO_ROOT, target));
      expect(statSync(link).mode & 0o111).to.equal(0o111);
      // As npx runs it: node_modules/.bin first on PATH, so the shebang finds the project's Node.js.
      const { stdout } = await pexec(link, ["--help"], { env: { ...process.env, PATH: `${BIN_DIR}:${process.env["PATH"]}` } });
      expect(stdout).to.match(new RegExp(`^Usage: ${bin}`));
    });
  }
});
