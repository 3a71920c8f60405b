// The only place podwatch runs iptables binaries. Tests swap in their own `IptablesRunner`.
import { spawn } from "node:child_process";
import { IptablesError } from "./errors.ts";
import type { Family } from "./desired.ts";

/** The tables podwatch keeps a chain in: nat (`TPROXY-REDIRECT`) and filter (`TPROXY-ENFORCE`). */
export type Table = "nat" | "filter";

/** Reads and writes the tables of one address family. */
export interface IptablesRunner {
  /** `iptables-save -t TABLE` output (default nat). */
  save(family: Family, table?: Table): Promise<string>;
  /** Feeds `input` to `iptables-restore --noflush` (one kernel transaction). */
  restore(family: Family, input: string): Promise<void>;
}

export interface ExecIptablesOptions {
  /** Binary name stem per family; default `iptables` / `ip6tables` (so `iptables-save`, `iptables-restore`). */
  readonly ipv4?: string;
  readonly ipv6?: string;
  /** Kill a command that runs longer than this; default 30 000 ms. */
  readonly timeoutMs?: number;
  /** Command words put in front, e.g. `["ip", "netns", "exec", "node1"]` (benchmarks, tests); default none. */
  readonly prefix?: readonly string[];
}

/** Runs the real `*-save` / `*-restore` binaries found on PATH. */
export class ExecIptables implements IptablesRunner {
  readonly #stems: Record<Family, string>;
  readonly #timeoutMs: number;
  readonly #prefix: readonly string[];

  constructor(opts: ExecIptablesOptions = {}) {
    this.#prefix = opts.prefix ?? [];
    this.#stems = { ipv4: opts.ipv4 ?? "iptables", ipv6: opts.ipv6 ?? "ip6tables" };
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
  }

  async save(family: Family, table: Table = "nat"): Promise<string> {
    return this.#exec(`${this.#stems[family]}-save`, ["-t", table]);
  }

  async restore(family: Family, input: string): Promise<void> {
    await this.#exec(`${this.#stems[family]}-restore`, ["-w", "--noflush"], input);
  }

  #exec(command: string, commandArgs: string[], input?: string): Promise<string> {
    const line = [command, ...commandArgs].join(" ");
    const [cmd = command, ...args] = [...this.#prefix, command, ...commandArgs];
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"], timeout: this.#timeoutMs });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on("data", (b: Buffer) => out.push(b));
      child.stderr.on("data", (b: Buffer) => err.push(b));
      child.stdin.on("error", () => undefined); // the exit code tells the story
      child.once("error", (e) => reject(new IptablesError(line, null, e.message, { cause: e })));
      child.once("close", (code, signal) => {
        const stderr = Buffer.concat(err).toString("utf8");
        if (code === 0) resolve(Buffer.concat(out).toString("utf8"));
        else reject(new IptablesError(line, code, signal ? `killed by ${signal}. ${stderr}` : stderr));
      });
      child.stdin.end(input ?? "");
    });
  }
}
