// Taking podwatch's chains off the node, for an uninstall: the jumps, the rules, the chains themselves.
import type { Family } from "./desired.ts";
import { ENFORCE_CHAIN, ENFORCE_HOOKS } from "./enforce.ts";
import { GUARD_SPEC } from "./guard.ts";
import type { IptablesRunner } from "./iptables.ts";
import { parseSave, planRemoval, type ChainSpec } from "./owned-chain.ts";
import { CHAIN } from "./rules.ts";

/** Every chain podwatch owns, with the built-in chains that jump to it. */
export const OWNED_CHAINS: ReadonlyArray<ChainSpec<string>> = [
  GUARD_SPEC,
  { table: "filter", chain: ENFORCE_CHAIN, hooks: ENFORCE_HOOKS },
  { table: "nat", chain: CHAIN, hooks: ["PREROUTING"] },
];

/** Removes one chain given its table's `iptables-save` listing; false when the kernel held none of it. */
export async function removeChain(runner: IptablesRunner, family: Family, spec: ChainSpec<string>, saved: string): Promise<boolean> {
  const input = planRemoval(spec, parseSave(saved, spec));
  if (input === undefined) return false;
  await runner.restore(family, input);
  return true;
}
