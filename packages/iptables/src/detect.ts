// Which backend the node (or the pod's namespace) already uses, decided as Kubernetes' iptables
// wrappers decide it for kube-proxy's image (kubernetes-sigs/iptables-wrappers), so tproxy's rules land
// in the same firewall as kube-proxy's:
//  1. the kubelet (1.17 and later) creates KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY in the mangle
//     table of the backend it uses: nft's is read first (`iptables-nft-save -t mangle`, IPv4 then IPv6);
//  2. then legacy's, from a full `iptables-legacy-save` (with `-t mangle` the legacy kernel module would
//     create that table if it did not exist yet, changing the node just by looking);
//  3. else whichever holds more rules (`-` lines of full saves, both families): legacy only if it holds
//     more, nft otherwise (nft is the default of current distributions).
// A save that fails counts as empty, as in the wrappers: the detection itself never fails.
import { save, type Runner } from "./exec.ts";
import { locate, type Backend, type Tools, type Variant } from "./tools.ts";

export const KUBELET_CHAINS = ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"] as const;
const KUBELET_CHAIN = /^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)\b/m;

/** A backend and why it was chosen, in words for the log. */
export interface Detection {
  readonly backend: Backend;
  readonly reason: string;
}

/** Both backends' programs, as `locate` found them. */
export interface BothTools {
  readonly nft: Tools;
  readonly legacy: Tools;
}

async function saved(t: Tools, run: Runner, table?: string): Promise<string[]> {
  const out: string[] = [];
  for (const f of [t.ipv4, t.ipv6]) out.push(await save(f, run, table).catch(() => ""));
  return out;
}

function kubeletChain(outputs: readonly string[]): string | undefined {
  for (const o of outputs) {
    const m = KUBELET_CHAIN.exec(o);
    if (m) return m[1];
  }
  return undefined;
}

/** Rules in save outputs: lines starting with `-` (`-A CHAIN …`). */
export function countRules(outputs: readonly string[]): number {
  return outputs.reduce((n, o) => n + o.split("\n").filter((l) => l.startsWith("-")).length, 0);
}

/** Decides between two installed backends by what their tables hold. */
export async function detectBackend(tools: BothTools, run: Runner): Promise<Detection> {
  const nftMangle = kubeletChain(await saved(tools.nft, run, "mangle"));
  if (nftMangle) return { backend: "nft", reason: `${nftMangle} in the nft mangle table` };
  const legacyAll = await saved(tools.legacy, run);
  const legacyHint = kubeletChain(legacyAll);
  if (legacyHint) return { backend: "legacy", reason: `${legacyHint} in the legacy mangle table` };
  const legacyRules = countRules(legacyAll);
  const nftRules = countRules(await saved(tools.nft, run));
  if (legacyRules > nftRules) return { backend: "legacy", reason: `no kubelet chain in either backend; legacy holds more rules (${legacyRules} against nft's ${nftRules})` };
  return { backend: "nft", reason: `no kubelet chain in either backend; legacy does not hold more rules (${legacyRules} against nft's ${nftRules}), and nft is the default` };
}

/** What a caller asks for: a backend by name, or `auto` to detect it. */
export type BackendChoice = Backend | "auto";
export const BACKEND_CHOICES: readonly BackendChoice[] = ["auto", "nft", "legacy"];

/** The programs chosen, and why (for the log). */
export interface Chosen {
  readonly tools: Tools;
  readonly reason: string;
}

/** Names the first program a variant lacks (thrown by `chooseTools`). */
export class ToolsMissing extends Error {
  readonly program: string;
  readonly variant: Variant;
  constructor(variant: Variant, program: string, path: string | undefined) {
    super(`iptables binary not found: ${program} is not on PATH (${path ?? ""})`);
    this.name = new.target.name;
    this.variant = variant;
    this.program = program;
  }
}

/**
 * Picks the programs. `nft` and `legacy` demand their suffixed binaries. `auto` detects the backend
 * when both are installed, takes the one installed otherwise, and falls back to the unsuffixed
 * binaries on images that ship only those.
 */
export async function chooseTools(choice: BackendChoice, run: Runner, path: string | undefined = process.env["PATH"]): Promise<Chosen> {
  if (choice !== "auto") {
    const t = locate(choice, path);
    if (typeof t === "string") throw new ToolsMissing(choice, t, path);
    return { tools: t, reason: "as configured" };
  }
  const nft = locate("nft", path);
  const legacy = locate("legacy", path);
  if (typeof nft !== "string" && typeof legacy !== "string") {
    const d = await detectBackend({ nft, legacy }, run);
    return { tools: d.backend === "nft" ? nft : legacy, reason: d.reason };
  }
  if (typeof nft !== "string") return { tools: nft, reason: `only nft is installed (${legacy} is not on PATH)` };
  if (typeof legacy !== "string") return { tools: legacy, reason: `only legacy is installed (${nft} is not on PATH)` };
  const plain = locate("default", path);
  if (typeof plain === "string") throw new ToolsMissing("default", plain, path);
  return { tools: plain, reason: "neither iptables-nft nor iptables-legacy is installed: the unsuffixed programs, whichever backend they drive" };
}

/** The other backend's programs, if installed: what to fall back to when `tools` cannot apply. */
export function otherTools(tools: Tools, path: string | undefined = process.env["PATH"]): Tools | undefined {
  if (tools.backend === "default") return undefined;
  const t = locate(tools.backend === "nft" ? "legacy" : "nft", path);
  return typeof t === "string" ? undefined : t;
}
