// Pods of this node, from informers of `@kubernetes/client-node` (list, then watch from the list's
// resourceVersion). The client re-lists by itself after 410 Gone and reconnects after timeouts; after
// any other error the informer stops, and this class restarts it with exponential backoff.
import { CoreV1Api, ListWatch, Watch, type KubeConfig, type V1Pod, type V1PodList } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { Backoff, type Clock } from "./clock.ts";
import type { Metrics } from "./metrics.ts";

export interface PodWatcherOptions {
  readonly kubeConfig: KubeConfig;
  readonly nodeName: string;
  /** Namespaces to watch; empty means all. */
  readonly namespaces: readonly string[];
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics?: Metrics;
  /** Called on every change of the cache, and once every informer has its initial list. */
  readonly onChange: (reason: string) => void;
  /** Called once, when every informer has listed at least once. */
  readonly onSynced: () => void;
  /** Restart delays; default 1 s doubling to 30 s. */
  readonly restartInitialMs?: number;
  readonly restartMaxMs?: number;
}

interface Slot {
  readonly scope: string;
  readonly informer: ListWatch<V1Pod>;
  readonly backoff: Backoff;
  listed: boolean;
  restarting: boolean;
}

export class PodWatcher {
  readonly #o: PodWatcherOptions;
  readonly #slots: Slot[] = [];
  #stopped = false;
  #synced = false;

  constructor(opts: PodWatcherOptions) {
    this.#o = opts;
    const api = opts.kubeConfig.makeApiClient(CoreV1Api);
    const watch = new Watch(opts.kubeConfig);
    const fieldSelector = `spec.nodeName=${opts.nodeName}`;
    const scopes = opts.namespaces.length > 0 ? opts.namespaces : [undefined];
    for (const namespace of scopes) {
      const path = namespace === undefined ? "/api/v1/pods" : `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`;
      const scope = namespace ?? "*";
      const list = (): Promise<V1PodList> =>
        namespace === undefined ? api.listPodForAllNamespaces({ fieldSelector }) : api.listNamespacedPod({ namespace, fieldSelector });
      let slot: Slot | undefined;
      const listFn = async (): Promise<V1PodList> => {
        const result = await list();
        // The informer fills its cache right after this promise settles; report once that is done.
        setImmediate(() => slot && this.#listed(slot, result.items.length));
        return result;
      };
      const informer = new ListWatch<V1Pod>(path, watch, listFn, false, undefined, fieldSelector);
      slot = { scope, informer, backoff: new Backoff(opts.restartInitialMs ?? 1000, opts.restartMaxMs ?? 30_000), listed: false, restarting: false };
      const s = slot;
      const changed = (verb: string) => (pod: V1Pod) => {
        s.backoff.reset();
        opts.log.debug({ verb, pod: `${pod.metadata?.namespace}/${pod.metadata?.name}`, ip: pod.status?.podIP }, "pod event");
        if (s.listed) opts.onChange(`pod ${verb}`);
      };
      informer.on("add", changed("add"));
      informer.on("update", changed("update"));
      informer.on("delete", changed("delete"));
      informer.on("error", (err: unknown) => this.#failed(s, err));
      this.#slots.push(slot);
    }
  }

  /** Starts every informer; returns at once (the initial list arrives through `onSynced`). */
  start(): void {
    for (const slot of this.#slots) this.#run(slot);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all(this.#slots.map((s) => s.informer.stop()));
  }

  /** True once every informer has listed at least once (it stays true: the cache is kept on errors). */
  get synced(): boolean {
    return this.#synced;
  }

  /** True while the cache follows the API: every informer has listed and none is waiting to restart. */
  get watching(): boolean {
    return this.#synced && !this.#stopped && this.#slots.every((s) => !s.restarting);
  }

  /** Every cached pod of this node. */
  pods(): V1Pod[] {
    return this.#slots.flatMap((s) => [...s.informer.list()]);
  }

  #run(slot: Slot): void {
    slot.informer.start().catch((err: unknown) => this.#failed(slot, err));
  }

  #listed(slot: Slot, items: number): void {
    slot.backoff.reset();
    const first = !slot.listed;
    slot.listed = true;
    this.#o.log.info({ scope: slot.scope, pods: items }, first ? "initial pod list received" : "pod list received");
    if (!this.#synced && this.#slots.every((s) => s.listed)) {
      this.#synced = true;
      this.#o.metrics?.synced.set(1);
      this.#o.onSynced();
    }
    if (this.#synced) this.#o.onChange("list");
  }

  #failed(slot: Slot, err: unknown): void {
    if (this.#stopped || slot.restarting) return;
    slot.restarting = true;
    const ms = slot.backoff.next();
    this.#o.metrics?.watchRestarts.inc();
    this.#o.log.warn({ scope: slot.scope, err: describe(err), retryInMs: ms }, "pod watch failed, restarting");
    this.#o.clock.after(ms, () => {
      slot.restarting = false;
      if (!this.#stopped) this.#run(slot);
    });
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : "";
    return `${err.message}${cause}${typeof code === "string" || typeof code === "number" ? ` (${code})` : ""}`;
  }
  return String(err);
}
