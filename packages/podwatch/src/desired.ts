// Desired state: which pod IPs of this node must be redirected to the proxy. Pure: pods in, rules out.
import { isIPv4, isIPv6 } from "node:net";
import type { V1Pod } from "@kubernetes/client-node";

export type Family = "ipv4" | "ipv6";

/** One pod IP whose tcp/80 and tcp/443 traffic goes to the proxy. */
export interface Redirect {
  /** Canonical address text, as `iptables-save` prints it (IPv6 compressed, lower case). */
  readonly ip: string;
  readonly family: Family;
  /** `namespace/name` of the pod, used as the rule's comment. */
  readonly pod: string;
}

export interface SelectOptions {
  /** Annotation key whose value must be exactly `"true"`. */
  readonly annotation: string;
  /**
   * Name of the lock's init container (the chart's snippet names it `tproxy`). A pod whose
   * `spec.initContainers` has a container of this name is locked whatever its annotations say: the
   * list cannot change for the pod's lifetime, while its annotations can. Default: none (annotation only).
   */
  readonly initContainer?: string;
  /** When set, pods bound to another node are ignored (the watch's field selector already ensures it). */
  readonly nodeName?: string;
}

const TERMINAL_PHASES = new Set(["Succeeded", "Failed"]);

/** `namespace/name` of a pod. */
export function podKey(pod: V1Pod): string {
  return `${pod.metadata?.namespace ?? ""}/${pod.metadata?.name ?? ""}`;
}

/** The address in the form `iptables-save` prints it, or undefined when it is not an IP address. */
export function canonicalIp(text: string): { ip: string; family: Family } | undefined {
  if (isIPv4(text)) return { ip: text, family: "ipv4" };
  if (isIPv6(text) && !text.includes("%")) {
    // The WHATWG URL parser serialises IPv6 per RFC 5952: compressed, lower case, as iptables does.
    return { ip: new URL(`http://[${text}]/`).hostname.slice(1, -1), family: "ipv6" };
  }
  return undefined;
}

/** All IPs of a pod: `status.podIPs` (dual stack), else `status.podIP`. */
export function podIps(pod: V1Pod): string[] {
  const listed = (pod.status?.podIPs ?? []).map((p) => p.ip).filter((ip): ip is string => typeof ip === "string" && ip !== "");
  if (listed.length > 0) return listed;
  const single = pod.status?.podIP;
  return single ? [single] : [];
}

function createdAt(pod: V1Pod): number {
  const t = pod.metadata?.creationTimestamp as Date | string | undefined;
  if (t === undefined) return 0;
  const ms = (t instanceof Date ? t : new Date(t)).getTime();
  return Number.isNaN(ms) ? 0 : ms;
}

/**
 * True when the pod is locked: it carries `annotation: "true"`, or its spec has the lock's init
 * container (matched by name only, not by image: images are mirrored and renamed, and a pod wrongly
 * counted as locked only has its web traffic filtered, while one wrongly counted as unlocked escapes).
 */
export function isLocked(pod: V1Pod, opts: Pick<SelectOptions, "annotation" | "initContainer">): boolean {
  if (pod.metadata?.annotations?.[opts.annotation] === "true") return true;
  const name = opts.initContainer;
  return name !== undefined && (pod.spec?.initContainers ?? []).some((c) => c.name === name);
}

/**
 * Computes the redirects this node needs: locked pods (see `isLocked`) that have an IP, are not in a
 * terminal phase and do not use the host network. A Pending pod with an IP counts (its init
 * containers run then and wait for the redirect); so does a terminating one (`deletionTimestamp` set):
 * its containers run, and send, until they stop, and the rule goes when the pod is deleted. When
 * several live pods claim one IP (a stale cache entry next to the pod that reuses the address), a
 * locked claim wins (fail closed): the address keeps its rule until no locked pod claims it; among
 * locked claims the newest names the rule. The result is sorted, so equal inputs render equal rules.
 */
export function selectRedirects(pods: Iterable<V1Pod>, opts: SelectOptions): Redirect[] {
  const owners = new Map<string, { pod: V1Pod; family: Family }>();
  for (const pod of pods) {
    if (opts.nodeName !== undefined && pod.spec?.nodeName !== opts.nodeName) continue;
    if (pod.spec?.hostNetwork === true) continue;
    if (TERMINAL_PHASES.has(pod.status?.phase ?? "")) continue;
    if (!isLocked(pod, opts)) continue;
    for (const raw of podIps(pod)) {
      const addr = canonicalIp(raw);
      if (!addr) continue;
      const current = owners.get(addr.ip);
      if (!current || newer(pod, current.pod)) owners.set(addr.ip, { pod, family: addr.family });
    }
  }
  const out: Redirect[] = [];
  for (const [ip, { pod, family }] of owners) out.push({ ip, family, pod: podKey(pod) });
  return out.sort((a, b) => (a.pod < b.pod ? -1 : a.pod > b.pod ? 1 : a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));
}

function newer(a: V1Pod, b: V1Pod): boolean {
  const ta = createdAt(a);
  const tb = createdAt(b);
  if (ta !== tb) return ta > tb;
  return Number(a.metadata?.resourceVersion ?? 0) > Number(b.metadata?.resourceVersion ?? 0);
}
