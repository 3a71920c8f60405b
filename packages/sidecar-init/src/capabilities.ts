// Capability check before touching iptables, so a missing NET_ADMIN is reported as exactly that.
import { readFileSync } from "node:fs";
import { CapabilityError } from "./errors.ts";

export const CAP_NET_ADMIN = 12;
export const CAP_NET_RAW = 13;

/** The effective capability set of this process, from /proc/self/status. */
export function effectiveCapabilities(status: string = readFileSync("/proc/self/status", "utf8")): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/im.exec(status);
  if (!m) throw new CapabilityError("cannot read the effective capabilities from /proc/self/status");
  return BigInt(`0x${m[1]}`);
}

const has = (caps: bigint, bit: number): boolean => ((caps >> BigInt(bit)) & 1n) === 1n;

/** Throws unless the process may change the network namespace's firewall with the given backend. */
export function requireCapabilities(backend: "nft" | "legacy" | "default", caps: bigint = effectiveCapabilities()): void {
  if (!has(caps, CAP_NET_ADMIN)) {
    throw new CapabilityError(
      "missing capability NET_ADMIN: iptables cannot change the pod's rules without it; add it to the init container's securityContext.capabilities.add (privileged is not needed)",
    );
  }
  if (backend === "legacy" && !has(caps, CAP_NET_RAW)) {
    throw new CapabilityError(
      "missing capability NET_RAW: the legacy iptables backend opens a raw socket; add NET_RAW to the init container's securityContext.capabilities.add, or use --iptables-backend nft",
    );
  }
}
