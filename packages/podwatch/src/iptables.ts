// podwatch's view of iptables: read one table, apply one transaction, per family, with the programs
// chosen at start (@tproxy/iptables). Tests swap in their own `IptablesRunner`.
import { execRunner, IptablesFailure, programNames, restore, save, type Runner, type Tools } from "@tproxy/iptables";
import type { Family } from "./desired.ts";
import { IptablesError } from "./errors.ts";

/** The tables podwatch keeps a chain in: nat (`TPROXY-REDIRECT`) and filter (`TPROXY-ENFORCE`). */
export type Table = "nat" | "filter";

/** Reads and writes the tables of one address family. */
export interface IptablesRunner {
  /** `iptables-save -t TABLE` output (default nat). */
  save(family: Family, table?: Table): Promise<string>;
  /** Feeds `input` to `iptables-restore -w --noflush` (one kernel transaction). */
  restore(family: Family, input: string): Promise<void>;
}

export interface ExecIptablesOptions {
  /** The programs to run (`chooseTools` of @tproxy/iptables); default the unsuffixed ones on PATH. */
  readonly tools?: Tools;
  /** Kill a command that runs longer than this; default 30 000 ms. */
  readonly timeoutMs?: number;
  /** Command words put in front, e.g. `["ip", "netns", "exec", "node1"]` (benchmarks, tests); default none. */
  readonly prefix?: readonly string[];
}

/** The unsuffixed programs, by name: whatever PATH finds (the prefix may run them in another namespace). */
function unsuffixed(): Tools {
  const n = programNames("default");
  return { backend: "default", ipv4: { family: "ipv4", ...n.ipv4 }, ipv6: { family: "ipv6", ...n.ipv6 } };
}

/** Runs the real `*-save` / `*-restore` binaries. */
export class ExecIptables implements IptablesRunner {
  readonly tools: Tools;
  readonly #run: Runner;

  constructor(opts: ExecIptablesOptions = {}) {
    this.tools = opts.tools ?? unsuffixed();
    this.#run = execRunner({ timeoutMs: opts.timeoutMs ?? 30_000, prefix: opts.prefix ?? [] });
  }

  save(family: Family, table: Table = "nat"): Promise<string> {
    return save(this.tools[family], this.#run, table).catch(rethrow);
  }

  restore(family: Family, input: string): Promise<void> {
    return restore(this.tools[family], input, this.#run).catch(rethrow);
  }
}

/** podwatch's own error class, carrying what the program printed (the reconciler logs and reports it). */
function rethrow(err: unknown): never {
  if (err instanceof IptablesFailure) throw new IptablesError(err.command, err.exitCode, err.stderr, { cause: err });
  throw err;
}
