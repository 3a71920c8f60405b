// What podwatch's own stop means for the node's rules. A stop is either a restart of podwatch (a rolling
// update, a node drain, a crash): the rules stay for the next podwatch, the locked pods stay filtered;
// or the end of tproxy on the cluster (the DaemonSet deleted): the rules go, or they would match the
// recycled addresses of new, unlocked pods. Which one it is, only the API knows: the DaemonSet that runs
// this pod is gone (404) or being deleted (deletionTimestamp) on an uninstall, and there otherwise.
import { readFile } from "node:fs/promises";
import { AppsV1Api, CoreV1Api, type KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { isLocked, podKey } from "./desired.ts";

/** Namespace and name of a DaemonSet (flag `--daemonset namespace/name`). */
export interface DaemonSetRef {
  readonly namespace: string;
  readonly name: string;
}

export type DaemonSetState =
  | { readonly state: "present" }
  | { readonly state: "gone"; readonly why: string }
  /** 401 or 403: the token or the RBAC that let podwatch read it is gone, or never was. */
  | { readonly state: "refused"; readonly why: string }
  | { readonly state: "unknown"; readonly why: string };

/**
 * Asks the API about the DaemonSet. Any answer other than "it exists" or "it is gone" (API down, 403)
 * is `unknown`, which the caller treats as a restart: rules left behind are the lesser harm than locked
 * pods let out during a rolling update.
 */
export async function daemonSetState(kubeConfig: KubeConfig, ref: DaemonSetRef): Promise<DaemonSetState> {
  try {
    const ds = await kubeConfig.makeApiClient(AppsV1Api).readNamespacedDaemonSet({ name: ref.name, namespace: ref.namespace });
    if (ds.metadata?.deletionTimestamp) return { state: "gone", why: `daemonset ${ref.namespace}/${ref.name} is being deleted` };
    return { state: "present" };
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === 404) return { state: "gone", why: `daemonset ${ref.namespace}/${ref.name} not found` };
    if (code === 401 || code === 403) return { state: "refused", why: `reading daemonset ${ref.namespace}/${ref.name} refused (${code})` };
    return { state: "unknown", why: `reading daemonset ${ref.namespace}/${ref.name} failed: ${err instanceof Error ? err.message.split("\n")[0] : String(err)}` };
  }
}

/** `namespace/name` of every pod that is locked and not finished, in the given namespaces (empty: all). */
export async function lockedPods(kubeConfig: KubeConfig, opts: { annotation: string; initContainer: string; namespaces: readonly string[] }): Promise<string[]> {
  const api = kubeConfig.makeApiClient(CoreV1Api);
  const lists = opts.namespaces.length > 0 ? await Promise.all(opts.namespaces.map((namespace) => api.listNamespacedPod({ namespace }))) : [await api.listPodForAllNamespaces()];
  const pods: V1Pod[] = lists.flatMap((l) => l.items);
  return pods
    .filter((p) => p.status?.phase !== "Succeeded" && p.status?.phase !== "Failed" && isLocked(p, opts))
    .map(podKey)
    .sort();
}

/**
 * The node's `net.ipv4.tcp_migrate_req` (it covers IPv6 sockets too): "1", "0", or undefined when
 * unreadable. With 1, connections queued on a listener that closes move to another listener of its
 * SO_REUSEPORT group; with 0 the kernel resets them. A rolling update's old proxy closes its listeners
 * while the new one already shares the ports: only with 1 does no connection get reset then. podwatch
 * cannot set it (a container's /proc/sys is read-only, and Kubernetes refuses net.* sysctls for pods on
 * the host network), so it reports it.
 */
export async function tcpMigrateReq(path = "/proc/sys/net/ipv4/tcp_migrate_req"): Promise<string | undefined> {
  return readFile(path, "utf8").then((t) => t.trim(), () => undefined);
}
