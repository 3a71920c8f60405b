// A small world in network namespaces for proxy tests:
//
//   pod (10.88.1.2) ── node (10.88.1.1 | 10.88.2.1, router; runs the proxy) ── net (upstream servers)
//
// The "internet" namespace holds test servers answering as real names (www.google.com at .10,
// storage.googleapis.com at .20, and a server whose certificate comes from a CA nobody trusts at .30),
// with certificates from a test "public" CA. Names resolve through per-namespace hosts files.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { Netns, enableForwarding, link, uniqueName, waitFor, type RunResult } from "./netns.ts";
import { TestCa } from "./pki.ts";

export const REPO = resolve(import.meta.dirname, "../..");
export const TPROXY_CLI = join(REPO, "packages/tproxy/dist/cli.js");

/** `tproxy run`'s default ports (the chart's too): tests that rely on the defaults name these. */
export const TRANSPARENT_PORT = 15170;
export const METRICS_PORT = 15171;

export const POD_IP = "10.88.1.2";
export const NODE_POD_SIDE = "10.88.1.1";
export const NODE_NET_SIDE = "10.88.2.1";
export const GOOGLE_IP = "10.88.2.10";
export const STORAGE_IP = "10.88.2.20";
export const UNTRUSTED_IP = "10.88.2.30";
export const POD_IP6 = "fd88:1::2";
export const NET_IP6 = "fd88:2::10";

export const NAMES: Record<string, string> = {
  "www.google.com": GOOGLE_IP,
  "storage.googleapis.com": STORAGE_IP,
  "untrusted.example": UNTRUSTED_IP,
};

/** A process started in a namespace, with its output collected line by line. */
export class Proc {
  readonly lines: string[] = [];
  readonly child: ChildProcess;
  constructor(child: ChildProcess) {
    this.child = child;
    for (const stream of [child.stdout, child.stderr]) {
      if (stream) createInterface({ input: stream }).on("line", (l) => this.lines.push(l));
    }
  }
  get output(): string {
    return this.lines.join("\n");
  }
  async waitForLine(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    let found: string | undefined;
    await waitFor(`a line matching ${pattern} (output so far:\n${this.output}\n)`, () => {
      found = this.lines.find((l) => pattern.test(l));
      if (!found && this.child.exitCode !== null) throw new Error(`process exited ${this.child.exitCode}:\n${this.output}`);
      return found !== undefined;
    }, timeoutMs);
    return found!;
  }
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode;
    this.child.kill(signal);
    await new Promise((r) => this.child.once("exit", r));
    return this.child.exitCode;
  }
}

export class ProxyWorld {
  readonly dir = mkdtempSync(join(tmpdir(), "tproxy-world-"));
  pod!: Netns;
  node!: Netns;
  net!: Netns;
  publicCa!: TestCa;
  readonly #procs: Proc[] = [];

  static async create(prefix: string): Promise<ProxyWorld> {
    const w = new ProxyWorld();
    w.pod = await Netns.create(uniqueName(`${prefix}p`));
    w.node = await Netns.create(uniqueName(`${prefix}n`));
    w.net = await Netns.create(uniqueName(`${prefix}i`));
    await link(w.pod, [`${POD_IP}/24`, `${POD_IP6}/64`], w.node, [`${NODE_POD_SIDE}/24`, "fd88:1::1/64"]);
    await link(w.node, [`${NODE_NET_SIDE}/24`, "fd88:2::1/64"], w.net, [`${GOOGLE_IP}/24`, `${STORAGE_IP}/24`, `${UNTRUSTED_IP}/24`, `${NET_IP6}/64`]);
    await enableForwarding(w.node);
    await w.pod.must("ip", ["route", "add", "default", "via", NODE_POD_SIDE]);
    await w.pod.must("ip", ["-6", "route", "add", "default", "via", "fd88:1::1"]);
    await w.net.must("ip", ["route", "add", "default", "via", NODE_NET_SIDE]);
    await w.net.must("ip", ["-6", "route", "add", "default", "via", "fd88:2::1"]);
    w.pod.hosts(NAMES);
    w.node.hosts(NAMES);

    w.publicCa = new TestCa(w.dir, "public");
    const rogue = new TestCa(w.dir, "rogue");
    const servers: Array<[string, string, ReturnType<TestCa["issue"]>]> = [
      ["www.google.com", GOOGLE_IP, w.publicCa.issue("google", ["www.google.com", GOOGLE_IP])],
      ["storage.googleapis.com", STORAGE_IP, w.publicCa.issue("storage", ["storage.googleapis.com", STORAGE_IP])],
      ["untrusted.example", UNTRUSTED_IP, rogue.issue("untrusted", ["untrusted.example", UNTRUSTED_IP])],
    ];
    for (const [name, ip, cert] of servers) {
      const p = w.spawn(w.net, process.execPath, [join(REPO, "test/support/upstream-server.ts"), name, ip, "80", "443", cert.certPath, cert.keyPath]);
      await p.waitForLine(/^listening/);
    }
    return w;
  }

  spawn(ns: Netns, cmd: string, args: string[]): Proc {
    const p = new Proc(ns.spawn(cmd, args));
    this.#procs.push(p);
    return p;
  }

  /** Makes a CA for the proxy with the real `tproxy ca create`. */
  async makeProxyCa(): Promise<{ cert: string; key: string }> {
    const cert = join(this.dir, "tproxy-ca.pem");
    const key = join(this.dir, "tproxy-ca.key");
    await this.node.must(process.execPath, [TPROXY_CLI, "ca", "create", "--cert", cert, "--key", key, "--force"]);
    return { cert, key };
  }

  /** Starts `tproxy run` in the node namespace and waits until it listens. */
  async startProxy(args: string[]): Promise<Proc> {
    const p = this.spawn(this.node, process.execPath, [TPROXY_CLI, "run", ...args]);
    await p.waitForLine(/tproxy listening/);
    return p;
  }

  /** The node's REDIRECT of the pod's port 80/443 traffic to the proxy, as podwatch would add it. */
  async redirectPod(port = TRANSPARENT_PORT): Promise<void> {
    await this.node.must("iptables", ["-t", "nat", "-A", "PREROUTING", "-s", POD_IP, "-p", "tcp", "-m", "multiport", "--dports", "80,443", "-j", "REDIRECT", "--to-ports", String(port)]);
  }

  /** curl from the pod; prints "<status> <body>" via -w so tests can assert both. */
  curl(args: string[], timeoutS = 10): Promise<RunResult> {
    return this.pod.run("curl", ["-sS", "--max-time", String(timeoutS), ...args], { timeoutMs: (timeoutS + 5) * 1000 });
  }

  async close(): Promise<void> {
    for (const p of this.#procs) await p.stop("SIGKILL");
    for (const ns of [this.pod, this.node, this.net]) await ns?.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
