// The filter-table chain podwatch owns: the node's own enforcement of the lock. Whatever a locked pod
// manages inside its namespace (raw frames from AF_PACKET never pass its OUTPUT hooks), what it sends
// reaches the node's FORWARD or INPUT hook, and there only this passes: its 80/443 redirected to the
// proxy, DNS to the allowed resolvers, the standard-mode port on the node, replies in connections it did
// not open (it still serves inbound traffic and kubelet probes) and, for IPv6, neighbour discovery.
//
// Rules do not round-trip through the kernel as written (`neighbour-solicitation` comes back as `135`,
// match modules are added or reordered), so each rule carries a deterministic ID in its comment, derived
// from the rule itself, and only the IDs the kernel lists are compared with the wanted ones.
import { createHash } from "node:crypto";
import { parseSave, planChain, type ChainSpec } from "./owned-chain.ts";
import type { Family, Redirect } from "./desired.ts";

/** The filter chain podwatch owns. */
export const ENFORCE_CHAIN = "TPROXY-ENFORCE";
/** The built-in chains that jump to it: forwarded traffic (to anywhere else) and traffic to the node. */
export const ENFORCE_HOOKS = ["INPUT", "FORWARD"] as const;
export type EnforceHook = (typeof ENFORCE_HOOKS)[number];
/** Prefix of the ID in each rule's comment. */
export const ID_PREFIX = "tproxy:";

export interface EnforceOptions {
  /** Port of the transparent proxy: redirected connections arrive there (conntrack state DNAT). */
  readonly proxyPort: number;
  /**
   * Resolvers a locked pod may query (udp and tcp 53), canonical addresses of either family. Matched
   * on the destination the pod sent to (`--ctorigdst`), so a Service address that kube-proxy rewrites
   * to a DNS pod still matches. Empty: port 53 to any address (the in-pod lock is then just as open).
   */
  readonly allowDns: readonly string[];
  /** Standard-mode port of the proxy on the node's own addresses; undefined: none. */
  readonly standardPort?: number;
}

/** An ID derived from the rule's family and text (without its comment): equal rules, equal IDs. */
export function ruleId(family: Family, body: string): string {
  return createHash("sha256").update(`${family} ${ENFORCE_CHAIN} ${body}`).digest("hex").slice(0, 16);
}

function rule(family: Family, body: string, label: string): { id: string; line: string } {
  const id = ruleId(family, body);
  const cut = body.lastIndexOf(" -j ");
  return { id, line: `-A ${ENFORCE_CHAIN} ${body.slice(0, cut)} -m comment --comment "${ID_PREFIX}${id} ${label}"${body.slice(cut)}` };
}

const NDP_TYPES = [133, 135, 136]; // router solicitation, neighbour solicitation, neighbour advertisement
const NDP_DESTINATIONS = ["-d fe80::/10", "-d ff02::/16", "-m addrtype --dst-type LOCAL"];

/**
 * The wanted chain of one family, in order: each rule with its ID. Nothing when no pod is locked. What may
 * pass is the same for every locked address, so it is written once, for any source, ahead of one DROP per
 * locked address: an unlocked source never reaches a DROP of its own, so returning its packets early
 * changes nothing, and the chain grows by one rule per locked address, not by eight.
 */
