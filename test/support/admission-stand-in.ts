// A STAND-IN for kube-apiserver's admission of pods through webhooks, for tests and the demo only: what
// the API server does between "kubectl apply" and storing a pod, with the webhook configurations the chart
// renders (MutatingWebhookConfiguration, ValidatingWebhookConfiguration).
//
// As kube-apiserver does it (admission.k8s.io/v1):
//  - a webhook is called when its rules name pods and the operation, its namespaceSelector matches the
//    namespace's labels (which always carry kubernetes.io/metadata.name) and its objectSelector the pod's;
//  - the request is an AdmissionReview with a new uid, the namespace, the operation and the object; a pod
//    made from a template (generateName) has no name yet;
//  - the call is HTTPS to the webhook's Service, the server's certificate verified against the webhook's
//    caBundle for the name <service>.<namespace>.svc, within timeoutSeconds;
//  - a mutating webhook's JSONPatch is applied (RFC 6902, with fast-json-patch); mutating webhooks run in
//    order, and once more each (reinvocationPolicy IfNeeded) when a later one changed the object;
//  - then every validating webhook; any refusal refuses the pod with the webhook's message;
//  - a call that fails (refused connection, bad certificate, timeout, an answer that is not a review)
//    refuses the pod under failurePolicy Fail and is skipped under Ignore.
// Not done: rules other than pods, matchConditions, side-effect classes, dry run, audit annotations.
import { randomUUID } from "node:crypto";
import https from "node:https";
import fastJsonPatch from "fast-json-patch";

/** The fields of a webhook entry of either configuration kind that admission reads. */
export interface WebhookEntry {
  name: string;
  clientConfig: { caBundle?: string; service?: { namespace: string; name: string; path?: string; port?: number }; url?: string };
  rules?: Array<{ operations?: string[]; apiGroups?: string[]; apiVersions?: string[]; resources?: string[] }>;
  failurePolicy?: "Fail" | "Ignore";
  namespaceSelector?: LabelSelector;
  objectSelector?: LabelSelector;
  timeoutSeconds?: number;
  reinvocationPolicy?: "Never" | "IfNeeded";
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{ key: string; operator: "In" | "NotIn" | "Exists" | "DoesNotExist"; values?: string[] }>;
}

export interface WebhookConfiguration {
  kind: "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration";
  metadata: { name: string };
  webhooks: WebhookEntry[];
}

/** A pod as a client sends it: metadata (name or generateName) and spec. */
export interface PodObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name?: string; generateName?: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string>; [k: string]: unknown };
  spec: Record<string, unknown>;
  [k: string]: unknown;
}

/** The answer the API server gives a client whose pod a webhook refused (kubectl prints its message). */
export class AdmissionDenied extends Error {
  readonly webhook: string;
  constructor(webhook: string, message: string) {
    super(`admission webhook "${webhook}" denied the request: ${message}`);
    this.webhook = webhook;
    this.name = "AdmissionDenied";
  }
}

/** Where a Service's webhook is reached from this machine: the stand-in has no cluster network. */
export type ServiceResolver = (service: { namespace: string; name: string; port: number }) => { host: string; port: number };

export function selectorMatches(selector: LabelSelector | undefined, labels: Record<string, string>): boolean {
  if (selector === undefined) return true;
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const value = labels[e.key];
    switch (e.operator) {
      case "In": if (!has || !(e.values ?? []).includes(value!)) return false; break;
      case "NotIn": if (has && (e.values ?? []).includes(value!)) return false; break;
      case "Exists": if (!has) return false; break;
      case "DoesNotExist": if (has) return false; break;
      default: throw new Error(`stand-in: selector operator ${String((e as { operator: unknown }).operator)} is not one of In, NotIn, Exists, DoesNotExist`);
    }
  }
  return true;
}

function ruleMatches(entry: WebhookEntry, operation: string): boolean {
  return (entry.rules ?? []).some((r) =>
    (r.operations ?? []).some((o) => o === "*" || o === operation) &&
    (r.apiGroups ?? []).some((g) => g === "*" || g === "") &&
    (r.apiVersions ?? []).some((v) => v === "*" || v === "v1") &&
    (r.resources ?? []).some((res) => res === "*" || res === "pods"));
}

export class AdmissionStandIn {
  readonly #configurations: WebhookConfiguration[] = [];
  readonly #resolve: ServiceResolver;
  /** Every review sent, for tests: webhook name and the AdmissionReview. */
  readonly calls: Array<{ webhook: string; review: { request: { uid: string; namespace: string; object: PodObject } } }> = [];

  constructor(resolve: ServiceResolver) {
    this.#resolve = resolve;
  }

  /** Adds (or replaces, by kind and name) a webhook configuration, as `kubectl apply` of the chart's does. */
  apply(config: WebhookConfiguration): void {
    const i = this.#configurations.findIndex((c) => c.kind === config.kind && c.metadata.name === config.metadata.name);
    if (i >= 0) this.#configurations.splice(i, 1, config);
    else this.#configurations.push(config);
  }

  remove(kind: WebhookConfiguration["kind"], name: string): void {
    const i = this.#configurations.findIndex((c) => c.kind === kind && c.metadata.name === name);
    if (i >= 0) this.#configurations.splice(i, 1);
  }

