// The nat chain podwatch owns: rendering the wanted rules, reading what the kernel has (`iptables-save`),
// and planning the one `iptables-restore --noflush` transaction that turns the second into the first.
import { REDIRECTED_PORTS } from "@tproxy/iptables";
import { parseSave, planChain, type ChainSpec } from "./owned-chain.ts";
import type { Family, Redirect } from "./desired.ts";

/** The nat chain podwatch owns (contract). */
export const CHAIN = "TPROXY-REDIRECT";
/** The one jump into it, as `iptables-save` prints it. */
export const JUMP_RULE = `-A PREROUTING -j ${CHAIN}`;
/** Destination ports redirected by default (the contract with sidecar-init's lock). */
export const DEFAULT_PORTS: readonly number[] = REDIRECTED_PORTS;

export interface RenderOptions {
  /** Port of the transparent proxy on this node (contract default: DEFAULT_TRANSPARENT_PORT of @tproxy/iptables). */
  readonly proxyPort: number;
  /** Destination ports to redirect; default 80 and 443. At most 15 (a multiport limit). */
  readonly ports?: readonly number[];
  /**
   * A node address per family to DNAT to instead of REDIRECT. REDIRECT rewrites the destination to the
   * primary address of the interface the packet came in on and drops the packet when that interface has
   * none, as Calico's host-side veths (`cali*`) have none for IPv4; a DNAT to an address the node owns
   * works whatever the incoming interface. A family without one keeps REDIRECT.
   */
  readonly toAddress?: RedirectAddresses;
}

/** The node address, per family, that redirected connections are sent to (`--redirect-to-address`). */
export type RedirectAddresses = Readonly<Partial<Record<Family, string>>>;

/**
 * One rule per pod IP, written exactly as `iptables-save` prints it back, so the kernel's listing can be
 * compared with the wanted one as plain text.
 */
export function renderRule(r: Redirect, opts: RenderOptions): string {
  const prefix = r.family === "ipv4" ? 32 : 128;
  const ports = (opts.ports ?? DEFAULT_PORTS).join(",");
  return `-A ${CHAIN} -s ${r.ip}/${prefix} -p tcp -m multiport --dports ${ports} -m comment --comment "${r.pod}" ${target(r.family, opts)}`;
}

/** The rule's target as iptables-save prints it: an IPv6 address comes in brackets before its port. */
function target(family: Family, opts: RenderOptions): string {
  const address = opts.toAddress?.[family];
  if (address === undefined) return `-j REDIRECT --to-ports ${opts.proxyPort}`;
  return `-j DNAT --to-destination ${family === "ipv6" ? `[${address}]` : address}:${opts.proxyPort}`;
}

/** The wanted chain content of one family, in order. */
export function renderChain(redirects: readonly Redirect[], family: Family, opts: RenderOptions): string[] {
  return redirects.filter((r) => r.family === family).map((r) => renderRule(r, opts));
}

const NAT: ChainSpec<"PREROUTING"> = { table: "nat", chain: CHAIN, hooks: ["PREROUTING"] };

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
  const k = parseSave(text, NAT);
  return { exists: k.exists, rules: k.rules, jumps: k.jumps.PREROUTING };
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
 * Plans one family (owned-chain.ts): undefined when the kernel already has exactly the wanted chain and one
 * jump, else one transaction that rewrites the chain and repairs the jump. A redirect rule prints back from
 * the kernel exactly as rendered (tested against the real iptables), so the rule text is its key.
 */
export function planFamily(kernel: KernelChain, wanted: readonly string[]): FamilyPlan | undefined {
  const plan = planChain(NAT, { exists: kernel.exists, rules: kernel.rules, jumps: { PREROUTING: kernel.jumps } }, wanted.map((line) => ({ key: line, line })), (rule) => rule);
  if (!plan) return undefined;
  return { input: plan.input, added: plan.added, removed: plan.removed, jumpRepaired: plan.jumpsRepaired.length > 0 };
}

/** Source address and comment of one of our rules, for log lines. */
export function describeRule(rule: string): { ip: string; pod: string } {
  const ip = /-s (\S+?)(?:\/\d+)? /.exec(rule)?.[1] ?? "?";
  const pod = /--comment "([^"]*)"/.exec(rule)?.[1] ?? /--comment (\S+)/.exec(rule)?.[1] ?? "?";
  return { ip, pod };
}
