// One chain podwatch owns in one table of one family, jumped from fixed hooks: reading it from
// `iptables-save` and planning the one `iptables-restore --noflush` transaction that makes it the wanted
// chain. The nat redirect chain (rules.ts) and the filter enforce chain (enforce.ts) are both this.
import { RulesParseError } from "./errors.ts";

export interface ChainSpec<Hook extends string> {
  readonly table: "nat" | "filter";
  readonly chain: string;
  /** Built-in chains that must jump to `chain` exactly once, first. */
  readonly hooks: readonly Hook[];
}

/** What one table of the kernel holds that concerns one owned chain. */
export interface KernelState<Hook extends string> {
  /** The chain is declared. */
  readonly exists: boolean;
  /** Its rules, `-A CHAIN ...` lines in kernel order. */
  readonly rules: readonly string[];
  /** Per hook, every rule that jumps to the chain, `-A HOOK ...` lines. */
  readonly jumps: Readonly<Record<Hook, readonly string[]>>;
}

/** Reads `iptables-save -t TABLE` output. An empty listing (the table not in use yet) is an empty state. */
export function parseSave<Hook extends string>(text: string, spec: ChainSpec<Hook>): KernelState<Hook> {
  const jumpRe = new RegExp(` -j ${spec.chain}(?: |$)`);
  let inTable = false;
  let sawTable = false;
  let sawOther = false;
  let exists = false;
  const rules: string[] = [];
  const jumps = Object.fromEntries(spec.hooks.map((h) => [h, [] as string[]])) as Record<Hook, string[]>;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("*")) {
      inTable = line === `*${spec.table}`;
      sawOther ||= !inTable;
      sawTable ||= inTable;
      continue;
    }
    if (!inTable) {
      sawOther = true;
      continue;
    }
    if (line === "COMMIT") {
      inTable = false;
      continue;
    }
    if (line.startsWith(`:${spec.chain} `)) {
      exists = true;
      continue;
    }
    if (line.startsWith(`-A ${spec.chain} `)) {
      rules.push(line);
      continue;
    }
    const hook = spec.hooks.find((h) => line.startsWith(`-A ${h} `));
    if (hook !== undefined && jumpRe.test(line)) jumps[hook].push(line);
    else if (!line.startsWith(":") && !line.startsWith("-A ")) {
      throw new RulesParseError(`unexpected line in iptables-save output: ${JSON.stringify(line)}`);
    }
  }
  if (!sawTable && sawOther) throw new RulesParseError(`iptables-save output has no *${spec.table} table`);
  return { exists, rules, jumps };
}

/** The transaction for one family's table, and what it changes. */
export interface ChainPlan<Hook extends string> {
  /** Input for `iptables-restore --noflush`. */
  readonly input: string;
  /** Keys of wanted rules the kernel did not have, and of kernel rules that will be gone. */
  readonly added: readonly string[];
  readonly removed: readonly string[];
  /** Hooks whose jump was missing, not plain, or duplicated. */
  readonly jumpsRepaired: readonly Hook[];
}

/**
 * Plans one family. Undefined when the kernel's rules have exactly the wanted keys in order and each hook
 * has one plain jump (or the kernel holds nothing of ours and nothing is wanted). Otherwise one transaction
 * rewrites the chain: declaring it under `--noflush` empties it, every wanted rule is appended, a missing
 * jump is inserted first in its hook, extra jumps are deleted. Nothing else in the table is named, so
 * other chains (kube-proxy's) are left as they are, and the kernel swaps the table at COMMIT, so no packet
 * sees the chain half written. `keyOf` says what of a kernel rule is compared (its text, or an ID in it).
 */
export function planChain<Hook extends string>(
  spec: ChainSpec<Hook>,
  kernel: KernelState<Hook>,
  wanted: ReadonlyArray<{ key: string; line: string }>,
  keyOf: (kernelRule: string) => string,
): ChainPlan<Hook> | undefined {
  const plain = (hook: Hook): string => `-A ${hook} -j ${spec.chain}`;
  const broken = spec.hooks.filter((h) => !(kernel.jumps[h].length === 1 && kernel.jumps[h][0] === plain(h)));
  const have = kernel.rules.map(keyOf);
  const rulesOk = have.length === wanted.length && have.every((k, i) => k === wanted[i]?.key);
  const anyJump = spec.hooks.some((h) => kernel.jumps[h].length > 0);
  if (kernel.exists && broken.length === 0 && rulesOk) return undefined;
  if (!kernel.exists && !anyJump && wanted.length === 0) return undefined;

  const lines = [`*${spec.table}`, `:${spec.chain} - [0:0]`];
  for (const hook of spec.hooks) {
    let kept = false;
    for (const jump of kernel.jumps[hook]) {
      if (jump === plain(hook) && !kept) {
        kept = true;
        continue;
      }
      lines.push(`-D ${jump.slice(3)}`);
    }
    if (!kept) lines.push(`-I ${hook} 1 -j ${spec.chain}`);
  }
  lines.push(...wanted.map((w) => w.line), "COMMIT", "");
  const haveSet = new Set(have);
  const wantSet = new Set(wanted.map((w) => w.key));
  return {
    input: lines.join("\n"),
    added: wanted.filter((w) => !haveSet.has(w.key)).map((w) => w.key),
    removed: have.filter((k) => !wantSet.has(k)),
    jumpsRepaired: broken,
  };
}

/**
 * Plans taking one owned chain away (uninstall): every jump to it deleted, the chain emptied and
 * deleted, in one transaction. Undefined when the kernel holds nothing of it.
 */
export function planRemoval<Hook extends string>(spec: ChainSpec<Hook>, kernel: KernelState<Hook>): string | undefined {
  const jumps = spec.hooks.flatMap((h) => kernel.jumps[h]);
  if (!kernel.exists && jumps.length === 0) return undefined;
  const lines = [`*${spec.table}`, ...jumps.map((j) => `-D ${j.slice(3)}`)];
  // Declared under --noflush it is emptied first: -X refuses a chain that still has rules.
  if (kernel.exists) lines.push(`:${spec.chain} - [0:0]`, `-X ${spec.chain}`);
  lines.push("COMMIT", "");
  return lines.join("\n");
}
