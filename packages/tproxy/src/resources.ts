// What this container may use, read the way the kernel enforces it: the CPU quota and the memory limit
// of its cgroup (a pod's limits), and from them how many workers to run. A Kubernetes limit is a cgroup
// setting on the container's cgroup; a limit on a parent cgroup (the pod, a systemd slice) binds as well,
// so every reading walks from the process's own cgroup up to the root of the mounted hierarchy and keeps
// the smallest value.
import { existsSync, readFileSync } from "node:fs";
import { availableParallelism, totalmem } from "node:os";
import { join, posix } from "node:path";

// The memory cost model, from `npm run bench` measurements (packages/tproxy/bench): what the memory cgroup
// was charged with 1 and with 4 serving threads and 1,000 busy HTTPS connections (200 and 349 MiB peak), and
// with 2 threads and 5,000 open ones (441-451 MiB, packages/tproxy/test/memory-limit.test.ts), rounded up;
// the cost per connection from HTTP/2 sessions (the same test).
// charts/tproxy/files/sizing.yaml holds the same numbers for the chart's render-time check (a chart test
// keeps the two equal).
/** Memory of the proxy before its first serving thread (runtime and code, the supervisor), MiB. */
export const BASE_MIB = 90;
/** What each serving thread adds under load (its JavaScript heap, young generation bounded to 8 MiB), MiB. */
export const PER_WORKER_MIB = 50;
/**
 * What one open proxied connection adds (sockets, TLS state, buffers), KiB. Sized for an HTTP/2 session,
 * which is what curl, browsers and gRPC clients open by default (test/memory-limit.test.ts, 2 threads,
 * cgroup usage, from idle to 1,000 and from 1,000 to 2,500 or 3,000): an h2 session that has answered and
 * waits 95-119 KiB, an HTTP/1.1 keep-alive connection 72-91 KiB; rounded up. At 64 KiB, the HTTP/1.1
 * figure, the cap admitted 5,000 h2 sessions within 512 MiB (480-484 MiB charged, 507 MiB peak) and 500
 * slow answers on top had the proxy killed; at 128 it admits 2,576, which with those 500 peak at 345 MiB.
 * Not counted here, for the cap counts connections: each request in flight to an upstream holds an
 * upstream connection of its own, 62-75 KiB (one per HTTP/1.1 connection, up to maxConcurrentStreams
 * per h2 session), and an h2 stream whose answer the client does not read holds about 450-550 KiB
 * (up to about 50 MiB per session of 100 streams, whatever the flow-control windows).
 */
export const PER_CONNECTION_KIB = 128;
/** Connections the proxy must be able to hold at once within its memory limit, over all workers. */
export const RESERVE_CONNECTIONS = 1000;

const MIB = 1024 * 1024;

// ---- /proc/self/cgroup and /proc/self/mountinfo ----

/** One line of /proc/self/cgroup: `hierarchy-id:controller,list:/path` (v2: `0::/path`). */
export interface CgroupMembership {
  readonly hierarchy: string;
  readonly controllers: readonly string[];
  readonly path: string;
}

export function parseProcCgroup(text: string): CgroupMembership[] {
  const out: CgroupMembership[] = [];
  for (const line of text.split("\n")) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (m) out.push({ hierarchy: m[1]!, controllers: m[2] === "" ? [] : m[2]!.split(","), path: m[3]! });
  }
  return out;
}

/** A cgroup filesystem mount: where it is, which part of the hierarchy it shows, v1 controllers. */
export interface CgroupMount {
  /** The directory of the hierarchy shown at the mount point (`/` unless a bind mount or namespace narrows it). */
  readonly root: string;
  readonly mountPoint: string;
  readonly version: 1 | 2;
  /** v1: the controllers bound to the hierarchy (from the super options, e.g. `cpu,cpuacct`). */
  readonly controllers: readonly string[];
}