  /** Runs a pod CREATE through admission; resolves to the pod to store, rejects with AdmissionDenied. */
  async admitCreate(namespace: string, namespaceLabels: Record<string, string>, pod: PodObject): Promise<PodObject> {
    let object: PodObject = structuredClone({ apiVersion: "v1", kind: "Pod", ...pod, metadata: { ...pod.metadata, namespace } });
    const nsLabels = { ...namespaceLabels, "kubernetes.io/metadata.name": namespace };
    const applies = (w: WebhookEntry, o: PodObject) => ruleMatches(w, "CREATE") && selectorMatches(w.namespaceSelector, nsLabels) && selectorMatches(w.objectSelector, o.metadata.labels ?? {});
    const mutating = this.#configurations.filter((c) => c.kind === "MutatingWebhookConfiguration").flatMap((c) => c.webhooks);
    const validating = this.#configurations.filter((c) => c.kind === "ValidatingWebhookConfiguration").flatMap((c) => c.webhooks);

    const changedBy = new Set<string>();
    for (const w of mutating) {
      if (!applies(w, object)) continue;
      const before = JSON.stringify(object);
      object = await this.#call(w, namespace, object, true);
      if (JSON.stringify(object) !== before) changedBy.add(w.name);
    }
    // Reinvocation: a webhook that asked for it runs again when another one changed the object after it.
    if (changedBy.size > 0) {
      for (const w of mutating) {
        if (w.reinvocationPolicy !== "IfNeeded" || !applies(w, object)) continue;
        if (changedBy.size === 1 && changedBy.has(w.name)) continue;
        object = await this.#call(w, namespace, object, true);
      }
    }
    for (const w of validating) if (applies(w, object)) await this.#call(w, namespace, object, false);
    return object;
  }

  async #call(w: WebhookEntry, namespace: string, object: PodObject, mutating: boolean): Promise<PodObject> {
    const uid = randomUUID();
    const review = {
      apiVersion: "admission.k8s.io/v1",
      kind: "AdmissionReview",
      request: {
        uid,
        kind: { group: "", version: "v1", kind: "Pod" },
        resource: { group: "", version: "v1", resource: "pods" },
        requestKind: { group: "", version: "v1", kind: "Pod" },
        requestResource: { group: "", version: "v1", resource: "pods" },
        ...(object.metadata.name ? { name: object.metadata.name } : {}),
        namespace,
        operation: "CREATE",
        userInfo: { username: "system:serviceaccount:kube-system:replicaset-controller", groups: ["system:serviceaccounts", "system:authenticated"] },
        object,
        oldObject: null,
        dryRun: false,
        options: { apiVersion: "meta.k8s.io/v1", kind: "CreateOptions" },
      },
    };
    this.calls.push({ webhook: w.name, review: structuredClone(review) });
    let answer: { response?: { uid?: string; allowed?: boolean; patch?: string; patchType?: string; status?: { message?: string } } };
    try {
      answer = await this.#post(w, review);
      if (answer.response?.uid !== uid) throw new Error(`the review's response uid is ${JSON.stringify(answer.response?.uid)}, not the request's ${uid}`);
    } catch (err) {
      if (w.failurePolicy === "Ignore") return object;
      throw new AdmissionDenied(w.name, `failed calling webhook: ${(err as Error).message}`);
    }
    const r = answer.response!;
    if (r.allowed !== true) throw new AdmissionDenied(w.name, r.status?.message ?? "(no message)");
    if (r.patch === undefined) return object;
    if (!mutating) throw new AdmissionDenied(w.name, "a validating webhook answered with a patch");
    if (r.patchType !== "JSONPatch") throw new AdmissionDenied(w.name, `patchType ${JSON.stringify(r.patchType)} is not JSONPatch`);
    const patch = JSON.parse(Buffer.from(r.patch, "base64").toString("utf8")) as fastJsonPatch.Operation[];
    return fastJsonPatch.applyPatch(structuredClone(object), patch, true, false).newDocument;
  }

  #post(w: WebhookEntry, review: object): Promise<{ response?: { uid?: string; allowed?: boolean; patch?: string; patchType?: string; status?: { message?: string } } }> {
    const svc = w.clientConfig.service;
    if (!svc) throw new Error(`stand-in: webhook ${w.name} has no service (url webhooks are not resolved here)`);
    const servername = `${svc.name}.${svc.namespace}.svc`;
    const { host, port } = this.#resolve({ namespace: svc.namespace, name: svc.name, port: svc.port ?? 443 });
    const body = JSON.stringify(review);
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host,
          port,
          servername,
          method: "POST",
          path: svc.path ?? "/",
          ca: w.clientConfig.caBundle ? Buffer.from(w.clientConfig.caBundle, "base64") : undefined,
          headers: { host: servername, "content-type": "application/json", "content-length": Buffer.byteLength(body) },
          timeout: (w.timeoutSeconds ?? 10) * 1000,
          agent: false,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode}: ${Buffer.concat(chunks).toString().slice(0, 200)}`));
            try {
              resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
            } catch {
              reject(new Error("the answer is not JSON"));
            }
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`no answer within ${w.timeoutSeconds ?? 10} s`)));
      req.on("error", reject);
      req.end(body);
    });
  }
}