export function renderEnforce(redirects: readonly Redirect[], family: Family, opts: EnforceOptions): Array<{ id: string; line: string }> {
  const mine = redirects.filter((r) => r.family === family);
  if (mine.length === 0) return [];
  const prefix = family === "ipv4" ? 32 : 128;
  const resolvers = opts.allowDns.filter((ip) => ip.includes(":") === (family === "ipv6"));
  const out = [rule(family, "-m conntrack --ctdir REPLY -j RETURN", "replies")];
  out.push(rule(family, `-p tcp -m tcp --dport ${opts.proxyPort} -m conntrack --ctstate DNAT -j RETURN`, "redirected to the proxy"));
  for (const proto of ["udp", "tcp"]) {
    if (opts.allowDns.length === 0) out.push(rule(family, `-p ${proto} -m conntrack --ctorigdstport 53 -j RETURN`, "dns (any resolver)"));
    for (const dns of resolvers) out.push(rule(family, `-p ${proto} -m conntrack --ctorigdst ${dns} --ctorigdstport 53 -j RETURN`, "dns"));
  }
  if (opts.standardPort !== undefined) {
    out.push(rule(family, `-p tcp -m tcp --dport ${opts.standardPort} -m addrtype --dst-type LOCAL -j RETURN`, "standard port"));
  }
  if (family === "ipv6") {
    // Only to where neighbour discovery goes (link-local, link-scope multicast, the node itself): an
    // ND-typed packet to a remote address would otherwise be forwarded, a way out for raw packets.
    for (const t of NDP_TYPES) {
      for (const dst of NDP_DESTINATIONS) out.push(rule(family, `${dst} -p ipv6-icmp -m icmp6 --icmpv6-type ${t} -j RETURN`, "neighbour discovery"));
    }
  }
  for (const r of mine) out.push(rule(family, `-s ${r.ip}/${prefix} -j DROP`, r.pod));
  return out;
}

/** What the kernel's filter table holds that concerns podwatch. */
export interface KernelEnforce {
  readonly exists: boolean;
  /** IDs of the chain's rules in kernel order; a rule without one of our IDs reads as `""`. */
  readonly ids: readonly string[];
  /** Every rule of INPUT / FORWARD that jumps to the chain, `-A HOOK ...` lines. */
  readonly jumps: Readonly<Record<EnforceHook, readonly string[]>>;
}

const ID_RE = new RegExp(`--comment "?${ID_PREFIX}([0-9a-f]{16})\\b`);
const FILTER: ChainSpec<EnforceHook> = { table: "filter", chain: ENFORCE_CHAIN, hooks: ENFORCE_HOOKS };
/** A kernel rule's ID; a rule without one of ours reads as `""` (and is never wanted). */
const idOf = (rule: string): string => ID_RE.exec(rule)?.[1] ?? "";

/** Reads `iptables-save -t filter` output. An empty listing is an empty state. */
export function parseFilterSave(text: string): KernelEnforce {
  const k = parseSave(text, FILTER);
  return { exists: k.exists, ids: k.rules.map(idOf), jumps: k.jumps };
}

/** The transaction for one family's filter table, and what it changes. */
export interface EnforcePlan {
  /** Input for `iptables-restore --noflush`. */
  readonly input: string;
  /** Number of wanted rules whose ID the kernel did not list, and of kernel rules not wanted. */
  readonly added: number;
  readonly removed: number;
  /** Hooks whose jump was missing or duplicated. */
  readonly jumpsRepaired: readonly EnforceHook[];
}

/**
 * Plans one family. Undefined when the kernel lists exactly the wanted IDs in order and one plain jump
 * from each hook (or holds nothing of ours and nothing is wanted). Otherwise one transaction rewrites
 * the chain: declaring it under `--noflush` empties it, every wanted rule is appended, a missing jump
 * is inserted first in its hook, extra jumps are deleted. The chain is never seen empty by a packet:
 * the kernel swaps the whole table at COMMIT.
 */
export function planEnforce(kernel: KernelEnforce, wanted: ReadonlyArray<{ id: string; line: string }>): EnforcePlan | undefined {
  // The kernel prints rules back in its own spelling; only the IDs in their comments are compared.
  const plan = planChain(FILTER, { exists: kernel.exists, rules: kernel.ids, jumps: kernel.jumps }, wanted.map((w) => ({ key: w.id, line: w.line })), (id: string) => id);
  if (!plan) return undefined;
  return { input: plan.input, added: plan.added.length, removed: plan.removed.length, jumpsRepaired: plan.jumpsRepaired };
}