/** mountinfo escapes space, tab, newline and backslash in paths as octal (`\040`). */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The cgroup mounts of /proc/self/mountinfo (`id parent dev root mountpoint opts [optional...] - fstype source superopts`). */
export function parseMountinfo(text: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of text.split("\n")) {
    const fields = line.trim().split(" ");
    const dash = fields.indexOf("-");
    if (dash < 5 || fields.length < dash + 4) continue;
    const fsType = fields[dash + 1];
    if (fsType !== "cgroup" && fsType !== "cgroup2") continue;
    out.push({
      root: unescapeMountPath(fields[3]!),
      mountPoint: withoutTrailingSlash(unescapeMountPath(fields[4]!)),
      version: fsType === "cgroup2" ? 2 : 1,
      controllers: fsType === "cgroup" ? fields[dash + 3]!.split(",") : [],
    });
  }
  return out;
}

function withoutTrailingSlash(path: string): string {
  return path.replace(/\/+$/, "") || "/";
}

/** Whether `path` is `dir` or lies under it (cgroup paths, always absolute). */
function within(path: string, dir: string): boolean {
  return dir === "/" || path === dir || path.startsWith(`${dir}/`);
}

/**
 * The cgroup directories (host paths, before the `root` prefix) that limit this process for one
 * controller, own cgroup first, up to the mount point. v1 when the controller is bound to a v1 hierarchy
 * (hybrid hosts have both), else v2; undefined when neither is mounted.
 */
export function cgroupDirs(root: string, controller: string): { version: 1 | 2; dirs: string[] } | undefined {
  let memberships: CgroupMembership[];
  let mounts: CgroupMount[];
  try {
    memberships = parseProcCgroup(readFileSync(join(root, "/proc/self/cgroup"), "utf8"));
    mounts = parseMountinfo(readFileSync(join(root, "/proc/self/mountinfo"), "utf8"));
  } catch {
    return undefined; // not Linux, or no /proc: no cgroup limits to read
  }
  const v1 = memberships.find((m) => m.hierarchy !== "0" && m.controllers.includes(controller));
  const v1Mounts = v1 ? mounts.filter((m) => m.version === 1 && m.controllers.includes(controller)) : [];
  const v2 = memberships.find((m) => m.hierarchy === "0" && m.controllers.length === 0);
  const v2Mounts = mounts.filter((m) => m.version === 2);
  const [member, candidates, version] = v1 && v1Mounts.length > 0 ? [v1, v1Mounts, 1 as const] : v2 && v2Mounts.length > 0 ? [v2, v2Mounts, 2 as const] : [];
  if (member === undefined || candidates === undefined || version === undefined) return undefined;
  // The mount that shows the process's cgroup: its root is a prefix of the path (the deepest such root).
  const showing = candidates.filter((m) => within(member.path, m.root)).sort((a, b) => b.root.length - a.root.length);
  const mount = showing[0] ?? candidates[0]!;
  const relative = within(member.path, mount.root) && mount.root !== "/" ? member.path.slice(mount.root.length) || "/" : member.path;
  let leaf = withoutTrailingSlash(posix.join(mount.mountPoint, relative));
  // A container whose cgroup is mounted as the root of /sys/fs/cgroup without a cgroup namespace still
  // sees its host path in /proc/self/cgroup; that path does not exist in its mount, the mount root is its cgroup.
  // A path with `..` (a process moved out of its cgroup namespace's root) leads outside the mount: same.
  if (!within(leaf, mount.mountPoint) || !existsSync(join(root, leaf))) leaf = mount.mountPoint;
  const dirs: string[] = [];
  for (let dir = leaf; within(dir, mount.mountPoint); dir = posix.dirname(dir)) {
    dirs.push(dir);
    if (dir === mount.mountPoint || dir === "/") break;
  }
  return { version, dirs };
}

function readTrimmed(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined; // the root cgroup has no limit files; a missing file is no limit at that level
  }
}

/** The smallest of the defined values, or undefined. */
function smallest(values: readonly (number | undefined)[]): number | undefined {
  let min: number | undefined;
  for (const v of values) if (v !== undefined && (min === undefined || v < min)) min = v;
  return min;
}

// ---- CPU ----

