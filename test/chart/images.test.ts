// The Dockerfiles under docker/: no Docker engine runs here, so each one is checked for what a build
// from a clean context needs (every COPY source exists and survives .dockerignore, every command names
// a real script, bin or file) and for what the chart expects of the image (its command, its user).
// The build stage's assemble step and the example app's loop are run for real.
import { expect } from "chai";
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, matchesGlob } from "node:path";
import { promisify } from "node:util";
import { parse as parseYaml } from "yaml";
import { REPO_ROOT, one, template } from "../support/helm.ts";
import { KubeApiStandIn } from "../support/kube-api-stand-in.ts";
import { Netns, removeStale, uniqueName } from "../support/netns.ts";

const pexec = promisify(execFile);
const DOCKER = join(REPO_ROOT, "docker");

interface Instruction {
  op: string;
  args: string;
  line: number;
}

/** Dockerfile → instructions (continuation lines joined, comments dropped). */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let buf = "";
  let start = 0;
  text.split("\n").forEach((raw, i) => {
    const line = raw.trimEnd();
    if (buf === "" && (line.trim() === "" || line.trim().startsWith("#"))) return;
    if (buf === "") start = i + 1;
    if (line.trim().startsWith("#")) return; // comment inside a continued instruction
    buf += (buf ? " " : "") + line.replace(/\\$/, "").trim();
    if (!line.endsWith("\\")) {
      const m = /^(\S+)\s+(.*)$/.exec(buf)!;
      out.push({ op: m[1]!.toUpperCase(), args: m[2]!, line: start });
      buf = "";
    }
  });
  return out;
}

/** Splits instructions into stages by FROM. */
function stages(ins: Instruction[]): { from: string; name: string | undefined; body: Instruction[] }[] {
  const out: { from: string; name: string | undefined; body: Instruction[] }[] = [];
  for (const i of ins) {
    if (i.op === "FROM") {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(i.args)!;
      out.push({ from: m[1]!, name: m[2], body: [] });
    } else {
      out.at(-1)!.body.push(i);
    }
  }
  return out;
}

