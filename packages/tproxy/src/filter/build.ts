// A filter version from its directory to a CompiledFilter ready for the serving threads: read once
// (a snapshot), compiled (esbuild, compile.ts) and type-checked against the contract (check.ts) in a
// process of its own. A version with compile or type errors is refused, with every error.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { lstatSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { FilterLoadError, type FilterDiagnostic } from "../errors.ts";
import { compileSnapshot, readFilterSnapshot, type CompiledFilter, type FilterSnapshot } from "./compile.ts";
import type { CheckInput } from "./check.ts";
import { memoryLimit } from "../resources.ts";

const CHECK_PROCESS = fileURLToPath(new URL(`./check-process${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url));

/** A check that takes longer is refused: the compiler is not meant to take more than a second or two. */
const CHECK_TIMEOUT_MS = 30_000;
/**
 * Old-generation heap of the check's process. A check took about 30 MiB above the compiler's own code
 * (src/filter/check.ts); this bounds a pathological one, within the proxy's memory limit.
 */
const CHECK_HEAP_MB = 192;

/**
 * A folder for Node's compile cache of the checker's process, or undefined. Loading the compiler (9 MB
 * of JavaScript) is most of a check's start: with the cache, 0.19 s instead of 0.44 s. Only a folder
 * this user made and alone can write is used (a cache planted in a shared /tmp would be run); without
 * one (a read-only root filesystem and no writable /tmp) each check compiles the compiler again.
 */
function compileCacheDir(): string | undefined {
  const dir = join(tmpdir(), `tproxy-check-cache-${process.getuid?.() ?? "user"}`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = lstatSync(dir);
    if (!st.isDirectory() || (process.getuid && st.uid !== process.getuid()) || (st.mode & 0o077) !== 0) return undefined;
    return dir;
  } catch {
    return undefined;
  }
}

/** Type-checks a snapshot in a process of its own; resolves to its errors (empty: it checks). */
export async function typeCheck(snap: FilterSnapshot): Promise<FilterDiagnostic[]> {
  const input: CheckInput = { entry: snap.entry, dir: snap.dir, files: Object.fromEntries([...snap.files].map(([f, b]) => [f, b.toString("utf8")])) };
  const fail = (why: string): FilterLoadError => new FilterLoadError(`${snap.entry}: the type check ${why}`, undefined, { reason: "type" });
  const cache = compileCacheDir();
  const env = { ...process.env, NODE_COMPILE_CACHE: cache };
  if (cache === undefined) delete env.NODE_COMPILE_CACHE;
  const child = spawn(process.execPath, [`--max-old-space-size=${CHECK_HEAP_MB}`, CHECK_PROCESS], { stdio: ["pipe", "pipe", "pipe"], env, timeout: CHECK_TIMEOUT_MS, killSignal: "SIGKILL" });
  child.stdin.end(JSON.stringify(input));
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => (out += s));
  child.stderr.setEncoding("utf8").on("data", (s: string) => (err += s));
  const [code, signal] = (await once(child, "close")) as [number | null, NodeJS.Signals | null];
  if (signal === "SIGKILL") throw fail(`took longer than ${CHECK_TIMEOUT_MS / 1000} s, or needed more than ${CHECK_HEAP_MB} MiB`);
  if (code !== 0) throw fail(`failed (exit ${code ?? signal}): ${err.trim().split("\n").slice(-3).join(" ") || "no output"}`);
  try {
    return JSON.parse(out) as FilterDiagnostic[];
  } catch {
    throw fail(`gave no answer: ${err.trim() || out.slice(0, 200)}`);
  }
}

/**
 * What a check's process may take at its peak: measured 110 to 160 MiB resident (the compiler's code is
 * most of it; V8 flags brought it no lower than 110 MiB).
 */
export const CHECK_MIB = 160;

/**
 * Why the proxy cannot afford a type check now, or undefined: its container's memory limit leaves less
 * than CHECK_MIB above what the proxy holds. The kernel would end a process of the cgroup, maybe the
 * proxy itself, and with it every locked pod's egress: a version is then loaded unchecked (compiled, and
 * its shape checked when the threads evaluate it, as before type checks), and the log says so.
 */
export function checkUnaffordable(limit: number | undefined = memoryLimit()): string | undefined {
  if (limit === undefined) return undefined;
  const rss = process.memoryUsage().rss;
  const left = limit - rss;
  if (left >= CHECK_MIB * 2 ** 20) return undefined;
  const mib = (n: number): number => Math.round(n / 2 ** 20);
  return `the memory limit ${mib(limit)} MiB leaves ${Math.max(0, mib(left))} MiB above the proxy's ${mib(rss)} MiB, and a type check takes up to ${CHECK_MIB} MiB`;
}

export interface BuildOptions {
  /** Called instead of type-checking when the memory limit cannot afford a check (see checkUnaffordable); without it, always check. */
  onCheckSkipped?: (why: string) => void;
}

/** Compiles and type-checks a snapshot; throws FilterLoadError (reason "compile" or "type") with every error. */
export async function buildSnapshot(snap: FilterSnapshot, path: string = snap.entry, options: BuildOptions = {}): Promise<CompiledFilter> {
  // esbuild first: it is quick, and a syntax error is better said once, by it, than again by the checker.
  const compiled = await compileSnapshot(snap, path);
  if (options.onCheckSkipped) {
    const why = checkUnaffordable();
    if (why !== undefined) {
      options.onCheckSkipped(why);
      return compiled;
    }
  }
  const errors = await typeCheck(snap);
  if (errors.length > 0) throw FilterLoadError.from("type", errors);
  return compiled;
}

/** Reads, compiles and type-checks the filter at `path` (its entry file, or its directory). */
export async function buildFilter(path: string, options: BuildOptions = {}): Promise<CompiledFilter> {
  return buildSnapshot(await readFilterSnapshot(path), path, options);
}