/** cgroup v2 `cpu.max`: `max 100000` (no quota) or `150000 100000` (quota and period in µs) → cores. */
export function parseCpuMax(text: string): number | undefined {
  const m = /^(max|\d+)\s+(\d+)$/.exec(text.trim());
  if (!m || m[1] === "max" || Number(m[2]) === 0) return undefined;
  return Number(m[1]) / Number(m[2]);
}

/** cgroup v1 `cpu.cfs_quota_us` (-1: no quota) and `cpu.cfs_period_us` → cores. */
export function parseCfsQuota(quota: string, period: string): number | undefined {
  const q = Number(quota.trim());
  const p = Number(period.trim());
  if (!/^-?\d+$/.test(quota.trim()) || q < 0 || !(p > 0)) return undefined;
  return q / p;
}

/** The CPU quota of this process's cgroup and its parents in cores (fractional), or undefined when unlimited. `root` prefixes every path read (tests). */
export function cpuLimit(root = "/"): number | undefined {
  const found = cgroupDirs(root, "cpu");
  if (found === undefined) return undefined;
  return smallest(
    found.dirs.map((dir) => {
      if (found.version === 2) {
        const max = readTrimmed(join(root, dir, "cpu.max"));
        return max === undefined ? undefined : parseCpuMax(max);
      }
      const quota = readTrimmed(join(root, dir, "cpu.cfs_quota_us"));
      const period = readTrimmed(join(root, dir, "cpu.cfs_period_us"));
      return quota === undefined || period === undefined ? undefined : parseCfsQuota(quota, period);
    }),
  );
}

/** CPUs worth running workers on: the cores this process may run on, capped by its CPU quota rounded up; at least 1. */
export function cpusAvailable(root = "/"): number {
  const quota = cpuLimit(root);
  const cores = availableParallelism();
  return Math.max(1, quota === undefined ? cores : Math.min(cores, Math.ceil(quota)));
}

// ---- memory ----

/**
 * A memory limit in bytes as a limit: undefined when it does not limit. cgroups write "no limit" as a
 * huge number (v1: 2^63 rounded down to a page; libuv: 2^64-1), 0 means libuv found no cgroup, and a
 * limit above the machine's memory never binds before the machine does.
 */
export function interpretMemoryLimit(bytes: number, machineBytes: number): number | undefined {
  if (!Number.isFinite(bytes) || bytes <= 0 || bytes >= 2 ** 60 || bytes > machineBytes) return undefined;
  return bytes;
}

/** cgroup v2 `memory.max` (`max` or bytes) or v1 `memory.limit_in_bytes` → bytes, before interpretation. */
function parseMemoryFile(text: string): number | undefined {
  return /^\d+$/.test(text) ? Number(text) : undefined;
}

/**
 * The memory limit of this process in bytes, or undefined when unlimited: the smallest of what Node's
 * `process.constrainedMemory()` reports (libuv reads the process's own cgroup, v1 and v2) and the limits
 * of its cgroup's parents, which libuv does not read (a v1 process in a child cgroup of a 300 MiB cgroup
 * gets "unlimited" from it). `root` prefixes every path read (tests); with a root other than `/` only
 * the files under it count.
 */
export function memoryLimit(root = "/"): number | undefined {
  const machine = totalmem();
  const fromNode = root === "/" ? interpretMemoryLimit(process.constrainedMemory(), machine) : undefined;
  const found = cgroupDirs(root, "memory");
  const fromFiles = (found?.dirs ?? []).map((dir) => {
    const text = readTrimmed(join(root, dir, found!.version === 2 ? "memory.max" : "memory.limit_in_bytes"));
    const bytes = text === undefined ? undefined : parseMemoryFile(text);
    return bytes === undefined ? undefined : interpretMemoryLimit(bytes, machine);
  });
  return smallest([fromNode, ...fromFiles]);
}

// ---- how many connections ----

/**
 * The connections a memory limit holds once the base and `workers` serving threads are paid for, at the
 * measured cost per connection: the proxy refuses more (--max-connections auto) rather than be killed for
 * its memory, which would cut every locked pod of the node. Undefined limit: 0 (no cap). At least 100.
 */
