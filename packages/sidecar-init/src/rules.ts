// The pod's egress lockdown as iptables rules: rendering the chain for one address family, reading the
// jumps into it from `iptables-save`, and writing the one `iptables-restore --noflush` transaction.
import type { OwnAddress } from "./addresses.ts";
import type { Cidr, Family, Resolver } from "./config.ts";

/** The filter chain sidecar-init owns (contract). */
export const CHAIN = "TPROXY-EGRESS";
/** The one jump into it, first in OUTPUT, as `iptables-save` prints it. */
export const JUMP_RULE = `-A OUTPUT -j ${CHAIN}`;

/** What one run allows, with names already resolved to addresses. */
export interface Policy {
  /** Resolvers DNS may reach, or "any" (every address: only when asked for explicitly). */
  readonly allowDns: readonly Resolver[] | "any";
  readonly blockCidrs: readonly Cidr[];
  /** Addresses of the node whose standard-mode port is allowed; empty: standard mode not used. */
  readonly nodeAddresses: readonly string[];
  readonly standardPort: number;
  readonly ports: readonly number[];
  /** Allow `ports` over IPv6 too (the node intercepts the pod's IPv6). */
  readonly ipv6Intercepted: boolean;
  /** The pod's own addresses (loopback aside): the only sources a packet may leave with. */
  readonly ownAddresses: readonly OwnAddress[];
}

const isV6 = (ip: string): boolean => ip.includes(":");
const host = (ip: string): string => `${ip}/${isV6(ip) ? 128 : 32}`;
/** A new TCP connection starts with a SYN alone: no stray ACK, no SYN+FIN, whatever conntrack makes of it. */
const SYN = "--tcp-flags FIN,SYN,RST,ACK SYN";

/**
 * The chain's rules for one family, in order, each written as `iptables-save` prints it:
 *
 * 1. loopback; then conntrack INVALID packets dropped (crafted segments such as SYN+FIN or out-of-window
 *    data, which the node would neither track nor redirect); IPv6 neighbour discovery;
 * 2. for each of the pod's own addresses as source: replies, DNS to the allowed resolvers, the node's
 *    standard port, then the blocked CIDRs (so an explicit resolver inside the service range still works),
 *    then the redirected ports, then REJECT for everything else (TCP with a reset, so clients fail at
 *    once; the rest with ICMP unreachable, which a local sender sees as "Operation not permitted").
 *    New TCP connections are accepted only as a bare SYN;
 * 3. DROP: a packet with any other source was forged (raw socket) and gets no answer at all.
 */
export function renderChain(policy: Policy, family: Family): string[] {
  const v6 = family === "ipv6";
  const mine = (ip: string): boolean => isV6(ip) === v6;
  const rules: string[] = [`-o lo -j ACCEPT`, `-m conntrack --ctstate INVALID -j DROP`];
  if (v6) {
    // Neighbour discovery: without it no IPv6 packet (not even an allowed DNS query) finds its next hop.
    // Its source may be the unspecified address (duplicate address detection), so it comes before the source check.
    for (const type of [133, 135, 136]) rules.push(`-p ipv6-icmp -m icmp6 --icmpv6-type ${type} -j ACCEPT`);
  }
  const body: string[] = [`-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`];
  const resolvers = policy.allowDns === "any" ? [undefined] : policy.allowDns.filter((r) => mine(r.ip));
  for (const r of resolvers) {
    const d = r === undefined ? "" : `-d ${host(r.ip)} ${r.iface === undefined ? "" : `-o ${r.iface} `}`;
    body.push(`${d}-p udp -m udp --dport 53 -j ACCEPT`, `${d}-p tcp -m tcp --dport 53 ${SYN} -j ACCEPT`);
  }
  for (const n of policy.nodeAddresses.filter(mine)) {
    body.push(`-d ${host(n)} -p tcp -m tcp --dport ${policy.standardPort} ${SYN} -j ACCEPT`);
  }
  const unreachable = v6 ? "icmp6-port-unreachable" : "icmp-port-unreachable";
  for (const c of policy.blockCidrs.filter((c) => c.family === family)) {
    body.push(`-d ${c.text} -p tcp -j REJECT --reject-with tcp-reset`, `-d ${c.text} -j REJECT --reject-with ${unreachable}`);
  }
  if (!v6 || policy.ipv6Intercepted) {
    for (const p of policy.ports) body.push(`-p tcp -m tcp --dport ${p} ${SYN} -j ACCEPT`);
  }
  body.push(`-p tcp -j REJECT --reject-with tcp-reset`, `-j REJECT --reject-with ${unreachable}`);
  for (const own of policy.ownAddresses.filter((a) => a.family === family)) {
    rules.push(...body.map((r) => `-s ${host(own.ip)} ${r}`));
  }
  rules.push(`-j DROP`);
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
