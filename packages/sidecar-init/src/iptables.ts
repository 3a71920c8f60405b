// The iptables binaries: choosing the backend (nft or legacy), reading the filter table, and applying a
// transaction with iptables-restore. Processes are started through a small `Runner` interface so the
// choice logic is testable without root.
import { execFile } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, join } from "node:path";
import type { Backend, Family } from "./config.ts";
import { CapabilityError, IptablesError, IptablesMissingError } from "./errors.ts";

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Starts a program and collects its output; rejects only when it cannot be started. */
export type Runner = (file: string, args: readonly string[], input?: string) => Promise<RunResult>;

export const execRunner: Runner = (file, args, input) =>
  new Promise((resolve, reject) => {
    const child = execFile(file, args, { encoding: "utf8", maxBuffer: 64 * 1024 * 1024, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number" && !err.killed) return reject(err);
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 124) : 0, stdout, stderr });
    });
    // A program that exits before reading its input must not crash this process with EPIPE.
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(input ?? "");
  });

/** Finds an executable on PATH, like `command -v`. */
export function which(name: string, path: string | undefined = process.env["PATH"]): string | undefined {
  for (const dir of (path ?? "").split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here: keep looking
    }
  }
  return undefined;
}

/** The save/restore pair for one family. */
export interface FamilyTools {
  readonly family: Family;
  readonly save: string;
  readonly restore: string;
}

/** The backend in use and its programs, one pair per family. */
export interface Tools {
  /** `nft`, `legacy`, or `default` when only the unsuffixed `iptables-restore` exists. */
  readonly backend: "nft" | "legacy" | "default";
  readonly ipv4: FamilyTools;
  readonly ipv6: FamilyTools;
}

type Variant = "nft" | "legacy" | "default";

function names(variant: Variant): Record<Family, { save: string; restore: string }> {
  const mid = variant === "default" ? "" : `-${variant}`;
  return {
    ipv4: { save: `iptables${mid}-save`, restore: `iptables${mid}-restore` },
    ipv6: { save: `ip6tables${mid}-save`, restore: `ip6tables${mid}-restore` },
  };
}

/** Resolves every program of a variant on PATH, or names the first one missing. */
function locate(variant: Variant, path: string | undefined): Tools | string {
  const n = names(variant);
  const found: Partial<Record<Family, FamilyTools>> = {};
  for (const family of ["ipv4", "ipv6"] as const) {
    const save = which(n[family].save, path);
    if (save === undefined) return n[family].save;
    const restore = which(n[family].restore, path);
    if (restore === undefined) return n[family].restore;
    found[family] = { family, save, restore };
  }
  return { backend: variant, ipv4: found.ipv4!, ipv6: found.ipv6! };
}

function missing(what: string, path: string | undefined, hint: string): IptablesMissingError {
  return new IptablesMissingError(`iptables binary not found: ${what} is not on PATH (${path ?? ""}); ${hint}`);
}

const INSTALL_HINT = "the init container image needs the iptables package (iptables-restore and ip6tables-restore)";

/** Counts the rules a backend holds, to follow whichever one the namespace already uses. */
async function ruleCount(tools: Tools, run: Runner): Promise<number> {
  const r = await run(tools.ipv4.save, []).catch(() => undefined);
  return r && r.code === 0 ? r.stdout.split("\n").filter((l) => l.startsWith("-A ")).length : 0;
}

/**
 * Picks the programs. `nft` and `legacy` demand their suffixed binaries. `auto` uses the variant whose
 * tables already hold rules (legacy only when it holds more, as Kubernetes' iptables wrappers do),
 * nft otherwise, and falls back to the unsuffixed binaries on images that ship only those.
 */
export async function chooseTools(choice: Backend, run: Runner, path: string | undefined = process.env["PATH"]): Promise<Tools> {
  if (choice !== "auto") {
    const t = locate(choice, path);
    if (typeof t === "string") throw missing(t, path, `${INSTALL_HINT}, or choose another --iptables-backend`);
    return t;
  }
  const nft = locate("nft", path);
  const legacy = locate("legacy", path);
  if (typeof nft !== "string" && typeof legacy !== "string") {
    return (await ruleCount(legacy, run)) > (await ruleCount(nft, run)) ? legacy : nft;
  }
  if (typeof nft !== "string") return nft;
  if (typeof legacy !== "string") return legacy;
  const plain = locate("default", path);
  if (typeof plain === "string") throw missing(plain, path, INSTALL_HINT);
  return plain;
}

function firstLine(text: string): string {
  return text.split("\n").map((l) => l.trim()).find((l) => l !== "") ?? "(no output)";
}

function failure(tool: string, r: RunResult, doing: string): Error {
  const detail = firstLine(r.stderr || r.stdout);
  if (/permission denied|operation not permitted|you must be root/i.test(detail)) {
    return new CapabilityError(`${tool} was refused while ${doing}: ${detail}; the init container needs the NET_ADMIN capability (and NET_RAW for the legacy backend)`);
  }
  return new IptablesError(`${tool} failed while ${doing} (exit ${r.code}): ${detail}`);
}

async function start(run: Runner, file: string, args: readonly string[], input?: string): Promise<RunResult> {
  try {
    return await run(file, args, input);
  } catch (err) {
    throw new IptablesMissingError(`cannot start ${file}: ${(err as Error).message}`);
  }
}

/** `iptables-save -t filter` of one family. */
export async function saveFilter(t: FamilyTools, run: Runner): Promise<string> {
  const r = await start(run, t.save, ["-t", "filter"]);
  if (r.code !== 0) throw failure(t.save, r, "reading the filter table");
  return r.stdout;
}

/** Applies (or with `test`, only checks) one transaction; iptables-restore commits it whole or not at all. */
export async function restore(t: FamilyTools, input: string, run: Runner, opts: { test?: boolean } = {}): Promise<void> {
  const args = ["--noflush", ...(opts.test ? ["--test"] : [])];
  const r = await start(run, t.restore, args, input);
  if (r.code !== 0) throw failure(t.restore, r, opts.test ? "checking the rules" : "applying the rules");
}
