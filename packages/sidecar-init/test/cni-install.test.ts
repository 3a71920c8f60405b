// The CNI installer on a temporary "host": a bin folder and a conf folder holding a bridge network as a
// cluster's CNI writes it. The entry goes last, once; a conflist the cluster's CNI rewrites gets it back
// (tproxy-cni-install run, watching the folder); a lone .conf becomes a conflist; uninstall takes entry
// and files away, and `run` does so on SIGTERM only when podwatch left its uninstall marker.
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { install, primaryConfig, uninstall, wrapperScript } from "../src/cni/install.ts";
import { waitFor } from "../../../test/support/netns.ts";

const INSTALL_CLI = fileURLToPath(new URL("../dist/cni/install-cli.js", import.meta.url));
const BRIDGE = { cniVersion: "1.0.0", name: "k8s-pod-network", plugins: [{ type: "bridge", bridge: "cni0", ipam: { type: "host-local", subnet: "10.244.0.0/24" } }, { type: "portmap", capabilities: { portMappings: true } }] };
const SETTINGS = { socket: "/var/run/tproxy/cni.sock", allowDns: ["10.96.0.10"] };

describe("tproxy-cni installer", function () {
  this.timeout(30_000);
  let host: string;
  let binDir: string;
  let confDir: string;
  let bundle: string;
  const opts = () => ({ binDir, confDir, nodeBinary: process.execPath, bundle, settings: SETTINGS });
  const read = (f: string) => JSON.parse(readFileSync(join(confDir, f), "utf8")) as typeof BRIDGE;
  const types = (f: string) => read(f).plugins.map((p) => p.type);

  beforeEach(() => {
    host = mkdtempSync(join(tmpdir(), "tproxy-cni-host-"));
    binDir = join(host, "opt/cni/bin");
    confDir = join(host, "etc/cni/net.d");
    mkdirSync(binDir, { recursive: true });
    mkdirSync(confDir, { recursive: true });
    bundle = join(host, "bundle.cjs");
    writeFileSync(bundle, "// stand-in bundle\n");
    writeFileSync(join(confDir, "10-bridge.conflist"), JSON.stringify(BRIDGE));
    writeFileSync(join(confDir, "99-other.conflist"), JSON.stringify({ ...BRIDGE, name: "other" }));
  });
  afterEach(() => rmSync(host, { recursive: true, force: true }));

  it("appends the entry last to the first conflist by name only, copies node, the bundle and the wrapper; a second run changes nothing", () => {
    const r = install(opts());
    expect(r).to.deep.equal({ file: join(confDir, "10-bridge.conflist"), written: true });
    expect(types("10-bridge.conflist")).to.deep.equal(["bridge", "portmap", "tproxy-cni"]);
    expect(read("10-bridge.conflist").plugins[2]).to.deep.equal({ type: "tproxy-cni", ...SETTINGS });
    expect(types("99-other.conflist")).to.deep.equal(["bridge", "portmap"]);
    expect(readFileSync(join(binDir, "tproxy-cni"), "utf8")).to.equal(wrapperScript());
    expect(statSync(join(binDir, "tproxy-cni")).mode & 0o777).to.equal(0o755);
    expect(readFileSync(join(binDir, "tproxy-cni.d/node")).equals(readFileSync(process.execPath))).to.equal(true);
    expect(readFileSync(join(binDir, "tproxy-cni.d/tproxy-cni.cjs"), "utf8")).to.equal("// stand-in bundle\n");
    const mtime = statSync(join(confDir, "10-bridge.conflist")).mtimeMs;
    expect(install(opts())).to.deep.equal({ file: join(confDir, "10-bridge.conflist"), written: false });
    expect(types("10-bridge.conflist")).to.deep.equal(["bridge", "portmap", "tproxy-cni"]);
    expect(statSync(join(confDir, "10-bridge.conflist")).mtimeMs).to.equal(mtime);
    expect(readdirSync(confDir).sort()).to.deep.equal(["10-bridge.conflist", "99-other.conflist"]);
  });

  it("turns a lone .conf into a conflist with the entry after its plugin", () => {
    rmSync(join(confDir, "10-bridge.conflist"));
    rmSync(join(confDir, "99-other.conflist"));
    const { plugins: [bridge] } = BRIDGE;
    writeFileSync(join(confDir, "10-bridge.conf"), JSON.stringify({ cniVersion: "1.0.0", name: "k8s-pod-network", ...bridge }));
    expect(primaryConfig(confDir)).to.equal("10-bridge.conf");
    install(opts());
    expect(readdirSync(confDir)).to.deep.equal(["10-bridge.conflist"]);
    expect(read("10-bridge.conflist")).to.deep.equal({ cniVersion: "1.0.0", name: "k8s-pod-network", plugins: [bridge, { type: "tproxy-cni", ...SETTINGS }] });
  });

  it("fails, naming the folder, while the cluster's CNI has written no config yet", () => {
    rmSync(confDir, { recursive: true });
    mkdirSync(confDir);
    expect(() => install(opts())).to.throw(/no CNI network configuration in .*net\.d yet/);
  });

  it("uninstall takes the entry and every file away, and leaves the rest of the conflist as it was", () => {
    install(opts());
    expect(uninstall(opts())).to.deep.equal([join(confDir, "10-bridge.conflist")]);
    expect(read("10-bridge.conflist")).to.deep.equal(BRIDGE);
    expect(readdirSync(binDir)).to.deep.equal([]);
  });

  describe("tproxy-cni-install run", () => {
    let child: ChildProcess;
    let socketDir: string;
    let stderr = "";
    const start = () => {
      stderr = "";
      child = spawn(process.execPath, [INSTALL_CLI, "run", "--bin-dir", binDir, "--conf-dir", confDir, "--bundle", bundle, "--settings", JSON.stringify(SETTINGS), "--socket", join(socketDir, "cni.sock"), "--stop-wait", "1500"], { stdio: ["ignore", "ignore", "pipe"] });
      child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
      return child;
    };
    const hasEntry = () => existsSync(join(confDir, "10-bridge.conflist")) && types("10-bridge.conflist").at(-1) === "tproxy-cni";
    beforeEach(() => {
      socketDir = join(host, "run-tproxy");
      mkdirSync(socketDir);
    });
    afterEach(() => {
      if (child.exitCode === null) child.kill("SIGKILL");
    });

    it("puts the entry back when the cluster's CNI rewrites its conflist, and keeps it on a SIGTERM without podwatch's marker", async () => {
      start();
      await waitFor("the entry", hasEntry, 10_000);
      // The cluster's CNI agent rewrites its file (atomically, as they do), without tproxy-cni.
      writeFileSync(join(confDir, "10-bridge.conflist.tmp"), JSON.stringify(BRIDGE));
      rmSync(join(confDir, "10-bridge.conflist"));
      writeFileSync(join(confDir, "10-bridge.conflist"), JSON.stringify(BRIDGE));
      rmSync(join(confDir, "10-bridge.conflist.tmp"));
      await waitFor("the entry back", hasEntry, 10_000);
      child.kill("SIGTERM");
      await once(child, "exit");
      expect(child.exitCode).to.equal(0);
      expect(hasEntry()).to.equal(true);
      expect(existsSync(join(binDir, "tproxy-cni"))).to.equal(true);
    });

    it("uninstalls on SIGTERM when podwatch left its uninstall marker (helm uninstall)", async () => {
      start();
      await waitFor("the entry", hasEntry, 10_000);
      writeFileSync(join(socketDir, "cni.sock.uninstall"), "daemonset tproxy/tproxy not found\n");
      child.kill("SIGTERM");
      await once(child, "exit");
      expect(child.exitCode, stderr).to.equal(0);
      expect(read("10-bridge.conflist")).to.deep.equal(BRIDGE);
      expect(readdirSync(binDir)).to.deep.equal([]);
    });
  });
});
