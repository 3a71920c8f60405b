// The mutation: a pod to lock gets the annotation, the lock's init container first, the root-certs volume,
// and in each app container the root-certs mounts and NET_RAW dropped. Pure: no I/O, no clock, so the
// chart's equality test and the server run exactly this.
import type { Container, Pod, Volume, VolumeMount } from "./pod.ts";
import { podName } from "./pod.ts";

/** What is injected, rendered by the chart from the same helpers as NOTES.txt's snippet (ConfigMap `<fullname>-injector`). */
export interface InjectionConfig {
  /** Opt-in annotation key podwatch reads; set to "true" on every locked pod. Default `initializer.kubernetes.io/tproxy`. */
  readonly annotation: string;
  /** Label that locks a namespace or a pod when its value is `enabled`. Default `tproxy.io/lock`. */
  readonly lockLabel: string;
  /** The lock's init container (named `tproxy`), inserted first. */
  readonly initContainer: Container;
  /** The root-certs volume (named `ca-certs`). */
  readonly volume: Volume;
  /** Where each app container mounts it. */
  readonly volumeMounts: readonly VolumeMount[];
}

export const LOCK_LABEL_VALUE = "enabled";

export type InjectResult = { readonly allowed: true; readonly pod: Pod } | { readonly allowed: false; readonly message: string };

/** Capabilities that, added to a container of a locked pod, would let it undo or bypass the lock (ALL includes both). */
const UNLOCKING_CAPABILITIES = ["NET_ADMIN", "NET_RAW", "ALL"];

/** Whether the pod carries the lock's init container (init container names cannot change once created). */
export function hasLockContainer(pod: Pod, config: InjectionConfig): boolean {
  return (pod.spec?.initContainers ?? []).some((c) => c.name === config.initContainer.name);
}

/** Why the pod is to be locked, or undefined when it is not. */
export function lockReason(pod: Pod, namespaceLabels: Readonly<Record<string, string>>, config: InjectionConfig): string | undefined {
  if (namespaceLabels[config.lockLabel] === LOCK_LABEL_VALUE) return `namespace label ${config.lockLabel}=${LOCK_LABEL_VALUE}`;
  if (pod.metadata?.labels?.[config.lockLabel] === LOCK_LABEL_VALUE) return `pod label ${config.lockLabel}=${LOCK_LABEL_VALUE}`;
  if (pod.metadata?.annotations?.[config.annotation] === "true") return `pod annotation ${config.annotation}="true"`;
  return undefined;
}

/**
 * The pod as it must be created: locked when its namespace or its own label asks for it (or it carries the
 * annotation already), unchanged otherwise. Refused when it cannot be locked, or when what it already holds
 * under the lock's names differs from the lock (a tampered init container or volume). Idempotent: a pod it
 * returned comes back unchanged (reinvocation after other webhooks).
 */
export function inject(original: Pod, namespaceLabels: Readonly<Record<string, string>>, config: InjectionConfig, lockedBecause?: string): InjectResult {
  const reason = lockedBecause ?? lockReason(original, namespaceLabels, config);
  if (reason === undefined) return { allowed: true, pod: original };
  const name = podName(original);
  const refuse = (why: string): InjectResult => ({ allowed: false, message: `tproxy: pod ${name} is to be locked (${reason}) but ${why}` });

  const annotated = original.metadata?.annotations?.[config.annotation];
  if (annotated !== undefined && annotated !== "true") {
    return refuse(`sets annotation ${config.annotation}=${JSON.stringify(annotated)}: a pod to lock cannot opt out; remove the annotation or set it to "true"`);
  }
  if (original.spec?.hostNetwork === true) {
    return refuse("has hostNetwork: true: the lock works in the pod's own network namespace and cannot lock the node's; run it outside locked namespaces, without the lock label");
  }

  const pod = structuredClone(original);
  pod.metadata ??= {};
  pod.metadata.annotations = { ...pod.metadata.annotations, [config.annotation]: "true" };
  pod.spec ??= {};

  // The init container, first: no other init container may run before the lock is in place.
  const initContainers = pod.spec.initContainers ?? [];
  const at = initContainers.findIndex((c) => c.name === config.initContainer.name);
  if (at >= 0) {
    const diff = differences(config.initContainer, initContainers[at]);
    if (diff.length > 0) return refuse(`its init container "${config.initContainer.name}" differs from tproxy's: ${diff.join("; ")}`);
    if (at > 0) initContainers.unshift(...initContainers.splice(at, 1));
  } else {
    initContainers.unshift(structuredClone(config.initContainer) as Container);
  }
  pod.spec.initContainers = initContainers;

  const volumes = pod.spec.volumes ?? [];
  const volume = volumes.find((v) => v.name === config.volume.name);
  if (volume !== undefined) {
    const diff = differences(config.volume, volume);
    if (diff.length > 0) return refuse(`its volume "${config.volume.name}" differs from tproxy's root certificates: ${diff.join("; ")}`);
  } else {
    volumes.push(structuredClone(config.volume) as Volume);
  }
  pod.spec.volumes = volumes;

  for (const c of otherContainers(pod, config)) {
    const why = unlocking(c.container);
    if (why !== undefined) return refuse(`its ${c.kind} "${c.container.name}" ${why}, which would undo the lock`);
  }
  // Ephemeral containers (kubectl debug) join the running pod: they cannot be changed here (the validating
  // webhook sees the update), so each must drop NET_RAW itself, as app containers are made to.
  for (const c of pod.spec.ephemeralContainers ?? []) {
    const drop = c.securityContext?.capabilities?.drop ?? [];
    if (!drop.includes("NET_RAW") && !drop.includes("ALL")) {
      return refuse(`its ephemeral container "${c.name}" keeps NET_RAW (raw sockets in the locked pod's network): drop it, e.g. kubectl debug --profile=restricted`);
    }
  }
  for (const container of appContainers(pod, config)) {
    const mounts = container.volumeMounts ?? [];
    for (const want of config.volumeMounts) {
      const have = mounts.find((m) => m.mountPath === want.mountPath);
      if (have === undefined) {
        mounts.push({ ...want });
        continue;
      }
      const diff = differences(want, have);
      if (diff.length > 0) return refuse(`its container "${container.name}" mounts something else at ${want.mountPath}, where the root certificates go: ${diff.join("; ")}`);
    }
    container.volumeMounts = mounts;
    // Keep whatever the container sets; only make sure NET_RAW is dropped (ALL drops it already).
    const sc = (container.securityContext ??= {});
    const caps = (sc.capabilities ??= {});
    const drop = caps.drop ?? [];
    if (!drop.includes("NET_RAW") && !drop.includes("ALL")) drop.push("NET_RAW");
    caps.drop = drop;
  }
  return { allowed: true, pod };
}

