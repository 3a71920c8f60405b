// Which pod is asking: a snapshot of this node's pods by IP (namespace, name, labels, annotations,
// service account, node), written to a file the proxy container reads from a volume both containers
// share. The proxy then knows the pod behind a connection's source address without a watch of its own
// (it holds no API token at all).
//
// The file is only as fresh as this podwatch's view, so it is written with the time it was made
// (`generatedAt`, wall clock: both containers read the node's clock), rewritten every `refreshMs` while
// every informer is watching, and deleted when podwatch stops. A proxy treats a file older than its
// limit, or none, as "no pod known" (fail closed): a filter that relies on identity then denies, rather
// than trusting a map that may name the deleted pod whose IP another pod now has.
import { randomBytes } from "node:crypto";
import { rename, rm, writeFile } from "node:fs/promises";
import type { V1Pod } from "@kubernetes/client-node";
import { POD_IDENTITY_FORMAT, POD_IDENTITY_REFRESH_MS, type PodIdentityFile } from "@tproxy/iptables";
import type { Logger } from "pino";
import type { Clock, Timer } from "./clock.ts";
import { canonicalIp, podIps, podKey } from "./desired.ts";
import type { PodIdentity } from "@tproxy/tproxy/filter";


/** Annotations left out of the file: a copy of the whole object, often the largest part of it. */
const DROPPED_ANNOTATIONS = new Set(["kubectl.kubernetes.io/last-applied-configuration"]);

/** What a filter sees as `flow.client.pod`: the filter contract's own type, so the two cannot drift. */
export type { PodIdentity };

/** The file's JSON, as the node-pod contract defines it. */
export type IdentitySnapshot = PodIdentityFile<PodIdentity>;

const TERMINAL_PHASES = new Set(["Succeeded", "Failed"]);

/**
 * The identities of the pods of `nodeName` that have their own address: not host-network ones (their
 * address is the node's), not terminal ones (their address is free for the next pod), Pending with an
 * IP, Running and terminating ones. An address two cached pods claim (a deleted pod's stale entry beside
 * the pod that got its address) is left out: which one asks cannot be told, so neither is named.
 */
export function identitySnapshot(pods: Iterable<V1Pod>, nodeName: string, now: number): IdentitySnapshot {
  const byIp = new Map<string, PodIdentity | null>();
  for (const pod of pods) {
    if (pod.spec?.nodeName !== nodeName) continue;
    if (pod.spec?.hostNetwork === true) continue;
    if (TERMINAL_PHASES.has(pod.status?.phase ?? "")) continue;
    const identity = identityOf(pod, nodeName);
    for (const raw of podIps(pod)) {
      const addr = canonicalIp(raw);
      if (!addr) continue;
      const had = byIp.get(addr.ip);
      byIp.set(addr.ip, had === undefined || (had !== null && podKey(pod) === `${had.namespace}/${had.name}`) ? identity : null);
    }
  }
  const out: Record<string, PodIdentity> = {};
  for (const ip of [...byIp.keys()].sort()) {
    const identity = byIp.get(ip);
    if (identity) out[ip] = identity;
  }
  return { version: POD_IDENTITY_FORMAT, node: nodeName, generatedAt: now, pods: out };
}

function identityOf(pod: V1Pod, nodeName: string): PodIdentity {
  const annotations: Record<string, string> = {};
  for (const [k, v] of Object.entries(pod.metadata?.annotations ?? {})) if (!DROPPED_ANNOTATIONS.has(k)) annotations[k] = v;
  return {
    namespace: pod.metadata?.namespace ?? "",
    name: pod.metadata?.name ?? "",
    uid: pod.metadata?.uid ?? "",
    labels: { ...(pod.metadata?.labels ?? {}) },
    annotations,
    // The API defaults it to "default"; an object without it (a test's) means the same.
    serviceAccount: pod.spec?.serviceAccountName ?? "default",
    node: nodeName,
  };
}

export interface IdentityPublisherOptions {
  readonly path: string;
  readonly nodeName: string;
  readonly pods: () => Iterable<V1Pod>;
  /** True while the cache follows the API (every informer listed and watching); no refresh otherwise. */
  readonly watching: () => boolean;
  readonly clock: Clock;
  readonly log: Logger;
  /** Changes within this window go out in one write; default 150 ms. */
  readonly coalesceMs?: number;
  /** The file is rewritten this often while watching, so that readers can tell it is alive; default 5 s. */
  readonly refreshMs?: number;
  /** Wall-clock time for `generatedAt`; default Date.now. */
  readonly wallClock?: () => number;
}

/** Writes the identity file on every change (coalesced) and every `refreshMs` while the watch is healthy. */
export class IdentityPublisher {
  readonly #o: IdentityPublisherOptions;
  #pending: Timer | undefined;
  #refresh: Timer | undefined;
  #writing: Promise<void> = Promise.resolve();
  #stopped = false;
  #failing = false;

  constructor(opts: IdentityPublisherOptions) {
    this.#o = opts;
  }

  /** The cache changed: write the file soon (once for every change within the coalescing window). */
  changed(): void {
    if (this.#stopped || this.#pending) return;
    this.#pending = this.#o.clock.after(this.#o.coalesceMs ?? 150, () => {
      this.#pending = undefined;
      this.#publish();
    });
  }

  #publish(): void {
    if (this.#stopped) return;
    this.#refresh?.cancel();
    this.#refresh = this.#o.clock.after(this.#o.refreshMs ?? POD_IDENTITY_REFRESH_MS, () => {
      this.#refresh = undefined;
      this.#publish();
    });
    // A cache that no longer follows the API is not written: the file ages past the proxy's limit and
    // every address reads as unknown there, instead of naming pods that may be gone. The refresh above
    // looks again, for when the watch is back.
    if (!this.#o.watching()) return;
    const snapshot = identitySnapshot(this.#o.pods(), this.#o.nodeName, (this.#o.wallClock ?? Date.now)());
    this.#writing = this.#writing.then(() => this.#write(snapshot));
  }

  // Temporary file and rename in the same folder: a reader sees the old file or the new one, never half.
  async #write(snapshot: IdentitySnapshot): Promise<void> {
    if (this.#stopped) return;
    const tmp = `${this.#o.path}.${randomBytes(4).toString("hex")}.tmp`;
    try {
      await writeFile(tmp, `${JSON.stringify(snapshot)}\n`, { mode: 0o644 });
      await rename(tmp, this.#o.path);
      if (this.#failing) this.#o.log.info({ path: this.#o.path }, "pod identity file written again");
      this.#failing = false;
      this.#o.log.debug({ path: this.#o.path, addresses: Object.keys(snapshot.pods).length }, "pod identity file written");
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => undefined);
      if (!this.#failing) this.#o.log.error({ path: this.#o.path, err: (err as Error).message }, "cannot write the pod identity file; the proxy will see every address as unknown once it ages");
      this.#failing = true;
    }
  }

  /** Resolves once the writes started so far are done. */
  async idle(): Promise<void> {
    await this.#writing;
  }

  /** Stops writing and deletes the file: nothing follows the pods any more, so it must not be trusted. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#pending?.cancel();
    this.#refresh?.cancel();
    await this.#writing;
    await rm(this.#o.path, { force: true }).catch((err: unknown) => this.#o.log.warn({ path: this.#o.path, err: (err as Error).message }, "cannot delete the pod identity file"));
  }
}
