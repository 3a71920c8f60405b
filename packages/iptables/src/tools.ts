// Which programs to run: the nft or the legacy backend's suffixed binaries (iptables-nft-save,
// ip6tables-legacy-restore, …), or the unsuffixed ones on images that ship only those, found on PATH.
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, join } from "node:path";

export type Family = "ipv4" | "ipv6";
export const FAMILIES: readonly Family[] = ["ipv4", "ipv6"];
/** The two kernels' firewalls iptables can drive. */
export type Backend = "nft" | "legacy";
/** A backend, or `default`: the unsuffixed programs, whichever backend they are built for. */
export type Variant = Backend | "default";

/** The save/restore pair for one family, as paths found on PATH. */
export interface FamilyTools {
  readonly family: Family;
  readonly save: string;
  readonly restore: string;
}

/** One variant's programs, one pair per family. */
export interface Tools {
  readonly backend: Variant;
  readonly ipv4: FamilyTools;
  readonly ipv6: FamilyTools;
}

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

/** The program names of a variant: `iptables-nft-save`, `ip6tables-legacy-restore`, `iptables-save`, … */
export function programNames(variant: Variant): Record<Family, { save: string; restore: string }> {
  const mid = variant === "default" ? "" : `-${variant}`;
  return {
    ipv4: { save: `iptables${mid}-save`, restore: `iptables${mid}-restore` },
    ipv6: { save: `ip6tables${mid}-save`, restore: `ip6tables${mid}-restore` },
  };
}

/** Resolves every program of a variant on PATH, or returns the name of the first one missing. */
export function locate(variant: Variant, path: string | undefined = process.env["PATH"]): Tools | string {
  const n = programNames(variant);
  const found: Partial<Record<Family, FamilyTools>> = {};
  for (const family of FAMILIES) {
    const save = which(n[family].save, path);
    if (save === undefined) return n[family].save;
    const restore = which(n[family].restore, path);
    if (restore === undefined) return n[family].restore;
    found[family] = { family, save, restore };
  }
  return { backend: variant, ipv4: found.ipv4!, ipv6: found.ipv6! };
}
