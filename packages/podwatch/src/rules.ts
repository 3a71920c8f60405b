// The nat chain podwatch owns: rendering the wanted rules, reading what the kernel has (`iptables-save`),
// and planning the one `iptables-restore --noflush` transaction that turns the second into the first.
import { RulesParseError } from "./errors.ts";
import type { Family, Redirect } from "./desired.ts";

/** The nat chain podwatch owns (contract). */
export const CHAIN = "TPROXY-REDIRECT";
/** The one jump into it, as `iptables-save` prints it. */
export const JUMP_RULE = `-A PREROUTING -j ${CHAIN}`;
/** Destination ports redirected by default. */
export const DEFAULT_PORTS: readonly number[] = [80, 443];

export interface RenderOptions {
  /** Port of the transparent proxy on this node (contract default 8080). */
  readonly proxyPort: number;
  /** Destination ports to redirect; default 80 and 443. At most 15 (a multiport limit). */
  readonly ports?: readonly number[];
}

/**
 * One rule per pod IP, written exactly as `iptables-save` prints it back, so the kernel's listing can be
 * compared with the wanted one as plain text.
 */
export function renderRule(r: Redirect, opts: RenderOptions): string {
  const prefix = r.family === "ipv4" ? 32 : 128;
  const ports = (opts.ports ?? DEFAULT_PORTS).join(",");
  return `-A ${CHAIN} -s ${r.ip}/${prefix} -p tcp -m multiport --dports ${ports} -m comment --comment "${r.pod}" -j REDIRECT --to-ports ${opts.proxyPort}`;
}

/** The wanted chain content of one family, in order. */
export function renderChain(redirects: readonly Redirect[], family: Family, opts: RenderOptions): string[] {
  return redirects.filter((r) => r.family === family).map((r) => renderRule(r, opts));
}

/** What the kernel's nat table holds that concerns podwatch. */
export interface KernelChain {
  /** The chain is declared. */
  readonly exists: boolean;
  /** Its rules, `-A TPROXY-REDIRECT ...` lines in kernel order. */
  readonly rules: readonly string[];
  /** Every PREROUTING rule that jumps to it, `-A PREROUTING ...` lines. */
  readonly jumps: readonly string[];
}

/** Reads `iptables-save -t nat` output. An empty listing (nat table not in use yet) is an empty state. */
export function parseNatSave(text: string): KernelChain {
  let inNat = false;
  let sawNat = false;
  let sawOther = false;
  let exists = false;
  const rules: string[] = [];
  const jumps: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("*")) {
      inNat = line === "*nat";
      sawOther ||= !inNat;
      sawNat ||= inNat;
      continue;
    }
    if (!inNat) {
      sawOther = true;
      continue;
    }
    if (line === "COMMIT") {
      inNat = false;
    } else if (line.startsWith(`:${CHAIN} `)) {
      exists = true;
    } else if (line.startsWith(`-A ${CHAIN} `)) {
      rules.push(line);
    } else if (line.startsWith("-A PREROUTING ") && / -j TPROXY-REDIRECT(?: |$)/.test(line)) {
      jumps.push(line);
    } else if (!line.startsWith(":") && !line.startsWith("-A ")) {
      throw new RulesParseError(`unexpected line in iptables-save output: ${JSON.stringify(line)}`);
    }
  }
  if (!sawNat && sawOther) throw new RulesParseError("iptables-save output has no *nat table");
  return { exists, rules, jumps };
}

/** The transaction for one family, and what it changes (for logs and metrics). */
export interface FamilyPlan {
  /** Input for `iptables-restore --noflush`. */
  readonly input: string;
  /** Rules that were not in the kernel before. */
  readonly added: readonly string[];
  /** Kernel rules that will be gone afterwards. */
  readonly removed: readonly string[];
  /** The jump from PREROUTING was missing or duplicated. */
  readonly jumpRepaired: boolean;
}

/**
 * Plans one family. Returns undefined when the kernel already has exactly the wanted chain and one
 * jump (or has nothing of ours and nothing is wanted). Otherwise the whole chain is rewritten in one
 * transaction: declaring the chain under `--noflush` empties it, then every wanted rule is appended;
 * the jump is inserted first in PREROUTING only when missing, and extra jumps are deleted. Nothing
 * else in the table is named, so other chains (kube-proxy's) are left as they are.
 */
export function planFamily(kernel: KernelChain, wanted: readonly string[]): FamilyPlan | undefined {
  const plainJumps = kernel.jumps.filter((j) => j === JUMP_RULE).length;
  const jumpOk = plainJumps === 1 && kernel.jumps.length === 1;
  const rulesOk = kernel.rules.length === wanted.length && kernel.rules.every((r, i) => r === wanted[i]);
  if (kernel.exists && jumpOk && rulesOk) return undefined;
  if (!kernel.exists && kernel.jumps.length === 0 && wanted.length === 0) return undefined;

  const lines = ["*nat", `:${CHAIN} - [0:0]`];
  let keptPlain = false;
  for (const jump of kernel.jumps) {
    if (jump === JUMP_RULE && !keptPlain) {
      keptPlain = true;
      continue;
    }
    lines.push(`-D ${jump.slice(3)}`);
  }
  if (!keptPlain) lines.push(`-I PREROUTING 1 -j ${CHAIN}`);
  lines.push(...wanted, "COMMIT", "");

  const have = new Set(kernel.rules);
  const want = new Set(wanted);
  return {
    input: lines.join("\n"),
    added: wanted.filter((r) => !have.has(r)),
    removed: kernel.rules.filter((r) => !want.has(r)),
    jumpRepaired: !jumpOk,
  };
}

/** Source address and comment of one of our rules, for log lines. */
export function describeRule(rule: string): { ip: string; pod: string } {
  const ip = /-s (\S+?)(?:\/\d+)? /.exec(rule)?.[1] ?? "?";
  const pod = /--comment "([^"]*)"/.exec(rule)?.[1] ?? /--comment (\S+)/.exec(rule)?.[1] ?? "?";
  return { ip, pod };
}
