// The pod's egress lockdown as iptables rules: rendering the chain for one address family, reading the
// jumps into it from `iptables-save`, and writing the one `iptables-restore --noflush` transaction.
import type { Cidr, Family } from "./config.ts";

/** The filter chain sidecar-init owns (contract). */
export const CHAIN = "TPROXY-EGRESS";
/** The one jump into it, first in OUTPUT, as `iptables-save` prints it. */
export const JUMP_RULE = `-A OUTPUT -j ${CHAIN}`;

/** What one run allows, with names already resolved to addresses. */
export interface Policy {
  /** Resolvers DNS may reach; empty: any. */
  readonly allowDns: readonly string[];
  readonly blockCidrs: readonly Cidr[];
  /** Addresses of the node whose standard-mode port is allowed; empty: standard mode not used. */
  readonly nodeAddresses: readonly string[];
  readonly standardPort: number;
  readonly ports: readonly number[];
  /** Allow `ports` over IPv6 too (the node intercepts the pod's IPv6). */
  readonly ipv6Intercepted: boolean;
}

const isV6 = (ip: string): boolean => ip.includes(":");
const host = (ip: string): string => `${ip}/${isV6(ip) ? 128 : 32}`;

/**
 * The chain's rules for one family, in order, each written as `iptables-save` prints it:
 * loopback, replies, DNS to the allowed resolvers, the node's standard port, then the blocked CIDRs
 * (so an explicit resolver inside the service range still works), then the redirected ports, then
 * REJECT for everything else (TCP with a reset, so clients fail at once; the rest with ICMP
 * unreachable, which a local sender sees as "Operation not permitted").
 */
export function renderChain(policy: Policy, family: Family): string[] {
  const v6 = family === "ipv6";
  const mine = (ip: string): boolean => isV6(ip) === v6;
  const rules: string[] = [`-o lo -j ACCEPT`, `-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`];
  if (v6) {
    // Neighbour discovery: without it no IPv6 packet (not even an allowed DNS query) finds its next hop.
    for (const type of [133, 135, 136]) rules.push(`-p ipv6-icmp -m icmp6 --icmpv6-type ${type} -j ACCEPT`);
  }
  const resolvers = policy.allowDns.length === 0 ? [undefined] : policy.allowDns.filter(mine);
  for (const r of resolvers) {
    const d = r === undefined ? "" : `-d ${host(r)} `;
    rules.push(`${d}-p udp -m udp --dport 53 -j ACCEPT`, `${d}-p tcp -m tcp --dport 53 -j ACCEPT`);
  }
  for (const n of policy.nodeAddresses.filter(mine)) {
    rules.push(`-d ${host(n)} -p tcp -m tcp --dport ${policy.standardPort} -j ACCEPT`);
  }
  const unreachable = v6 ? "icmp6-port-unreachable" : "icmp-port-unreachable";
  for (const c of policy.blockCidrs.filter((c) => c.family === family)) {
    rules.push(`-d ${c.text} -p tcp -j REJECT --reject-with tcp-reset`, `-d ${c.text} -j REJECT --reject-with ${unreachable}`);
  }
  if (!v6 || policy.ipv6Intercepted) {
    for (const p of policy.ports) rules.push(`-p tcp -m tcp --dport ${p} -j ACCEPT`);
  }
  rules.push(`-p tcp -j REJECT --reject-with tcp-reset`, `-j REJECT --reject-with ${unreachable}`);
  return rules.map((r) => `-A ${CHAIN} ${r}`);
}

/** The OUTPUT rules of the filter table in `iptables-save -t filter` output, in kernel order. */
export function parseOutputRules(saveText: string): string[] {
  const out: string[] = [];
  let inFilter = false;
  for (const raw of saveText.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("*")) inFilter = line === "*filter";
    else if (line === "COMMIT") inFilter = false;
    else if (inFilter && line.startsWith("-A OUTPUT ")) out.push(line);
  }
  return out;
}

const jumpsToChain = (rule: string): boolean => rule.endsWith(` -j ${CHAIN}`) || rule.includes(` -j ${CHAIN} `);

/**
 * The transaction for one family. Declaring the chain under `--noflush` empties it (and creates it when
 * missing), then every rule is appended. The jump stays when it is already the only one and first in
 * OUTPUT; otherwise every jump is deleted and one is inserted first. Nothing else is named, so rules
 * other tools keep in OUTPUT stay as they are, and running twice leaves the same ruleset.
 */
export function restoreInput(chainRules: readonly string[], outputRules: readonly string[]): string {
  const jumps = outputRules.filter(jumpsToChain);
  const jumpOk = jumps.length === 1 && outputRules[0] === JUMP_RULE;
  const lines = ["*filter", `:${CHAIN} - [0:0]`];
  if (!jumpOk) {
    for (const j of jumps) lines.push(`-D ${j.slice(3)}`);
    lines.push(`-I OUTPUT 1 -j ${CHAIN}`);
  }
  lines.push(...chainRules, "COMMIT", "");
  return lines.join("\n");
}
