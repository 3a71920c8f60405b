// Namespace labels: the AdmissionReview does not carry them, so they are read from the API (GET per
// namespace, kept a few seconds). An interface, so tests give labels directly.
import { CoreV1Api, type KubeConfig } from "@kubernetes/client-node";

export interface NamespaceLabels {
  /** The labels of namespace `name`; rejects when they cannot be read (the review is then refused: fail closed). */
  labels(name: string): Promise<Readonly<Record<string, string>>>;
}

/** Fixed labels by namespace name, for tests and for a cluster-less run. */
export class StaticNamespaceLabels implements NamespaceLabels {
  private readonly byName: ReadonlyMap<string, Readonly<Record<string, string>>>;
  constructor(byName: Record<string, Record<string, string>>) {
    this.byName = new Map(Object.entries(byName));
  }
  labels(name: string): Promise<Readonly<Record<string, string>>> {
    return Promise.resolve(this.byName.get(name) ?? {});
  }
}

/**
 * Labels read with `GET /api/v1/namespaces/<name>`, cached for `ttlMs` (a namespace labelled a moment ago
 * locks its pods within that time; the webhook's namespaceSelector sees the label at once). Concurrent
 * reviews of one namespace share one request, which gives up after `timeoutMs`: the API server waits for
 * the webhook `timeoutSeconds` (5 by default), and a clear refusal beats its timeout.
 */
export class ApiNamespaceLabels implements NamespaceLabels {
  private readonly api: CoreV1Api;
  private readonly cache = new Map<string, { at: number; labels: Promise<Readonly<Record<string, string>>> }>();
  private readonly ttlMs: number;
  private readonly now: () => number;
  private readonly timeoutMs: number;
  constructor(kubeConfig: KubeConfig, opts: { ttlMs?: number; timeoutMs?: number; now?: () => number } = {}) {
    this.api = kubeConfig.makeApiClient(CoreV1Api);
    this.ttlMs = opts.ttlMs ?? 5000;
    this.timeoutMs = opts.timeoutMs ?? 3000;
    this.now = opts.now ?? Date.now;
  }
  labels(name: string): Promise<Readonly<Record<string, string>>> {
    const hit = this.cache.get(name);
    if (hit !== undefined && this.now() - hit.at < this.ttlMs) return hit.labels;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer from the API within ${this.timeoutMs} ms`)), this.timeoutMs);
    });
    const labels = Promise.race([this.api.readNamespace({ name }), timeout]).finally(() => clearTimeout(timer)).then(
      (ns) => Object.freeze({ ...(ns.metadata?.labels ?? {}) }),
      (err: unknown) => {
        this.cache.delete(name); // a failure is not kept: the next review asks again
        throw new Error(`cannot read the labels of namespace ${name}: ${(err as Error).message}`, { cause: err });
      },
    );
    this.cache.set(name, { at: this.now(), labels });
    if (this.cache.size > 1000) this.cache.delete(this.cache.keys().next().value!);
    return labels;
  }
}