/** Containers the app runs alongside the lock: spec.containers and sidecars (init containers with restartPolicy Always). */
export function appContainers(pod: Pod, config: InjectionConfig): Container[] {
  const sidecars = (pod.spec?.initContainers ?? []).filter((c) => c.restartPolicy === "Always" && c.name !== config.initContainer.name);
  return [...(pod.spec?.containers ?? []), ...sidecars];
}

/** Every container but the lock's own, named by kind for messages. */
function otherContainers(pod: Pod, config: InjectionConfig): Array<{ kind: string; container: Container }> {
  return [
    ...(pod.spec?.initContainers ?? []).filter((c) => c.name !== config.initContainer.name).map((container) => ({ kind: "init container", container })),
    ...(pod.spec?.containers ?? []).map((container) => ({ kind: "container", container })),
    ...(pod.spec?.ephemeralContainers ?? []).map((container) => ({ kind: "ephemeral container", container })),
  ];
}

/** Why a container's security context would let it undo the lock, or undefined. */
function unlocking(c: Container): string | undefined {
  const sc = c.securityContext;
  if (sc?.privileged === true) return "is privileged";
  const added = (sc?.capabilities?.add ?? []).filter((cap) => UNLOCKING_CAPABILITIES.includes(cap.replace(/^CAP_/, "")));
  return added.length > 0 ? `adds capabilities ${added.join(", ")}` : undefined;
}

/**
 * Fields the API server fills in by defaulting before (and again after) mutating webhooks run: a pod the
 * injector patched comes back with them on reinvocation, and they do not make it differ from the config.
 */
const API_DEFAULTS: Readonly<Record<string, unknown>> = {
  terminationMessagePath: "/dev/termination-log",
  terminationMessagePolicy: "File",
  apiVersion: "v1", // env[].valueFrom.fieldRef.apiVersion
  defaultMode: 420, // configMap volumes
};

/**
 * Where `actual` differs from `expected`, as readable "path: what" lines; empty when equal. A field of
 * `actual` that `expected` lacks counts only when it is not an API default.
 */
export function differences(expected: unknown, actual: unknown, path = ""): string[] {
  const at = path === "" ? "(whole)" : path;
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual) || actual.length !== expected.length) return [`${at}: ${show(actual)} instead of ${show(expected)}`];
    return expected.flatMap((e, i) => differences(e, actual[i], `${path}[${i}]`));
  }
  if (isObject(expected)) {
    if (!isObject(actual)) return [`${at}: ${show(actual)} instead of ${show(expected)}`];
    const out: string[] = [];
    for (const [k, v] of Object.entries(expected)) out.push(...differences(v, actual[k], path === "" ? k : `${path}.${k}`));
    for (const [k, v] of Object.entries(actual)) {
      if (k in expected || API_DEFAULTS[k] === v) continue;
      out.push(`${path === "" ? k : `${path}.${k}`}: ${show(v)} added`);
    }
    return out;
  }
  return expected === actual ? [] : [`${at}: ${show(actual)} instead of ${show(expected)}`];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  if (v === undefined) return "missing";
  const text = JSON.stringify(v);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
