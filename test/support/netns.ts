// Real network namespaces for tests: `ip netns`, veth pairs, per-namespace /etc/hosts.
// Every test host the suites talk to lives in a namespace made here, so no traffic leaves the machine.
// Needs root (CI runs as root) and iproute2.
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { once } from "node:events";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command, never throws for a non-zero exit: tests assert on `code`/`stderr`. */
export function run(cmd: string, args: readonly string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 20_000, maxBuffer: 64 * 1024 * 1024, env: opts.env ?? process.env, encoding: "utf8" },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== "number" && err.code !== undefined && !err.killed) return reject(err);
        const code = err ? (typeof err.code === "number" ? err.code : err.killed ? 124 : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Like `run` but throws, with the command's stderr, unless it exits 0. */
export async function must(cmd: string, args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** Whether a command is on PATH. */
export function hasCommand(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

let counter = 0;
/** A short name unique to this process (interface names are limited to 15 bytes). */
export function uniqueName(prefix: string): string {
  counter += 1;
  return `${prefix}${(process.pid % 10000).toString(36)}${counter.toString(36)}`;
}

/** One network namespace. `ip netns exec` bind-mounts /etc/netns/<name>/{hosts,resolv.conf}, which `hosts()` writes. */
export class Netns {
  readonly name: string;
  readonly #children = new Set<ChildProcess>();
  private constructor(name: string) {
    this.name = name;
  }

  static async create(name: string): Promise<Netns> {
    await run("ip", ["netns", "del", name]);
    await must("ip", ["netns", "add", name]);
    const ns = new Netns(name);
    await ns.must("ip", ["link", "set", "lo", "up"]);
    mkdirSync(`/etc/netns/${name}`, { recursive: true });
    writeFileSync(`/etc/netns/${name}/hosts`, "127.0.0.1 localhost\n::1 localhost\n");
    writeFileSync(`/etc/netns/${name}/resolv.conf`, "# no resolver: names come from the hosts file\n");
    return ns;
  }

  /** Sets this namespace's /etc/hosts (seen by processes started with exec/spawn). */
  hosts(entries: Record<string, string>): void {
    const lines = ["127.0.0.1 localhost", "::1 localhost", ...Object.entries(entries).map(([name, ip]) => `${ip} ${name}`)];
    writeFileSync(`/etc/netns/${this.name}/hosts`, lines.join("\n") + "\n");
  }

  run(cmd: string, args: readonly string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
    return run("ip", ["netns", "exec", this.name, cmd, ...args], opts);
  }

  must(cmd: string, args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
    return must("ip", ["netns", "exec", this.name, cmd, ...args], opts);
  }

  /** Starts a long-running process in the namespace; `destroy()` kills whatever is still running. */
  spawn(cmd: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn("ip", ["netns", "exec", this.name, cmd, ...args], { stdio: ["ignore", "pipe", "pipe"], ...opts });
    this.#children.add(child);
    child.once("exit", () => this.#children.delete(child));
    return child;
  }

  async destroy(): Promise<void> {
    for (const child of this.#children) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await once(child, "exit").catch(() => undefined);
      }
    }
    await deleteNamespace(this.name);
  }
}

/**
 * Connects two namespaces with a veth pair. Addresses are CIDRs ("10.1.0.1/24", "fd01::1/64").
 * IPv6 addresses skip duplicate address detection so they are usable at once.
 */
export async function link(a: Netns, aAddrs: readonly string[], b: Netns, bAddrs: readonly string[]): Promise<{ aIf: string; bIf: string }> {
  const aIf = uniqueName("va");
  const bIf = uniqueName("vb");
  await must("ip", ["link", "add", aIf, "netns", a.name, "type", "veth", "peer", "name", bIf, "netns", b.name]);
  for (const [ns, ifname, addrs] of [[a, aIf, aAddrs], [b, bIf, bAddrs]] as const) {
    for (const addr of addrs) {
      await ns.must("ip", addr.includes(":") ? ["addr", "add", addr, "dev", ifname, "nodad"] : ["addr", "add", addr, "dev", ifname]);
    }
    await ns.must("ip", ["link", "set", ifname, "up"]);
  }
  return { aIf, bIf };
}

/** Turns a namespace into a router for IPv4 and IPv6. */
export async function enableForwarding(ns: Netns): Promise<void> {
  await ns.must("sysctl", ["-qw", "net.ipv4.ip_forward=1"]);
  await ns.must("sysctl", ["-qw", "net.ipv6.conf.all.forwarding=1"]);
}

/** Removes namespaces left behind by a crashed earlier run, by name prefix. */
export async function removeStale(prefix: string): Promise<void> {
  const out = await must("ip", ["netns", "list"]);
  for (const line of out.split("\n")) {
    const name = line.split(" ")[0];
    if (name && name.startsWith(prefix)) await deleteNamespace(name);
  }
}

/** Ends whatever still runs in a namespace (daemons that forked, workers of a killed primary), then deletes it and its /etc/netns folder. */
async function deleteNamespace(name: string): Promise<void> {
  const pids = (await run("ip", ["netns", "pids", name])).stdout.split("\n").filter(Boolean);
  if (pids.length > 0) await run("kill", ["-9", ...pids]);
  await run("ip", ["netns", "del", name]);
  rmSync(`/etc/netns/${name}`, { recursive: true, force: true });
}

/** Waits until `probe` resolves true, polling every `intervalMs`; throws with `what` after `timeoutMs`. */
export async function waitFor(what: string, probe: () => Promise<boolean> | boolean, timeoutMs = 10_000, intervalMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
