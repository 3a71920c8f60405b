// Shared helpers of the sidecar-init namespace tests: run the built CLI inside a namespace with a clean
// environment, start fixture servers, read rulesets.
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import type { ChildProcess } from "node:child_process";
import { rmSync, statSync } from "node:fs";
import { must, run, type Netns, type RunResult } from "../../../test/support/netns.ts";

export const NODE = process.execPath;
export const CLI = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
export const SERVERS = fileURLToPath(new URL("./fixtures/servers.ts", import.meta.url));
export const CLIENT = fileURLToPath(new URL("./fixtures/client.ts", import.meta.url));
export const PATH = process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin";

/** `env -i` so no variable of the test process (ALLOW_DNS, ...) leaks into the run. */
export function envArgs(env: Record<string, string> = {}): string[] {
  return ["-i", ...Object.entries({ PATH, ...env }).map(([k, v]) => `${k}=${v}`)];
}

/** Runs tproxy-sidecar-init in the namespace and waits for it to end. */
export function sidecar(ns: Netns, args: readonly string[], env: Record<string, string> = {}, timeoutMs = 20_000): Promise<RunResult> {
  return ns.run("env", [...envArgs(env), NODE, CLI, ...args], { timeoutMs });
}

/** Starts tproxy-sidecar-init without waiting for it. */
export function spawnSidecar(ns: Netns, args: readonly string[], env: Record<string, string> = {}): ChildProcess {
  return ns.spawn("env", [...envArgs(env), NODE, CLI, ...args]);
}

/** The last line a process wrote on stderr: the CLI's one-line verdict. */
export function lastLine(text: string): string {
  return text.trimEnd().split("\n").at(-1) ?? "";
}

/** Starts fixture servers and resolves once they listen. */
export async function startServers(ns: Netns, mode: string, ports: readonly number[]): Promise<ChildProcess> {
  const child = ns.spawn(NODE, [SERVERS, mode, ...ports.map(String)]);
  let out = "";
  let err = "";
  child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("ready")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`servers (${mode}) exited ${code}: ${err}`)));
  });
  await ready;
  return child;
}

export async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  await once(child, "exit");
}

/** A ruleset listing without the timestamped comment lines, for byte comparison. */
export async function ruleset(ns: Netns, save: string): Promise<string> {
  const out = await ns.must(save, []);
  return out
    .split("\n")
    .filter((l) => !l.startsWith("#"))
    .join("\n");
}

/**
 * Removes namespaces with this prefix that a crashed run left behind: only those older than ten
 * minutes, so a run of the same tests going on at the same time (another checkout, another shell)
 * keeps its namespaces.
 */
export async function removeOldStale(prefix: string, olderThanMs = 10 * 60_000): Promise<void> {
  const names = (await must("ip", ["netns", "list"])).split("\n").map((l) => l.split(" ")[0] ?? "");
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    let created: number;
    try {
      created = statSync(`/run/netns/${name}`).mtimeMs;
    } catch {
      continue;
    }
    if (Date.now() - created <= olderThanMs) continue;
    await run("ip", ["netns", "del", name]);
    rmSync(`/etc/netns/${name}`, { recursive: true, force: true });
  }
}