/** .dockerignore patterns (no negations are used); true when `path` would be left out of the context. */
function ignored(path: string): boolean {
  const patterns = readFileSync(join(REPO_ROOT, ".dockerignore"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  expect(patterns.some((p) => p.startsWith("!")), "negated .dockerignore patterns are not handled here").to.equal(false);
  const parts = path.split("/");
  // A path is left out when it or any parent folder matches a pattern.
  for (let n = 1; n <= parts.length; n++) {
    const prefix = parts.slice(0, n).join("/");
    if (patterns.some((p) => matchesGlob(prefix, p))) return true;
  }
  return false;
}

const dockerfiles = readdirSync(DOCKER).filter((f) => f.endsWith(".Dockerfile")).sort();
const rootPkg = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> };
const pkgBins: Record<string, string> = {};
for (const pkg of ["tproxy", "podwatch", "sidecar-init", "injector"]) {
  const p = JSON.parse(readFileSync(join(REPO_ROOT, "packages", pkg, "package.json"), "utf8")) as { bin: Record<string, string> };
  for (const [bin, target] of Object.entries(p.bin)) pkgBins[bin] = join("packages", pkg, target.replace(/^\.\//, ""));
}

describe("docker/ images", function () {
  this.timeout(60_000);

  it("has one Dockerfile per image the chart names, and the chart's commands are the images' bins", async () => {
    expect(dockerfiles).to.deep.equal(["example-app.Dockerfile", "injector.Dockerfile", "podwatch.Dockerfile", "sidecar-init.Dockerfile", "tproxy.Dockerfile"]);
    const values = parseYaml(readFileSync(join(REPO_ROOT, "charts/tproxy/values.yaml"), "utf8")) as { images: Record<string, { repository: string }> };
    const byFile: Record<string, string> = { tproxy: "tproxy", podwatch: "podwatch", sidecarInit: "sidecar-init", exampleApp: "example-app", injector: "injector" };
    for (const [key, file] of Object.entries(byFile)) {
      expect(values.images[key]!.repository).to.equal(`tproxy/${file}`);
      expect(readFileSync(join(DOCKER, `${file}.Dockerfile`), "utf8")).to.include(`-t tproxy/${file}:0.1.0 .`);
    }

    // Rendered as against a cluster (the stand-in) where the chart may generate its CA.
    const api = await KubeApiStandIn.start({ anonymous: true });
    const objs = await template({ kubeconfig: api.kubeconfigPath }).finally(() => api.close());
    const ds = one(objs, "DaemonSet")["spec"] as { template: { spec: { containers: { name: string; command: string[]; securityContext: { runAsUser: number } }[] } } };
    const cmd = (name: string) => ds.template.spec.containers.find((c) => c.name === name)!;
    const testPod = one(objs, "Pod")["spec"] as { initContainers: { command: string[] }[] };
    const injector = (one(objs, "Deployment", "-injector")["spec"] as { template: { spec: { containers: { command: string[]; securityContext: { runAsUser: number } }[] } } }).template.spec.containers[0]!;
    const expectations: [string, string, number | undefined][] = [
      ["tproxy.Dockerfile", cmd("tproxy").command[0]!, cmd("tproxy").securityContext.runAsUser],
      ["podwatch.Dockerfile", cmd("podwatch").command[0]!, undefined],
      ["sidecar-init.Dockerfile", testPod.initContainers[0]!.command[0]!, undefined],
      ["injector.Dockerfile", injector.command[0]!, injector.securityContext.runAsUser],
    ];
    for (const [file, bin, uid] of expectations) {
      const ins = parseDockerfile(readFileSync(join(DOCKER, file), "utf8"));
      const final = stages(ins).at(-1)!;
      const runs = final.body.filter((i) => i.op === "RUN").map((i) => i.args).join("\n");
      // The bin the chart runs is linked onto PATH from the package's own bin target.
      expect(pkgBins, file).to.have.property(bin);
      expect(runs, file).to.include(`ln -s /app/${pkgBins[bin]} /usr/local/bin/${bin}`);
      expect(final.body.find((i) => i.op === "ENTRYPOINT")?.args, file).to.equal(`["${bin}"]`);
      const user = final.body.filter((i) => i.op === "USER").at(-1)?.args;
      if (uid !== undefined) expect(user, `${file} USER`).to.equal(`${uid}:${uid}`);
      else expect(user, `${file} runs as root (iptables)`).to.equal(undefined);
    }
  });

  for (const file of ["tproxy.Dockerfile", "podwatch.Dockerfile", "sidecar-init.Dockerfile", "injector.Dockerfile", "example-app.Dockerfile"]) {
    describe(file, () => {
      const ins = parseDockerfile(readFileSync(join(DOCKER, file), "utf8"));
      const st = stages(ins);

      it("copies only sources that exist in a clean checkout and that .dockerignore keeps", () => {
        const copies = ins.filter((i) => i.op === "COPY" && !i.args.startsWith("--from="));
        expect(copies.length).to.be.greaterThan(0);
        for (const c of copies) {
          const words = c.args.split(/\s+/).filter((w) => !w.startsWith("--"));
          for (const src of words.slice(0, -1)) {
            const path = src.replace(/\/$/, "");
            expect(existsSync(join(REPO_ROOT, path)), `${file}:${c.line} COPY ${src} exists`).to.equal(true);
            expect(ignored(path), `${file}:${c.line} COPY ${src} is not excluded by .dockerignore`).to.equal(false);
            // In a clean checkout: the source is tracked by git, not something built on this machine.
            expect(ignored(path) || !/(^|\/)(node_modules|dist|build)(\/|$)/.test(path), `${file}:${c.line} ${src}`).to.equal(true);
          }
        }
      });

      it("builds from the allowed base images, with compilers in the build stage only", () => {
        for (const s of st) expect(["node:24-bookworm-slim", "debian:bookworm-slim"], `${file} FROM ${s.from}`).to.include(s.from);
        const final = st.at(-1)!;
        const finalRuns = final.body.filter((i) => i.op === "RUN").map((i) => i.args).join("\n");
        expect(finalRuns).not.to.match(/\b(g\+\+|gcc|make|python3|build-essential)\b/);
        for (const c of final.body.filter((i) => i.op === "COPY" && i.args.startsWith("--from="))) {
          const stageName = /^--from=(\S+)/.exec(c.args)![1];
          expect(st.map((s) => s.name), `${file}:${c.line} --from=${stageName}`).to.include(stageName);
        }
        if (file !== "example-app.Dockerfile") {
          expect(st).to.have.length(2);
          const build = st[0]!.body.filter((i) => i.op === "RUN").map((i) => i.args).join("\n");
          expect(build).to.match(/\bpython3\b/).and.match(/\bmake\b/).and.match(/\bg\+\+/);
          // node-gyp's own variable (npm warns about npm_config_* names it does not know).
          expect(st[0]!.body.some((i) => i.op === "ENV" && i.args === "npm_package_config_node_gyp_nodedir=/usr/local")).to.equal(true);
          expect(ins.some((i) => i.args.includes("npm_config_")), "no npm_config_* variables").to.equal(false);
        }
      });

      if (file !== "example-app.Dockerfile") {
        const pkg = file.replace(/\.Dockerfile$/, "");
        it(`carries only @tproxy/${pkg}'s production dependencies, and the public CAs`, () => {
          const build = st[0]!.body.filter((i) => i.op === "RUN").map((i) => i.args).join("\n");
          // The full install (for tsc and the addon) is thrown away after the build; the one that reaches
          // the image is this workspace's production dependencies alone, and assemble.sh takes this package.
          const steps = build.split(/\s*&&\s*/);
          const at = (re: RegExp) => steps.findIndex((c) => re.test(c));
          const lean = at(/^npm ci .*--omit=dev/);
          expect(lean, "a production npm ci").to.be.greaterThan(-1);
          expect(steps[lean]!.split(/\s+/)).to.include.members(["--omit=dev", "--workspace", `@tproxy/${pkg}`, "--include-workspace-root=false", "--ignore-scripts"]);
          expect(at(/^rm -rf node_modules packages\/\*\/node_modules$/), "the full node_modules removed first").to.be.within(at(/^npm run build$/), lean);
          expect(at(/^npm prune/), "npm prune keeps every workspace's dependencies").to.equal(-1);
          expect(steps.slice(lean + 1).join("\n")).to.match(new RegExp(`^sh docker/assemble\\.sh /out ${pkg}$`, "m"));
          expect(steps.slice(lean + 1).some((c) => /^npm (ci|install|i)\b/.test(c)), "nothing installed after it").to.equal(false);
          const final = st.at(-1)!.body.filter((i) => i.op === "RUN").map((i) => i.args).join("\n");
          const apt = [...final.matchAll(/apt-get install -y --no-install-recommends ([^&]+)/g)].flatMap((m) => m[1]!.trim().split(/\s+/));
          expect(apt, "ca-certificates in the runtime image (/etc/ssl/certs)").to.include("ca-certificates");
        });
      }

      it("runs only commands that name real scripts, files and packages", () => {
        const runs = ins.filter((i) => i.op === "RUN").map((i) => i.args).join("\n");
        for (const m of runs.matchAll(/npm run (\S+)/g)) expect(rootPkg.scripts, `npm run ${m[1]}`).to.have.property(m[1]!);
        if (runs.includes("npm ci")) {
          expect(ins.some((i) => i.op === "COPY" && i.args.includes("package-lock.json")), "npm ci needs the lockfile").to.equal(true);
        }
        for (const m of runs.matchAll(/\bsh (docker\/\S+)/g)) {
          expect(existsSync(join(REPO_ROOT, m[1]!)), m[1]).to.equal(true);
          expect(ins.some((i) => i.op === "COPY" && i.args.includes(m[1]!)), `${m[1]} is copied into the build`).to.equal(true);
        }
        for (const m of runs.matchAll(/ln -s \/app\/(\S+) /g)) expect(Object.values(pkgBins), m[1]).to.include(m[1]);
        for (const m of runs.matchAll(/apt-get install -y --no-install-recommends ([^&]+)/g)) {
          for (const pkg of m[1]!.trim().split(/\s+/)) expect(pkg, "a Debian package name").to.match(/^[a-z0-9][a-z0-9+.-]+$/);
        }
        const cmd = ins.find((i) => i.op === "CMD" && i.args.includes("/usr/local/bin/start.sh"));
        if (file === "example-app.Dockerfile") expect(cmd, "example app starts its loop").to.not.equal(undefined);
      });
    });
  }

  it("podwatch runs the suffixed iptables programs Debian's iptables package ships, with no PATH trick", () => {
    const runs = parseDockerfile(readFileSync(join(DOCKER, "podwatch.Dockerfile"), "utf8")).filter((i) => i.op === "RUN").map((i) => i.args).join("\n");
    expect(runs).to.match(/apt-get install -y --no-install-recommends [^&]*\biptables\b/);
    expect(runs).not.to.include("/usr/local/lib/tproxy/iptables-legacy");
    const ds = readFileSync(join(REPO_ROOT, "charts/tproxy/templates/daemonset.yaml"), "utf8");
    expect(ds).not.to.match(/name: PATH\b/);
    // The same Debian package on this machine has the programs podwatch and sidecar-init look up.
    for (const f of ["iptables", "ip6tables"]) {
      for (const b of ["nft", "legacy"]) {
        for (const suffix of ["-save", "-restore"]) expect(existsSync(`/usr/sbin/${f}-${b}${suffix}`), `/usr/sbin/${f}-${b}${suffix}`).to.equal(true);
      }
    }
  });

  it("builds every workspace package in each image's build stage: those its package depends on and all tsc --build references", () => {
    const rootTsconfig = JSON.parse(readFileSync(join(REPO_ROOT, "tsconfig.json"), "utf8")) as { references: { path: string }[] };
    const referenced = rootTsconfig.references.map((r) => r.path.replace(/^packages\//, ""));
    expect(referenced, "the shared iptables package is built").to.include("iptables");
    const workspaces = readdirSync(join(REPO_ROOT, "packages")).filter((d) => existsSync(join(REPO_ROOT, "packages", d, "package.json"))).sort();
    expect([...referenced].sort(), "root tsconfig.json references every workspace package").to.deep.equal(workspaces);
    for (const pkg of ["tproxy", "podwatch", "sidecar-init", "injector"]) {
      const file = `${pkg}.Dockerfile`;
      const build = stages(parseDockerfile(readFileSync(join(DOCKER, file), "utf8")))[0]!;
      const copied = build.body.filter((i) => i.op === "COPY").flatMap((i) => i.args.split(/\s+/).filter((w) => !w.startsWith("--")).slice(0, -1)).map((w) => w.replace(/\/$/, ""));
      const json = JSON.parse(readFileSync(join(REPO_ROOT, "packages", pkg, "package.json"), "utf8")) as { dependencies?: Record<string, string> };
      const deps = Object.keys(json.dependencies ?? {}).filter((d) => d.startsWith("@tproxy/")).map((d) => d.slice("@tproxy/".length));
      if (pkg !== "injector") expect(deps, `${pkg} depends on @tproxy/iptables`).to.include("iptables");
      for (const dep of new Set([...referenced, ...deps])) {
        // tsc --build needs each referenced project's manifest, tsconfig and sources.
        for (const need of [`packages/${dep}/package.json`, `packages/${dep}/tsconfig.json`, `packages/${dep}/src`]) {
          expect(copied, `${file}: COPY ${need} (the package ${dep}, which tsc --build builds${deps.includes(dep) ? ` and ${pkg} imports` : ""})`).to.include(need);
        }
      }
    }
  });

  it("assembles one package's production files only: node_modules (without declarations and source maps but for tproxy), its package.json, bin and dist, the addon for tproxy", async () => {
    const src = mkdtempSync(join(tmpdir(), "tproxy-assemble-"));
    try {
      const put = (p: string, text = "x", mode = 0o644) => {
        mkdirSync(join(src, p, ".."), { recursive: true });
        writeFileSync(join(src, p), text, { mode });
      };
      put("package.json", "{}");
      put("node_modules/pino/index.js");
      put("node_modules/pino/index.d.ts");
      put("node_modules/pino/index.js.map");
      for (const pkg of ["tproxy", "podwatch", "sidecar-init"]) {
        put(`packages/${pkg}/package.json`, JSON.stringify({ dependencies: { pino: "^10", "@tproxy/iptables": "0.1.0" } }));
        put(`packages/${pkg}/bin/${pkg}.js`, "#!/usr/bin/env node\nimport '../dist/cli.js';\n", 0o755);
        put(`packages/${pkg}/dist/cli.js`);
        put(`packages/${pkg}/src/cli.ts`);
        put(`packages/${pkg}/test/a.test.ts`);
      }
      put("packages/tproxy/node_modules/chokidar/index.js");
      put("packages/tproxy/build/Release/original_dst.node");
      put("packages/tproxy/build/Release/obj.target/original_dst.o");
      put("packages/tproxy/native/original_dst.c");
      // The shared package podwatch and sidecar-init import, linked into node_modules as npm links workspaces.
      put("packages/iptables/package.json", "{}");
      put("packages/iptables/dist/index.js");
      put("packages/iptables/src/index.ts");
      put("packages/iptables/test/a.test.ts");
      mkdirSync(join(src, "node_modules/@tproxy"));
      symlinkSync("../../packages/iptables", join(src, "node_modules/@tproxy/iptables"));
      const assemble = async (pkg: string) => {
        const out = join(src, `out-${pkg}`);
        await pexec("sh", [join(DOCKER, "assemble.sh"), out, pkg], { cwd: src });
        return { out, files: (await pexec("find", [".", "-type", "f"], { cwd: out })).stdout.split("\n").filter(Boolean).sort() };
      };
      const tproxy = await assemble("tproxy");
      expect(tproxy.files).to.deep.equal([
        "./node_modules/pino/index.d.ts",
        "./node_modules/pino/index.js",
        "./node_modules/pino/index.js.map",
        "./package.json",
        "./packages/iptables/dist/index.js",
        "./packages/iptables/package.json",
        "./packages/tproxy/bin/tproxy.js",
        "./packages/tproxy/build/Release/original_dst.node",
        "./packages/tproxy/dist/cli.js",
        "./packages/tproxy/node_modules/chokidar/index.js",
        "./packages/tproxy/package.json",
      ]);
      const podwatch = await assemble("podwatch");
      expect(podwatch.files).to.deep.equal([
        "./node_modules/pino/index.js",
        "./package.json",
        "./packages/iptables/dist/index.js",
        "./packages/iptables/package.json",
        "./packages/podwatch/bin/podwatch.js",
        "./packages/podwatch/dist/cli.js",
        "./packages/podwatch/package.json",
      ]);
      // npm's link resolves inside the image.
      expect(existsSync(join(podwatch.out, "node_modules/@tproxy/iptables/dist/index.js"))).to.equal(true);
      expect(statSync(join(podwatch.out, "packages/podwatch/bin/podwatch.js")).mode & 0o111).to.equal(0o111);
      const unknown = await pexec("sh", [join(DOCKER, "assemble.sh"), join(src, "out-x"), "nope"], { cwd: src }).then(
        () => "",
        (e: { stderr: string }) => e.stderr,
      );
      expect(unknown).to.equal("assemble.sh: no package packages/nope\n");
      // A dependency missing from the build fails the image's build, naming it (control: it passed above).
      rmSync(join(src, "packages/iptables"), { recursive: true });
      const missing = await pexec("sh", [join(DOCKER, "assemble.sh"), join(src, "out-missing"), "sidecar-init"], { cwd: src }).then(
        () => "",
        (e: { stderr: string }) => e.stderr,
      );
      expect(missing).to.equal("assemble.sh: sidecar-init depends on @tproxy/iptables, but packages/iptables is not in the build\n");
    } finally {
      rmSync(src, { recursive: true, force: true });
    }
  });

  describe("the example app's loop (docker/example-app/start.sh)", () => {
    const script = join(DOCKER, "example-app/start.sh");
    let server: Server;
    let base: string;
    let ns: Netns | undefined;

    before(async () => {
      await removeStale("tpch");
      server = createServer((req, res) => {
        res.writeHead(req.url === "/allowed/" ? 200 : 418).end("Access Denied by Administrator");
      });
      server.listen(0, "127.0.0.1");
      await once(server, "listening");
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    after(async () => {
      server.close();
      await ns?.destroy();
    });

    /** Runs the loop until it printed `lines` lines, then sends SIGTERM; returns its output and exit code. */
    async function loop(cmd: string[], env: Record<string, string>, lines: number): Promise<{ out: string[]; code: number | null }> {
      chmodSync(script, 0o755);
      const child = spawn(cmd[0]!, [...cmd.slice(1), script], { env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "pipe"] });
      let text = "";
      child.stdout.on("data", (b: Buffer) => (text += b.toString()));
      child.stderr.on("data", (b: Buffer) => (text += b.toString()));
      const deadline = Date.now() + 20_000;
      while (text.split("\n").length <= lines && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      child.kill("SIGTERM");
      const [code] = (await once(child, "exit")) as [number | null];
      return { out: text.split("\n").filter(Boolean), code };
    }

    it("prints one status line per URL and one ping line every interval, and stops on SIGTERM", async () => {
      const { out, code } = await loop(["bash"], { URLS: `${base}/ ${base}/allowed/`, PING_HOST: "127.0.0.1", INTERVAL: "1" }, 6);
      expect(out[0]).to.equal(`${base}/: 418`);
      expect(out[1]).to.equal(`${base}/allowed/: 200`);
      expect(out[2]).to.match(/^ping 127\.0\.0\.1: 64 bytes from 127\.0\.0\.1/);
      expect(out[3]).to.equal(`${base}/: 418`);
      expect(out).to.include("Caught SIGTERM signal, exiting.");
      expect(code).to.equal(0);
    });

    it('prints "Operation not permitted" for the ping of a pod behind the real lock, and not before it', async () => {
      ns = await Netns.create(uniqueName("tpch"));
      // A link with nobody at the other end: a ping there goes out and is never answered.
      await ns.must("ip", ["link", "add", "tpchv0", "type", "veth", "peer", "name", "tpchv1"]);
      await ns.must("ip", ["addr", "add", "10.77.0.1/24", "dev", "tpchv0"]);
      for (const dev of ["tpchv0", "tpchv1"]) await ns.must("ip", ["link", "set", dev, "up"]);
      const env = { URLS: "http://127.0.0.1:9/", PING_HOST: "10.77.0.2", INTERVAL: "1" };
      const unlocked = await loop(["ip", "netns", "exec", ns.name, "bash"], env, 2);
      expect(unlocked.out[0]).to.equal("http://127.0.0.1:9/: 000");
      expect(unlocked.out[1]).to.match(/^ping 10\.77\.0\.2: 1 packets transmitted, 0 received, 100% packet loss/);
      writeFileSync(`/etc/netns/${ns.name}/resolv.conf`, "nameserver 10.77.0.53\n"); // the lock allows DNS to the pod's nameservers
      const lock = await ns.run(process.execPath, [join(REPO_ROOT, "packages/sidecar-init/dist/cli.js"), "--no-wait"]);
      expect(lock.code, lock.stderr).to.equal(0);
      const locked = await loop(["ip", "netns", "exec", ns.name, "bash"], env, 2);
      expect(locked.out[0]).to.equal("http://127.0.0.1:9/: 000");
      expect(locked.out[1]).to.equal("ping 10.77.0.2: ping: sendmsg: Operation not permitted");
    });
  });
});