export function connectionCapacity(memoryBytes: number | undefined, workers: number, model: { baseMiB?: number; perWorkerMiB?: number; perConnectionKiB?: number } = {}): number {
  if (memoryBytes === undefined) return 0;
  const left = memoryBytes - ((model.baseMiB ?? BASE_MIB) + workers * (model.perWorkerMiB ?? PER_WORKER_MIB)) * MIB;
  return Math.max(100, Math.floor(left / ((model.perConnectionKiB ?? PER_CONNECTION_KIB) * 1024)));
}

// ---- how many workers ----

export interface WorkerPlanInput {
  /** CPUs worth a worker each (cpusAvailable()). */
  readonly cpus: number;
  /** The CPU quota in cores, named in the reason when set (cpuLimit()). */
  readonly cpuLimit?: number | undefined;
  /** The memory limit in bytes; undefined: unlimited (memoryLimit()). */
  readonly memoryBytes: number | undefined;
  readonly baseMiB?: number;
  readonly perWorkerMiB?: number;
  readonly perConnectionKiB?: number;
  readonly reserveConnections?: number;
}

export interface WorkerPlan {
  readonly workers: number;
  /** A sentence naming the numbers the count came from, for the start-up log line. */
  readonly reason: string;
  /** The memory limit holds less than one worker and the connection reserve: worth a warning. */
  readonly belowMinimum: boolean;
}

function mib(bytes: number): string {
  const v = bytes / MIB;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

function cores(n: number): string {
  return Number.isInteger(n) ? n.toFixed(1) : String(Math.round(n * 1000) / 1000);
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

/**
 * As many workers as CPUs, but no more than the memory limit holds:
 * base + workers × perWorker + reserveConnections × perConnection ≤ limit. At least 1; when even one
 * does not fit, still 1, and the plan says so (`belowMinimum`).
 */
export function planWorkers(input: WorkerPlanInput): WorkerPlan {
  const baseMiB = input.baseMiB ?? BASE_MIB;
  const perWorkerMiB = input.perWorkerMiB ?? PER_WORKER_MIB;
  const perConnectionKiB = input.perConnectionKiB ?? PER_CONNECTION_KIB;
  const reserve = input.reserveConnections ?? RESERVE_CONNECTIONS;
  const cpus = Math.max(1, Math.floor(input.cpus));
  const cpuText = `${plural(cpus, "CPU")}${input.cpuLimit === undefined ? "" : ` (CPU limit ${cores(input.cpuLimit)})`}`;
  if (input.memoryBytes === undefined) {
    return { workers: cpus, reason: `${plural(cpus, "worker")}: ${cpuText}, no memory limit`, belowMinimum: false };
  }
  // Whole bytes, so a limit of exactly base + n workers + reserve holds n (no float rounding below it).
  const fixedBytes = baseMiB * MIB + reserve * perConnectionKiB * 1024;
  const fits = Math.floor((input.memoryBytes - fixedBytes) / (perWorkerMiB * MIB));
  const model = `${baseMiB} MiB base + ${perWorkerMiB} MiB per worker + ${reserve} connections × ${perConnectionKiB} KiB`;
  const limitText = `memory limit ${mib(input.memoryBytes)} MiB`;
  if (fits < 1) {
    const minimum = Math.ceil((fixedBytes + perWorkerMiB * MIB) / MIB);
    return {
      workers: 1,
      reason: `1 worker: ${cpuText}, but the ${limitText} is below the measured minimum of about ${minimum} MiB for one worker (${model}); the proxy may run out of memory under load: raise the limit`,
      belowMinimum: true,
    };
  }
  if (fits < cpus) {
    return { workers: fits, reason: `${plural(fits, "worker")}: ${cpuText}, but the ${limitText} fits only ${fits} (${model})`, belowMinimum: false };
  }
  return { workers: cpus, reason: `${plural(cpus, "worker")}: ${cpuText}, ${limitText} fits ${fits}`, belowMinimum: false };
}
