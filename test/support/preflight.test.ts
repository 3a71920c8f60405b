// The preflight `npm start` and `npm test` run first, and the one prerequisites list behind it, the
// README's apt-get line and .ci/run's.
import { expect } from "chai";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import { REPO_ROOT } from "./helm.ts";
import { aptLine, missingPrerequisites, packagesOf, readPrerequisites } from "./prerequisites.ts";

const pexec = promisify(execFile);
const PREFLIGHT = join(REPO_ROOT, "test/support/preflight.ts");

/** A folder of links to every prerequisite command on this machine except `leave`. */
async function pathWithout(leave: string[]): Promise<{ dir: string; done: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), "tproxy-preflight-"));
  for (const p of readPrerequisites()) {
    if (p.what.startsWith("/") || leave.includes(p.what)) continue;
    const target = (await pexec("sh", ["-c", `command -v ${p.what}`])).stdout.trim();
    symlinkSync(target, join(dir, p.what));
  }
  return { dir, done: () => rmSync(dir, { recursive: true, force: true }) };
}

async function preflight(path: string, uid?: number): Promise<{ code: number; stderr: string }> {
  try {
    const r = await pexec(process.execPath, [PREFLIGHT], { env: { PATH: path }, uid, cwd: "/" });
    return { code: 0, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stderr: string };
    return { code: e.code, stderr: e.stderr };
  }
}

describe("preflight (npm start, npm test)", () => {
  it("exits 0 when every prerequisite is there and it runs as root", async () => {
    const p = await pathWithout([]);
    try {
      expect(await preflight(p.dir)).to.deep.equal({ code: 0, stderr: "" });
    } finally {
      p.done();
    }
  });

  it("names a missing command and the apt-get line that installs it", async () => {
    const p = await pathWithout(["nc"]);
    try {
      const r = await preflight(p.dir);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.equal("tproxy preflight: missing nc (netcat-openbsd); install with:\n    apt-get install -y netcat-openbsd\n");
    } finally {
      p.done();
    }
  });

  it("names every missing command at once, each package once", async () => {
    const p = await pathWithout(["nc", "ss", "ip", "python3"]);
    try {
      const r = await preflight(p.dir);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.equal(
        "tproxy preflight: missing ip (iproute2), ss (iproute2), nc (netcat-openbsd), python3 (python3); install with:\n" +
          "    apt-get install -y iproute2 netcat-openbsd python3\n",
      );
    } finally {
      p.done();
    }
  });

  it("says it needs root when it does not run as root", async () => {
    const p = await pathWithout([]);
    try {
      const r = await preflight(p.dir, 65534);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/^tproxy preflight: needs root: /);
    } finally {
      p.done();
    }
  });

  it("runs before anything else in npm start and npm test", () => {
    const scripts = (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts;
    for (const s of ["start", "test"]) expect(scripts[s], s).to.match(/^node test\/support\/preflight\.ts && /);
  });
});

describe("the prerequisites list", () => {
  const pkgs = packagesOf(readPrerequisites());

  it("is what the README's quick start installs", () => {
    const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
    const lines = readme.split("\n").filter((l) => l.includes("apt-get install"));
    expect(lines).to.deep.equal([aptLine(pkgs)]);
  });

  it("is what .ci/run installs (read by plain bash, before npm ci)", async () => {
    const ci = readFileSync(join(REPO_ROOT, ".ci/run"), "utf8");
    expect(ci).to.include("list=$(bash test/support/prerequisites.sh)\nread -r -a packages <<<\"$list\"\n");
    expect(ci).to.include('apt-get install -y -qq --no-install-recommends "${packages[@]}"');
    expect(ci.indexOf("prerequisites.sh")).to.be.lessThan(ci.indexOf("npm ci"));
    const { stdout } = await pexec("bash", [join(REPO_ROOT, "test/support/prerequisites.sh")], { env: { PATH: "/usr/bin:/bin" } });
    expect(stdout).to.equal(`${pkgs.join(" ")}\n`);
  });

  it("names a Debian package for every entry, and each command the package ships", async () => {
    expect(() => readPrerequisites("ip\n")).to.throw('prerequisites.txt:1: "ip" needs a command and a Debian package');
    expect(missingPrerequisites([{ what: "/nonexistent/file", pkg: "x" }, { what: "sh", pkg: "dash" }], "/usr/bin:/bin")).to.deep.equal([
      { what: "/nonexistent/file", pkg: "x" },
    ]);
    // On this (Debian) machine, dpkg agrees on which package ships each command.
    for (const p of readPrerequisites()) {
      // By name, not the resolved link: iptables resolves through /etc/alternatives to another file,
      // and with merged /usr dpkg knows /bin/ip, not /usr/bin/ip. Names managed as alternatives (iptables,
      // nc) are owned by no package: the file they resolve to is.
      const names = p.what.startsWith("/") ? [] : [p.what, basename(realpathSync((await pexec("sh", ["-c", `command -v ${p.what}`])).stdout.trim()))];
      if (p.what.startsWith("/")) {
        // A file a package's install script makes (the CA bundle): no package owns it; the package is installed.
        const { stdout } = await pexec("dpkg-query", ["-W", "-f=${Status}", p.pkg]);
        expect(stdout, p.what).to.equal("install ok installed");
        continue;
      }
      const paths = names.flatMap((n) => ["/bin", "/sbin", "/usr/bin", "/usr/sbin"].map((d) => `${d}/${n}`));
      const { stdout } = await pexec("sh", ["-c", paths.map((f) => `dpkg -S ${f} 2>/dev/null`).join(" || ")]);
      const owner = stdout.split(":")[0]!;
      if (owner === p.pkg) continue;
      // python3's binary is in python3-minimal, which python3 pre-depends on: installing python3 brings it.
      const depends = (await pexec("dpkg-query", ["-W", "-f=${Pre-Depends}, ${Depends}", p.pkg])).stdout;
      expect(depends.split(/,\s*/).map((d) => d.split(/[\s:]/)[0]), `${p.what}: owned by ${owner}, which ${p.pkg} should be or depend on`).to.include(owner);
    }
  });
});
