// Running the programs: `*-save` to read a table, `*-restore --noflush` to apply one transaction.
// Processes start through a `Runner`, so callers can run them elsewhere (`ip netns exec …`) and tests
// can stand in for them.
import { execFile } from "node:child_process";
import { basename } from "node:path";
import { classify, IptablesFailure } from "./failure.ts";
import type { FamilyTools } from "./tools.ts";

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** Stopped by the runner's timeout. */
  readonly killed?: boolean;
}

/** Starts a program and collects its output; rejects only when it cannot be started at all. */
export type Runner = (file: string, args: readonly string[], input?: string) => Promise<RunResult>;

export interface ExecRunnerOptions {
  /** Kill a program that runs longer than this; default 60 000 ms. */
  readonly timeoutMs?: number;
  /** Command words put in front, e.g. `["ip", "netns", "exec", "node1"]`; default none. */
  readonly prefix?: readonly string[];
}

/** The real runner: child processes. */
export function execRunner(opts: ExecRunnerOptions = {}): Runner {
  const timeout = opts.timeoutMs ?? 60_000;
  const prefix = opts.prefix ?? [];
  return (file, args, input) =>
    new Promise((resolve, reject) => {
      const [cmd = file, ...rest] = [...prefix, file, ...args];
      const child = execFile(cmd, rest, { encoding: "utf8", maxBuffer: 64 * 1024 * 1024, timeout, killSignal: "SIGKILL" }, (err, stdout, stderr) => {
        if (err && typeof err.code !== "number" && !err.killed) return reject(err);
        const killed = err?.killed === true;
        resolve({ code: err ? (typeof err.code === "number" ? err.code : 124) : 0, stdout, stderr: killed ? `killed after ${timeout} ms. ${stderr}` : stderr, killed });
      });
      // A program that exits before reading its input must not crash this process with EPIPE.
      child.stdin?.on("error", () => undefined);
      child.stdin?.end(input ?? "");
    });
}

/** Seconds `iptables-restore -w` waits for the xtables lock (held by kube-proxy and others) before giving up. */
export const DEFAULT_LOCK_WAIT_SECONDS = 10;

async function start(run: Runner, file: string, args: readonly string[], input?: string): Promise<RunResult> {
  const line = [basename(file), ...args].join(" ");
  let r: RunResult;
  try {
    r = await run(file, args, input);
  } catch (err) {
    throw new IptablesFailure("missing", line, null, `cannot start ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (r.code !== 0) throw new IptablesFailure(classify(r.code, r.stderr || r.stdout, r.killed), line, r.killed ? null : r.code, r.stderr || r.stdout);
  return r;
}

/** `*-save [-t TABLE]` of one family: every table when `table` is undefined. */
export async function save(t: FamilyTools, run: Runner, table?: string): Promise<string> {
  return (await start(run, t.save, table === undefined ? [] : ["-t", table])).stdout;
}

export interface RestoreOptions {
  /** Only check the input (`--test`), change nothing. */
  readonly test?: boolean;
  /** Seconds to wait for the xtables lock; default 10. */
  readonly lockWaitSeconds?: number;
}

/**
 * `*-restore -w SECONDS --noflush [--test]` of one family: the kernel takes the input whole or not at
 * all, and rules of the input's tables that the input does not name are left as they are.
 */
export async function restore(t: FamilyTools, input: string, run: Runner, opts: RestoreOptions = {}): Promise<void> {
  const args = ["-w", String(opts.lockWaitSeconds ?? DEFAULT_LOCK_WAIT_SECONDS), "--noflush", ...(opts.test ? ["--test"] : [])];
  await start(run, t.restore, args, input);
}
