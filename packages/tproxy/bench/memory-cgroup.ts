// A memory cgroup with a limit, for running tproxy the way the chart runs it: under a container memory
// limit (the chart's default is 512 MiB). cgroup v2 (a `cgroup.controllers` file at /sys/fs/cgroup, as on
// current CI machines) or v1 (a `memory` hierarchy at /sys/fs/cgroup/memory).
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const ROOT = "/sys/fs/cgroup";

export interface MemoryCgroup {
  version: 1 | 2;
  dir: string;
  limitBytes: number;
}

export interface MemoryCgroupState {
  usageBytes: number;
  /** Highest usage since the cgroup was made (v1 memory.max_usage_in_bytes, v2 memory.peak). */
  peakBytes: number | undefined;
  /** Processes the kernel killed for hitting the limit. */
  oomKills: number | undefined;
}

/** Makes (or remakes, after a crashed run) the cgroup `name` with the limit. Throws saying why it cannot. */
export function createMemoryCgroup(name: string, limitBytes: number): MemoryCgroup {
  let cg: MemoryCgroup;
  if (existsSync(join(ROOT, "cgroup.controllers"))) {
    const enabled = readFileSync(join(ROOT, "cgroup.subtree_control"), "utf8").split(/\s+/);
    if (!enabled.includes("memory")) {
      try {
        writeFileSync(join(ROOT, "cgroup.subtree_control"), "+memory");
      } catch (e) {
        throw new Error(`cgroup v2: the memory controller is not enabled for children of ${ROOT} and enabling it failed (${(e as Error).message})`);
      }
    }
    cg = { version: 2, dir: join(ROOT, name), limitBytes };
  } else if (existsSync(join(ROOT, "memory", "memory.limit_in_bytes"))) {
    cg = { version: 1, dir: join(ROOT, "memory", name), limitBytes };
  } else {
    throw new Error(`no memory cgroup: neither ${ROOT}/cgroup.controllers (v2) nor ${ROOT}/memory (v1) exists`);
  }
  if (existsSync(cg.dir)) rmdirSync(cg.dir); // left by a crashed run; its processes died with its namespaces
  mkdirSync(cg.dir);
  if (cg.version === 2) {
    writeFileSync(join(cg.dir, "memory.max"), String(limitBytes));
    // Swap would let the group exceed its limit unseen; a container limit counts it on most nodes.
    if (existsSync(join(cg.dir, "memory.swap.max"))) writeFileSync(join(cg.dir, "memory.swap.max"), "0");
  } else {
    writeFileSync(join(cg.dir, "memory.limit_in_bytes"), String(limitBytes));
    if (existsSync(join(cg.dir, "memory.memsw.limit_in_bytes"))) writeFileSync(join(cg.dir, "memory.memsw.limit_in_bytes"), String(limitBytes));
  }
  return cg;
}

/** A command line that moves itself into the cgroup, then becomes `cmd` (same pid, so children follow). */
export function inCgroup(cg: MemoryCgroup, cmd: string, args: readonly string[]): [string, string[]] {
  return ["sh", ["-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cg.dir, cmd, ...args]];
}

function counters(file: string): Record<string, number> {
  return Object.fromEntries(readFileSync(file, "utf8").trim().split("\n").map((l) => l.split(/\s+/)).map(([k, v]) => [k!, Number(v)]));
}

export function readMemoryCgroup(cg: MemoryCgroup): MemoryCgroupState {
  const num = (f: string) => Number(readFileSync(join(cg.dir, f), "utf8").trim());
  if (cg.version === 2) {
    const events = counters(join(cg.dir, "memory.events"));
    return {
      usageBytes: num("memory.current"),
      peakBytes: existsSync(join(cg.dir, "memory.peak")) ? num("memory.peak") : undefined, // kernel 5.19+
      oomKills: events.oom_kill,
    };
  }
  return {
    usageBytes: num("memory.usage_in_bytes"),
    peakBytes: num("memory.max_usage_in_bytes"),
    // oom_kill: kernel 4.13+. (memory.failcnt is no substitute: recent kernels leave it at 0.)
    oomKills: counters(join(cg.dir, "memory.oom_control")).oom_kill,
  };
}

/** Removes the cgroup once its processes are gone (they may take a moment to be reaped). */
export async function removeMemoryCgroup(cg: MemoryCgroup): Promise<void> {
  for (let i = 0; ; i += 1) {
    try {
      rmdirSync(cg.dir);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
      if (i >= 50) throw new Error(`could not remove the memory cgroup ${cg.dir}: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
