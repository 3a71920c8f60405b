// The filter-table chain that keeps the proxy's transparent port to the node's redirect. The proxy
// listens on every address of the node (it must: a redirected connection arrives on whichever address
// the pod's packets came in on), so without this any pod, any host that reaches the node and, on a
// node with a public address, anyone on the internet could open a connection to that port and have the
// filter relay it. A connection the node redirected (REDIRECT, or DNAT to a node address) carries the
// conntrack state DNAT; anything else to the port is refused.
//
// The chain is kept whenever podwatch runs, locked pods or not: the port is open from the moment the
// proxy starts. It is jumped from INPUT only, the hook every connection to a local socket passes.
//
// Refused with a TCP reset rather than dropped: the port is no secret (the chart is public), and a
// client that tries it learns at once that it may not, instead of hanging until its timeout; to a
// scanner it looks like any closed port. Loopback is not exempt: nothing on the node has a reason to
// connect to the transparent port directly (the kubelet's probes use the admin port), and such a
// connection has no original destination, so the proxy would take the target from the Host header or
// SNI — the very relay this chain is there to refuse, to any host-network process of the node.
//
// Rules carry IDs in their comments, as in enforce.ts: the kernel prints `! --ctstate DNAT` and the
// reject option back in its own spelling.
import { createHash } from "node:crypto";
import { parseSave, planChain, type ChainSpec } from "./owned-chain.ts";
import type { Family } from "./desired.ts";
import { ID_PREFIX } from "./enforce.ts";

/** The filter chain podwatch owns for the proxy's port. */
export const GUARD_CHAIN = "TPROXY-GUARD";
export const GUARD_HOOKS = ["INPUT"] as const;
export type GuardHook = (typeof GUARD_HOOKS)[number];

const GUARD: ChainSpec<GuardHook> = { table: "filter", chain: GUARD_CHAIN, hooks: GUARD_HOOKS };
const ID_RE = new RegExp(`--comment "?${ID_PREFIX}([0-9a-f]{16})\\b`);
const idOf = (rule: string): string => ID_RE.exec(rule)?.[1] ?? "";

/** The wanted chain of one family: one rule refusing what was not redirected to the proxy's port. */
export function renderGuard(family: Family, proxyPort: number): Array<{ id: string; line: string }> {
  const match = `-p tcp -m tcp --dport ${proxyPort} -m conntrack ! --ctstate DNAT`;
  const target = "-j REJECT --reject-with tcp-reset";
  const id = createHash("sha256").update(`${family} ${GUARD_CHAIN} ${match} ${target}`).digest("hex").slice(0, 16);
  return [{ id, line: `-A ${GUARD_CHAIN} ${match} -m comment --comment "${ID_PREFIX}${id} only redirected connections reach the proxy" ${target}` }];
}

/** What the kernel's filter table holds of the guard: the chain, its rule IDs, the INPUT jumps. */
export interface KernelGuard {
  readonly exists: boolean;
  readonly ids: readonly string[];
  readonly jumps: Readonly<Record<GuardHook, readonly string[]>>;
}

export function parseGuardSave(text: string): KernelGuard {
  const k = parseSave(text, GUARD);
  return { exists: k.exists, ids: k.rules.map(idOf), jumps: k.jumps };
}

/** Undefined when the kernel has the wanted chain and one jump; else one transaction that makes it so. */
export function planGuard(kernel: KernelGuard, wanted: ReadonlyArray<{ id: string; line: string }>): { input: string } | undefined {
  const plan = planChain(GUARD, { exists: kernel.exists, rules: kernel.ids, jumps: kernel.jumps }, wanted.map((w) => ({ key: w.id, line: w.line })), (id: string) => id);
  return plan && { input: plan.input };
}

export { GUARD as GUARD_SPEC };
