// The pod's own addresses, read from its interfaces when the lock is installed: every packet that leaves
// (loopback aside) must carry one of them as its source, so a raw socket cannot forge another source
// that the node's per-pod rules (`-s <pod IP>`) would not recognise.
import { networkInterfaces } from "node:os";
import type { Family } from "./config.ts";

export interface OwnAddress {
  readonly ip: string;
  readonly family: Family;
}

export type Interfaces = () => NodeJS.Dict<readonly { address: string; family: string; internal: boolean }[]>;

/** Every address of every interface but loopback, both families (IPv6 link-local included), without duplicates. */
export function ownAddresses(interfaces: Interfaces = networkInterfaces): OwnAddress[] {
  const out: OwnAddress[] = [];
  for (const [name, infos] of Object.entries(interfaces())) {
    if (name === "lo") continue;
    for (const a of infos ?? []) {
      if (a.internal) continue;
      const family: Family = a.family === "IPv6" ? "ipv6" : "ipv4";
      if (!out.some((o) => o.ip === a.address)) out.push({ ip: a.address, family });
    }
  }
  return out;
}
