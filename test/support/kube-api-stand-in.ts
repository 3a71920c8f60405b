// A STAND-IN for the Kubernetes API server, for tests only. It is not a kube-apiserver and stores
// nothing durable; it exists because no real API server can run on the test machines.
//
// It implements, over plain HTTP, the pod endpoints `@kubernetes/client-node` uses, with the semantics
// that matter to informers, as kube-apiserver's watch cache has them: list with a resourceVersion, watch
// streams of ADDED / MODIFIED / DELETED (an object entering a selector arrives as ADDED; one leaving it
// as DELETED carrying its previous state at the new resourceVersion), BOOKMARK events only when asked
// (`allowWatchBookmarks=true`), initial events (`sendInitialEvents=true`, which requires bookmarks),
// field selectors (`spec.nodeName=...` and friends), label selectors (equality), `410 Gone` (an ERROR
// event with an Expired status) for a compacted resourceVersion, server-side watch timeouts, graceful
// deletion of bound pods (MODIFIED with `deletionTimestamp` and `deletionGracePeriodSeconds`, DELETED
// when the grace period is over), and a restart that loses the event history (as a restarted
// apiserver's watch cache does: watches from an older resourceVersion get 410 Gone).
// Tests drive it: createPod / updatePod / setPodIP / deletePod, compact / force410, stop / restart.
//
// For Helm's `lookup` (what `helm template --dry-run=server` and `helm install` do against a cluster) it
// also serves, read-only: API discovery (`/api`, `/apis`, and the resource lists of the groups the chart
// renders), and GET by name of Namespaces and Secrets (404 NotFound when absent). It starts with the
// namespaces every cluster has (default, kube-system, kube-public); tests add Secrets with putSecret.
// Nothing else about Secrets or Namespaces (list, watch, create through the API) is served.
// For podwatch's stop (is its DaemonSet still there?) it serves GET by name of DaemonSets, which tests
// put with putDaemonSet (optionally marked as being deleted) and take away with deleteDaemonSet.
//
//   const api = await KubeApiStandIn.start();
//   api.kubeconfigPath                     // KUBECONFIG for a client on this network namespace
//   const inNode = await api.exposeIn(ns); // same API reachable from inside a network namespace
//   api.createPod({ name: "web", nodeName: "node-a", annotations: { ... } });
//   api.setPodIP("default", "web", "10.0.0.5");
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ChildProcess, SpawnOptions } from "node:child_process";
import type { AdmissionStandIn, PodObject } from "./admission-stand-in.ts";

/** A pod in the API's JSON form (the fields the stand-in knows about, plus anything a test adds). */
export interface Pod {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    resourceVersion: string;
    creationTimestamp: string;
    deletionTimestamp?: string;
    deletionGracePeriodSeconds?: number;
    annotations?: Record<string, string>;
    labels?: Record<string, string>;
    [k: string]: unknown;
  };
  spec: {
    nodeName?: string;
    hostNetwork?: boolean;
    initContainers?: Array<{ name: string; image: string }>;
    containers: Array<{ name: string; image: string }>;
    terminationGracePeriodSeconds?: number;
    [k: string]: unknown;
  };
  status: { phase?: string; podIP?: string; podIPs?: Array<{ ip: string }>; hostIP?: string; [k: string]: unknown };
}

/** What `createPod` takes: the usual fields flat; everything optional but the name. */
export interface PodInput {
  name: string;
  namespace?: string;
  nodeName?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  hostNetwork?: boolean;
  phase?: string;
  /** One address, or several (dual stack: IPv4 and IPv6). Usually set later with `setPodIP`. */
  podIP?: string | readonly string[];
  /** Init containers (names), as `spec.initContainers`; default none. */
  initContainers?: readonly string[];
  /** `spec.terminationGracePeriodSeconds`; default 30, as the API defaults it. */
  terminationGracePeriodSeconds?: number;
}

/** How `deletePod` deletes, as `DeleteOptions` say. */
export interface DeleteOptions {
  /** Overrides the pod's `terminationGracePeriodSeconds`; 0 deletes at once (a forced deletion). */
  gracePeriodSeconds?: number;
}

/** A partial pod: `metadata.annotations`/`labels`, `spec` and `status` fields are merged into the pod. */
export interface PodPatch {
  metadata?: { annotations?: Record<string, string | null>; labels?: Record<string, string | null> };
  spec?: Partial<Pod["spec"]>;
  status?: Partial<Pod["status"]>;
}

export interface StandInOptions {
  /** TCP port on 127.0.0.1; default 0 (any free one). `restart()` reuses the port it got. */
  port?: number;
  host?: string;
  /** Server-side watch timeout when the client gives no `timeoutSeconds`; default 1800 (as kube-apiserver's minimum). */
  watchTimeoutSeconds?: number;
  /** Period of BOOKMARK events for watches that allow them; default 1000 ms. */
  bookmarkIntervalMs?: number;
  /** Events kept for watches resuming from an older resourceVersion; older ones are compacted. Default 100 000. */
  historyLimit?: number;
  /**
   * Serve requests that carry no token too (kube-apiserver's anonymous access, wide open). client-go
   * (Helm) does not send a bearer token to a plain-HTTP server, so Helm can only reach the stand-in so.
   */
  anonymous?: boolean;
}

/** Where a client inside a network namespace reaches the stand-in. */
export interface Exposure {
  url: string;
  kubeconfig: string;
  kubeconfigPath: string;
}

type EventType = "ADDED" | "MODIFIED" | "DELETED";
interface HistoryEntry {
  rv: number;
  type: EventType;
  old: Pod | undefined;
  obj: Pod;
}

interface Selector {
  matches(pod: Pod): boolean;
}

interface OpenWatch {
  namespace: string | undefined;
  fields: Selector;
  labels: Selector;
  res: ServerResponse;
  timers: Array<ReturnType<typeof setTimeout> | ReturnType<typeof setInterval>>;
}

/** Anything that can start a process inside a network namespace (`Netns` of ./netns.ts). */
export interface NamespaceSpawner {
  spawn(cmd: string, args: readonly string[], opts?: SpawnOptions): ChildProcess;
}

class HttpStatusError extends Error {
  readonly status: number;
  readonly reason: string;
  constructor(status: number, reason: string, message: string) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

const SUPPORTED_FIELDS: Record<string, (p: Pod) => string> = {
  "metadata.name": (p) => p.metadata.name,
  "metadata.namespace": (p) => p.metadata.namespace,
  "spec.nodeName": (p) => p.spec.nodeName ?? "",
  "spec.hostNetwork": (p) => String(p.spec.hostNetwork ?? false),
  "status.phase": (p) => p.status.phase ?? "",
  "status.podIP": (p) => p.status.podIP ?? "",
};

const ALL: Selector = { matches: () => true };

/** A resource of a discovery document: name, kind, whether namespaced, and the usual verbs. */
function resource(name: string, kind: string, namespaced = true): object {
  return { name, singularName: kind.toLowerCase(), namespaced, kind, verbs: ["create", "delete", "get", "list", "patch", "update", "watch"] };
}

/** API discovery for the kinds the chart renders and looks up (what Helm's REST mapper asks for). */
const DISCOVERY: Record<string, object> = {
  "/api": { kind: "APIVersions", versions: ["v1"], serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress: "127.0.0.1" }] },
  "/apis": {
    kind: "APIGroupList",
    apiVersion: "v1",
    groups: ["apps", "rbac.authorization.k8s.io", "policy", "admissionregistration.k8s.io"].map((name) => ({
      name,
      versions: [{ groupVersion: `${name}/v1`, version: "v1" }],
      preferredVersion: { groupVersion: `${name}/v1`, version: "v1" },
    })),
  },
  "/api/v1": {
    kind: "APIResourceList",
    apiVersion: "v1",
    groupVersion: "v1",
    resources: [
      resource("configmaps", "ConfigMap"),
      resource("namespaces", "Namespace", false),
      resource("pods", "Pod"),
      resource("resourcequotas", "ResourceQuota"),
      resource("secrets", "Secret"),
      resource("serviceaccounts", "ServiceAccount"),
      resource("services", "Service"),
    ],
  },
  "/apis/apps/v1": { kind: "APIResourceList", apiVersion: "v1", groupVersion: "apps/v1", resources: [resource("daemonsets", "DaemonSet"), resource("deployments", "Deployment")] },
  // The injector's objects (Helm maps every rendered kind before a --dry-run=server render).
  "/apis/policy/v1": { kind: "APIResourceList", apiVersion: "v1", groupVersion: "policy/v1", resources: [resource("poddisruptionbudgets", "PodDisruptionBudget")] },
  "/apis/admissionregistration.k8s.io/v1": {
    kind: "APIResourceList",
    apiVersion: "v1",
    groupVersion: "admissionregistration.k8s.io/v1",
    resources: [resource("mutatingwebhookconfigurations", "MutatingWebhookConfiguration", false), resource("validatingwebhookconfigurations", "ValidatingWebhookConfiguration", false)],
  },
  "/apis/rbac.authorization.k8s.io/v1": {
    kind: "APIResourceList",
    apiVersion: "v1",
    groupVersion: "rbac.authorization.k8s.io/v1",
    resources: [resource("clusterrolebindings", "ClusterRoleBinding", false), resource("clusterroles", "ClusterRole", false), resource("rolebindings", "RoleBinding"), resource("roles", "Role")],
  },
};

function parseFieldSelector(text: string | null): Selector {
  if (!text) return ALL;
  const terms = text.split(",").filter((t) => t !== "").map((term) => {
    const m = /^([^=!]+)(==|=|!=)(.*)$/.exec(term);
    if (!m) throw new HttpStatusError(400, "BadRequest", `invalid field selector: ${JSON.stringify(term)}`);
    const [, key = "", op, value = ""] = m;
    const get = SUPPORTED_FIELDS[key];
    if (!get) throw new HttpStatusError(400, "BadRequest", `"${key}" is not a known field selector: only "${Object.keys(SUPPORTED_FIELDS).join('", "')}"`);
    return (p: Pod) => (op === "!=" ? get(p) !== value : get(p) === value);
  });
  return { matches: (p) => terms.every((t) => t(p)) };
}

function parseLabelSelector(text: string | null): Selector {
  if (!text) return ALL;
  const terms = text.split(",").filter((t) => t !== "").map((term) => {
    const t = term.trim();
    let m: RegExpExecArray | null;
    if ((m = /^([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)$/.exec(t))) {
      const [, key = "", op, value] = m;
      return (p: Pod) => (op === "!=" ? p.metadata.labels?.[key] !== value : p.metadata.labels?.[key] === value);
    }
    if ((m = /^(!?)([\w./-]+)$/.exec(t))) {
      const [, not, key = ""] = m;
      return (p: Pod) => (key in (p.metadata.labels ?? {})) !== (not === "!");
    }
    throw new HttpStatusError(400, "BadRequest", `label selector ${JSON.stringify(t)} is not supported by the stand-in (equality and existence only)`);
  });
  return { matches: (p) => terms.every((t) => t(p)) };
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

function statusBody(code: number, reason: string, message: string): object {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code };
}

function rfc3339(d = new Date()): string {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

export class KubeApiStandIn {
  /** Bearer token the stand-in requires (it is in the kubeconfig). */
  readonly token = `stand-in-${randomUUID()}`;
  /** Requests served, by kind; tests use them to see lists and watch (re)connections. */
  readonly stats = { lists: 0, watches: 0, gets: 0, rejected: 0 };
  /** Method and path (with query) of every request let in (refused ones are counted in stats.rejected), in order. */
  readonly requests: string[] = [];

  readonly #opts: StandInOptions;
  readonly #dir: string;
  readonly #pods = new Map<string, Pod>();
  /** Secrets by `namespace/name`, Namespaces by name: served to GET by name only (Helm's lookup). */
  readonly #secrets = new Map<string, object>();
  /** DaemonSets by `namespace/name`: served to GET by name only. */
  readonly #daemonSets = new Map<string, object>();
  readonly #namespaces = new Map<string, object>();
  /** Webhooks pods created with createPodObject go through (none: stored as given). */
  admission: AdmissionStandIn | undefined;
  readonly #watches = new Set<OpenWatch>();
  readonly #bridges = new Set<ChildProcess>();
  /** Graceful deletions under way: the timer that ends each one. */
  readonly #terminating = new Map<string, ReturnType<typeof setTimeout>>();
  #history: HistoryEntry[] = [];
  #rv = 1000;
  /** Watches may resume from this resourceVersion or later; older ones get 410 Gone. */
  #compactedRv = 1000;
  #tcp: Server | undefined;
  #unix: Server | undefined;
  #port = 0;

  private constructor(opts: StandInOptions) {
    this.#opts = opts;
    this.#dir = mkdtempSync(join(tmpdir(), "kube-stand-in-"));
    for (const ns of ["default", "kube-system", "kube-public"]) this.createNamespace(ns);
  }

  /** Starts the stand-in on 127.0.0.1 (and on a unix socket, for `exposeIn`). */
  static async start(opts: StandInOptions = {}): Promise<KubeApiStandIn> {
    const api = new KubeApiStandIn(opts);
    api.#port = opts.port ?? 0;
    await api.#listen();
    writeFileSync(api.kubeconfigPath, api.kubeconfigFor(api.url));
    return api;
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    return `http://${this.#opts.host ?? "127.0.0.1"}:${this.#port}`;
  }

  /** Unix socket serving the same API (used to reach it from other network namespaces). */
  get socketPath(): string {
    return join(this.#dir, "api.sock");
  }

  /** Path of a kubeconfig file for `url` (plain HTTP, hence `insecure-skip-tls-verify`). */
  get kubeconfigPath(): string {
    return join(this.#dir, "kubeconfig");
  }

  get kubeconfig(): string {
    return this.kubeconfigFor(this.url);
  }

  /** The current resourceVersion. */
  get resourceVersion(): string {
    return String(this.#rv);
  }

  /** Number of watch streams open right now. */
  get openWatches(): number {
    return this.#watches.size;
  }

  /** A kubeconfig (JSON, which is YAML) pointing at `server` with this stand-in's token. */
  kubeconfigFor(server: string): string {
    return JSON.stringify(
      {
        apiVersion: "v1",
        kind: "Config",
        clusters: [{ name: "stand-in", cluster: { server, "insecure-skip-tls-verify": true } }],
        users: [{ name: "stand-in", user: { token: this.token } }],
        contexts: [{ name: "stand-in", context: { cluster: "stand-in", user: "stand-in", namespace: "default" } }],
        "current-context": "stand-in",
      },
      null,
      2,
    );
  }

  // ---- pods, as the scheduler and the kubelet would change them ----

  createPod(input: PodInput): Pod {
    const namespace = input.namespace ?? "default";
    const key = `${namespace}/${input.name}`;
    if (this.#pods.has(key)) throw new Error(`stand-in: pod ${key} already exists`);
    const ips = input.podIP === undefined ? [] : typeof input.podIP === "string" ? [input.podIP] : [...input.podIP];
    const pod: Pod = {
      metadata: {
        name: input.name,
        namespace,
        uid: randomUUID(),
        resourceVersion: "",
        creationTimestamp: rfc3339(),
        ...(input.annotations ? { annotations: { ...input.annotations } } : {}),
        ...(input.labels ? { labels: { ...input.labels } } : {}),
      },
      spec: {
        ...(input.nodeName !== undefined ? { nodeName: input.nodeName } : {}),
        ...(input.hostNetwork ? { hostNetwork: true } : {}),
        ...(input.initContainers && input.initContainers.length > 0 ? { initContainers: input.initContainers.map((name) => ({ name, image: "stand-in" })) } : {}),
        containers: [{ name: "app", image: "stand-in" }],
        terminationGracePeriodSeconds: input.terminationGracePeriodSeconds ?? 30,
      },
      status: {
        phase: input.phase ?? (ips.length > 0 ? "Running" : "Pending"),
        ...(ips.length > 0 ? { podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) } : {}),
      },
    };
    this.#commit("ADDED", undefined, pod);
    return clone(pod);
  }

  /** Merges `patch` into the pod (annotation or label set to null removes it). */
  updatePod(namespace: string, name: string, patch: PodPatch): Pod {
    const old = this.#get(namespace, name);
    const pod = clone(old);
    for (const field of ["annotations", "labels"] as const) {
      const changes = patch.metadata?.[field];
      if (!changes) continue;
      const merged: Record<string, string> = { ...(pod.metadata[field] ?? {}) };
      for (const [k, v] of Object.entries(changes)) {
        if (v === null) delete merged[k];
        else merged[k] = v;
      }
      pod.metadata[field] = merged;
    }
    Object.assign(pod.spec, patch.spec ?? {});
    Object.assign(pod.status, patch.status ?? {});
    this.#commit("MODIFIED", old, pod);
    return clone(pod);
  }

  /** As the kubelet does once the sandbox is up: addresses appear and the pod runs. */
  setPodIP(namespace: string, name: string, ip: string | readonly string[], phase = "Running"): Pod {
    const ips = typeof ip === "string" ? [ip] : [...ip];
    return this.updatePod(namespace, name, { status: { phase, podIP: ips[0], podIPs: ips.map((a) => ({ ip: a })) } });
  }

  /**
   * Deletes a pod as the API does. A pod bound to a node and not finished is deleted gracefully: at once
   * it gets `deletionTimestamp` (now + grace) and `deletionGracePeriodSeconds` (a MODIFIED event; it still
   * runs), and it is removed (DELETED) when the grace period is over, standing for the kubelet's final
   * delete once the containers stopped. A grace period of 0, an unscheduled pod or a finished one goes at
   * once. Deleting a terminating pod again only shortens its grace period to 0 when asked to.
   */
  deletePod(namespace: string, name: string, opts: DeleteOptions = {}): void {
    const key = `${namespace}/${name}`;
    const old = this.#get(namespace, name);
    const grace = Math.max(0, opts.gracePeriodSeconds ?? old.spec.terminationGracePeriodSeconds ?? 30);
    const finished = old.status.phase === "Succeeded" || old.status.phase === "Failed";
    if (this.#terminating.has(key)) {
      if (grace === 0) this.#finishDeletion(key);
      return;
    }
    if (grace === 0 || !old.spec.nodeName || finished) {
      const final = clone(old);
      final.metadata.deletionTimestamp ??= rfc3339();
      final.metadata.deletionGracePeriodSeconds = 0;
      this.#commit("DELETED", old, final);
      return;
    }
    const pod = clone(old);
    pod.metadata.deletionTimestamp = rfc3339(new Date(Date.now() + grace * 1000));
    pod.metadata.deletionGracePeriodSeconds = grace;
    this.#commit("MODIFIED", old, pod);
    this.#terminating.set(key, setTimeout(() => this.#finishDeletion(key), grace * 1000));
  }

  /** Pods whose graceful deletion is under way (`namespace/name`). */
  get terminating(): string[] {
    return [...this.#terminating.keys()];
  }

  /** The kubelet confirms a terminating pod's containers stopped before its grace period is over: DELETED now. */
  finishDeletion(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    if (!this.#terminating.has(key)) throw new Error(`stand-in: pod ${key} is not terminating`);
    this.#finishDeletion(key);
  }

  #finishDeletion(key: string): void {
    clearTimeout(this.#terminating.get(key));
    this.#terminating.delete(key);
    const old = this.#pods.get(key);
    if (!old) return;
    const final = clone(old);
    final.metadata.deletionGracePeriodSeconds = 0;
    this.#commit("DELETED", old, final);
  }

  getPod(namespace: string, name: string): Pod | undefined {
    const p = this.#pods.get(`${namespace}/${name}`);
    return p ? clone(p) : undefined;
  }

  listPods(): Pod[] {
    return [...this.#pods.values()].map(clone);
  }

  // ---- namespaces and secrets, for Helm's lookup ----

  /** Creates a Namespace (the stand-in starts with default, kube-system and kube-public). */
  createNamespace(name: string, labels: Record<string, string> = {}): void {
    this.#rv += 1;
    this.#namespaces.set(name, {
      kind: "Namespace",
      apiVersion: "v1",
      // kube-apiserver sets kubernetes.io/metadata.name on every namespace (webhooks select by it).
      metadata: { name, uid: randomUUID(), resourceVersion: String(this.#rv), creationTimestamp: rfc3339(), labels: { ...labels, "kubernetes.io/metadata.name": name } },
      spec: { finalizers: ["kubernetes"] },
      status: { phase: "Active" },
    });
  }

  /** `kubectl label namespace NAME k=v` (null removes a label). */
  labelNamespace(name: string, labels: Record<string, string | null>): void {
    const ns = this.#namespaces.get(name) as { metadata: { labels: Record<string, string>; resourceVersion: string } } | undefined;
    if (!ns) throw new Error(`stand-in: no namespace ${name}`);
    for (const [k, v] of Object.entries(labels)) {
      if (v === null) delete ns.metadata.labels[k];
      else ns.metadata.labels[k] = v;
    }
    this.#rv += 1;
    ns.metadata.resourceVersion = String(this.#rv);
  }

  /** A namespace's labels (with kubernetes.io/metadata.name); undefined when there is no such namespace. */
  namespaceLabels(name: string): Record<string, string> | undefined {
    const ns = this.#namespaces.get(name) as { metadata: { labels: Record<string, string> } } | undefined;
    return ns ? { ...ns.metadata.labels } : undefined;
  }

  /**
   * Creates a pod as a client (kubectl, a ReplicaSet) asks the API server to: through admission (the
   * webhooks of `admission`, admission-stand-in.ts), then stored with a uid, and a name made from
   * `generateName` when it has none (after admission, as kube-apiserver does). Rejects with
   * AdmissionDenied when a webhook refuses it. The pod's spec is stored as admitted.
   */
  async createPodObject(namespace: string, object: PodObject, opts: { nodeName?: string } = {}): Promise<Pod> {
    const labels = this.namespaceLabels(namespace);
    if (labels === undefined) throw new Error(`stand-in: namespaces "${namespace}" not found`);
    const admitted = this.admission ? await this.admission.admitCreate(namespace, labels, object) : structuredClone(object);
    const name = admitted.metadata.name || `${admitted.metadata.generateName ?? "pod-"}${randomUUID().slice(0, 5)}`;
    const key = `${namespace}/${name}`;
    if (this.#pods.has(key)) throw new Error(`stand-in: pod ${key} already exists`);
    const { apiVersion: _a, kind: _k, status: _s, metadata, spec, ...rest } = admitted;
    const pod = {
      ...rest,
      metadata: { ...metadata, name, namespace, uid: randomUUID(), resourceVersion: "", creationTimestamp: rfc3339() },
      spec: { terminationGracePeriodSeconds: 30, ...spec, ...(opts.nodeName !== undefined ? { nodeName: opts.nodeName } : {}) },
      status: { phase: "Pending" },
    } as unknown as Pod;
    this.#commit("ADDED", undefined, pod);
    return clone(pod);
  }

  deleteNamespace(name: string): void {
    this.#namespaces.delete(name);
  }

  /** Stores a Secret; `data` values are given as text and served base64-encoded, as the API does. */
  putSecret(namespace: string, name: string, data: Record<string, string | Buffer>, opts: { type?: string; annotations?: Record<string, string>; labels?: Record<string, string> } = {}): void {
    this.#rv += 1;
    this.#secrets.set(`${namespace}/${name}`, {
      kind: "Secret",
      apiVersion: "v1",
      type: opts.type ?? "Opaque",
      metadata: {
        name,
        namespace,
        uid: randomUUID(),
        resourceVersion: String(this.#rv),
        creationTimestamp: rfc3339(),
        ...(opts.annotations ? { annotations: { ...opts.annotations } } : {}),
        ...(opts.labels ? { labels: { ...opts.labels } } : {}),
      },
      data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")])),
    });
  }

  deleteSecret(namespace: string, name: string): void {
    this.#secrets.delete(`${namespace}/${name}`);
  }

  /** Stores a DaemonSet (metadata only); `deleting` sets its deletionTimestamp, as a foreground deletion does. */
  putDaemonSet(namespace: string, name: string, opts: { deleting?: boolean } = {}): void {
    this.#rv += 1;
    this.#daemonSets.set(`${namespace}/${name}`, {
      kind: "DaemonSet",
      apiVersion: "apps/v1",
      metadata: { name, namespace, uid: randomUUID(), resourceVersion: String(this.#rv), creationTimestamp: rfc3339(), ...(opts.deleting ? { deletionTimestamp: rfc3339() } : {}) },
      spec: { selector: { matchLabels: { app: name } }, template: { metadata: { labels: { app: name } }, spec: { containers: [] } } },
    });
  }

  deleteDaemonSet(namespace: string, name: string): void {
    this.#daemonSets.delete(`${namespace}/${name}`);
  }

  /** While true, a GET of a DaemonSet answers 403 Forbidden, as after its RoleBinding was deleted. */
  forbidDaemonSets = false;

  // ---- faults ----

  /** Forgets the event history: a watch resuming from any earlier resourceVersion gets 410 Gone. */
  compact(): void {
    this.#compactedRv = this.#rv;
    this.#history = [];
  }

  /** Compacts, and ends every open watch with an ERROR event carrying 410 Expired (clients must re-list). */
  force410(): void {
    this.compact();
    for (const w of [...this.#watches]) {
      this.#send(w, { type: "ERROR", object: statusBody(410, "Expired", `too old resource version: ${this.#rv - 1} (${this.#rv})`) });
      this.#endWatch(w);
    }
  }

  /** The API goes away: listeners closed, open connections cut. Pods and history are kept. */
  async stop(): Promise<void> {
    for (const w of [...this.#watches]) this.#endWatch(w, true);
    await Promise.all(
      [this.#tcp, this.#unix].map(
        (s) =>
          new Promise<void>((resolve) => {
            if (!s || !s.listening) return resolve();
            s.close(() => resolve());
            s.closeAllConnections();
          }),
      ),
    );
    this.#tcp = undefined;
    this.#unix = undefined;
    rmSync(this.socketPath, { force: true });
  }

  /**
   * Stops, then serves again on the same port and socket with the same pods, like a restarted apiserver:
   * its watch cache starts at the current resourceVersion, so the history is gone and a watch resuming
   * from an earlier resourceVersion gets 410 Gone (the client must list again).
   */
  async restart(): Promise<void> {
    await this.stop();
    this.compact();
    await this.#listen();
  }

  /** Stops for good and removes its files and bridges. */
  async close(): Promise<void> {
    await this.stop();
    for (const t of this.#terminating.values()) clearTimeout(t);
    this.#terminating.clear();
    for (const b of this.#bridges) if (b.exitCode === null && b.signalCode === null) b.kill("SIGKILL");
    this.#bridges.clear();
    rmSync(this.#dir, { recursive: true, force: true });
  }

  /**
   * Makes the API reachable from inside a network namespace: a small forwarder started there listens
   * on its 127.0.0.1 and relays to this stand-in's unix socket (socket files are not bound to a
   * namespace). The returned kubeconfig is for clients in that namespace. Torn down by `close()`
   * (or by the namespace's `destroy()`).
   */
  async exposeIn(ns: NamespaceSpawner): Promise<Exposure> {
    const script = `
      const net = require("node:net");
      const sock = process.argv[1];
      const srv = net.createServer((c) => {
        const u = net.connect(sock);
        c.pipe(u).pipe(c);
        const cut = () => { c.destroy(); u.destroy(); };
        c.on("error", cut); u.on("error", cut); c.on("close", cut); u.on("close", cut);
      });
      srv.listen(0, "127.0.0.1", () => process.stdout.write(srv.address().port + "\\n"));`;
    const child = ns.spawn(process.execPath, ["-e", script, this.socketPath], { stdio: ["ignore", "pipe", "inherit"] });
    this.#bridges.add(child);
    child.once("exit", () => this.#bridges.delete(child));
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("stand-in: forwarder in the namespace did not start within 10 s")), 10_000);
      let buf = "";
      child.stdout?.on("data", (d: Buffer) => {
        buf += d.toString();
        const m = /^(\d+)\n/.exec(buf);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`stand-in: forwarder exited with ${code}`));
      });
    });
    const url = `http://127.0.0.1:${port}`;
    const kubeconfig = this.kubeconfigFor(url);
    const kubeconfigPath = join(this.#dir, `kubeconfig-${port}`);
    writeFileSync(kubeconfigPath, kubeconfig);
    return { url, kubeconfig, kubeconfigPath };
  }

  // ---- internals ----

  #get(namespace: string, name: string): Pod {
    const p = this.#pods.get(`${namespace}/${name}`);
    if (!p) throw new Error(`stand-in: no pod ${namespace}/${name}`);
    return p;
  }

  #commit(type: EventType, old: Pod | undefined, pod: Pod): void {
    this.#rv += 1;
    pod.metadata.resourceVersion = String(this.#rv);
    const key = `${pod.metadata.namespace}/${pod.metadata.name}`;
    if (type === "DELETED") this.#pods.delete(key);
    else this.#pods.set(key, pod);
    const entry: HistoryEntry = { rv: this.#rv, type, old: old ? clone(old) : undefined, obj: clone(pod) };
    this.#history.push(entry);
    const limit = this.#opts.historyLimit ?? 100_000;
    if (this.#history.length > limit) {
      const dropped = this.#history.splice(0, this.#history.length - limit);
      this.#compactedRv = dropped.at(-1)?.rv ?? this.#compactedRv;
    }
    for (const w of this.#watches) this.#deliver(w, entry);
  }

  /** Sends one history entry to a watch, translated by its selectors as a real server does. */
  #deliver(w: OpenWatch, e: HistoryEntry): void {
    if (w.namespace !== undefined && e.obj.metadata.namespace !== w.namespace) return;
    const sel = (p: Pod | undefined) => p !== undefined && w.fields.matches(p) && w.labels.matches(p);
    const before = e.type === "ADDED" ? false : sel(e.old);
    const after = e.type === "DELETED" ? false : sel(e.obj);
    let type: EventType;
    let obj = e.obj;
    if (e.type === "DELETED") {
      if (!before) return;
      type = "DELETED";
    } else if (before && after) type = "MODIFIED";
    else if (after) type = "ADDED";
    else if (before && e.old) {
      // Left the selector: the watcher gets the state it last matched in, at this event's resourceVersion.
      type = "DELETED";
      obj = { ...clone(e.old), metadata: { ...clone(e.old.metadata), resourceVersion: String(e.rv) } };
    } else return;
    this.#send(w, { type, object: { kind: "Pod", apiVersion: "v1", ...obj } });
  }

  #send(w: OpenWatch, event: object): void {
    if (!w.res.writableEnded && !w.res.destroyed) w.res.write(JSON.stringify(event) + "\n");
  }

  #endWatch(w: OpenWatch, cut = false): void {
    this.#watches.delete(w);
    for (const t of w.timers) clearTimeout(t); // clears intervals too
    if (cut) w.res.destroy();
    else if (!w.res.writableEnded) w.res.end();
  }

  async #listen(): Promise<void> {
    const handler = (req: IncomingMessage, res: ServerResponse) => this.#handle(req, res);
    const tcp = createServer(handler);
    await new Promise<void>((resolve, reject) => {
      tcp.once("error", reject);
      tcp.listen(this.#port, this.#opts.host ?? "127.0.0.1", () => resolve());
    });
    this.#port = (tcp.address() as AddressInfo).port;
    this.#tcp = tcp;
    rmSync(this.socketPath, { force: true });
    const unix = createServer(handler);
    await new Promise<void>((resolve, reject) => {
      unix.once("error", reject);
      unix.listen(this.socketPath, () => resolve());
    });
    this.#unix = unix;
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const fail = (status: number, reason: string, message: string) => {
      if (!res.headersSent) res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(statusBody(status, reason, message)));
    };
    try {
      const anonymous = this.#opts.anonymous === true && req.headers.authorization === undefined;
      if (!anonymous && req.headers.authorization !== `Bearer ${this.token}`) {
        this.stats.rejected += 1;
        return fail(401, "Unauthorized", "Unauthorized");
      }
      const url = new URL(req.url ?? "/", "http://stand-in");
      this.requests.push(`${req.method} ${url.pathname}${url.search}`);
      if (req.method !== "GET") return fail(405, "MethodNotAllowed", `the stand-in serves GET only, not ${req.method}`);
      if (url.pathname === "/version") {
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ major: "1", minor: "33", gitVersion: "v1.33.0-stand-in" }));
        return;
      }
      const discovery = DISCOVERY[url.pathname];
      if (discovery !== undefined) {
        // The legacy (unaggregated) discovery documents; clients that ask for aggregated discovery
        // (apidiscovery.k8s.io/v2) accept these too, as they do from an older apiserver.
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(discovery));
        return;
      }
      let m: RegExpExecArray | null;
      if ((m = /^\/api\/v1\/namespaces\/([^/]+)$/.exec(url.pathname))) {
        const name = decodeURIComponent(m[1] ?? "");
        const ns = this.#namespaces.get(name);
        if (!ns) return fail(404, "NotFound", `namespaces "${name}" not found`);
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(ns));
        return;
      }
      if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/secrets\/([^/]+)$/.exec(url.pathname))) {
        const name = decodeURIComponent(m[2] ?? "");
        const secret = this.#secrets.get(`${decodeURIComponent(m[1] ?? "")}/${name}`);
        if (!secret) return fail(404, "NotFound", `secrets "${name}" not found`);
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(secret));
        return;
      }
      if ((m = /^\/apis\/apps\/v1\/namespaces\/([^/]+)\/daemonsets\/([^/]+)$/.exec(url.pathname))) {
        const name = decodeURIComponent(m[2] ?? "");
        if (this.forbidDaemonSets) return fail(403, "Forbidden", `daemonsets.apps "${name}" is forbidden: User cannot get resource "daemonsets" in API group "apps"`);
        const ds = this.#daemonSets.get(`${decodeURIComponent(m[1] ?? "")}/${name}`);
        if (!ds) return fail(404, "NotFound", `daemonsets.apps "${name}" not found`);
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(ds));
        return;
      }
      let namespace: string | undefined;
      if (url.pathname === "/api/v1/pods") namespace = undefined;
      else if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(url.pathname))) namespace = decodeURIComponent(m[1] ?? "");
      else if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(url.pathname))) {
        this.stats.gets += 1;
        const pod = this.#pods.get(`${decodeURIComponent(m[1] ?? "")}/${decodeURIComponent(m[2] ?? "")}`);
        if (!pod) return fail(404, "NotFound", `pods "${decodeURIComponent(m[2] ?? "")}" not found`);
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ kind: "Pod", apiVersion: "v1", ...pod }));
        return;
      } else return fail(404, "NotFound", `the server could not find the requested resource (stand-in serves pods, and namespaces, secrets and daemonsets by name): ${url.pathname}`);

      const fields = parseFieldSelector(url.searchParams.get("fieldSelector"));
      const labels = parseLabelSelector(url.searchParams.get("labelSelector"));
      const matching = () =>
        [...this.#pods.values()].filter((p) => (namespace === undefined || p.metadata.namespace === namespace) && fields.matches(p) && labels.matches(p));

      if (url.searchParams.get("watch") !== "true" && url.searchParams.get("watch") !== "1") {
        this.stats.lists += 1;
        const rv = url.searchParams.get("resourceVersion");
        if (rv && rv !== "0" && url.searchParams.get("resourceVersionMatch") === "Exact" && Number(rv) < this.#compactedRv) {
          return fail(410, "Expired", `too old resource version: ${rv} (${this.#rv})`);
        }
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ kind: "PodList", apiVersion: "v1", metadata: { resourceVersion: String(this.#rv) }, items: matching() }));
        return;
      }

      // watch
      this.stats.watches += 1;
      const rvText = url.searchParams.get("resourceVersion") ?? "";
      const initial = url.searchParams.get("sendInitialEvents") === "true";
      const bookmarks = url.searchParams.get("allowWatchBookmarks") === "true";
      const rv = rvText === "" || rvText === "0" ? undefined : Number(rvText);
      if (rv !== undefined && !Number.isInteger(rv)) return fail(400, "BadRequest", `invalid resourceVersion ${JSON.stringify(rvText)}`);
      if (initial && !bookmarks) return fail(422, "Invalid", "allowWatchBookmarks: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true");
      res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked", "cache-control": "no-cache" });
      res.flushHeaders();
      const w: OpenWatch = { namespace, fields, labels, res, timers: [] };
      if (rv !== undefined && rv < this.#compactedRv && !initial) {
        this.#send(w, { type: "ERROR", object: statusBody(410, "Expired", `too old resource version: ${rv} (${this.#rv})`) });
        res.end();
        return;
      }
      this.#watches.add(w);
      res.on("close", () => this.#endWatch(w));
      if (rv === undefined || initial) {
        for (const pod of matching()) this.#send(w, { type: "ADDED", object: { kind: "Pod", apiVersion: "v1", ...pod } });
        if (initial) {
          this.#send(w, {
            type: "BOOKMARK",
            object: { kind: "Pod", apiVersion: "v1", metadata: { resourceVersion: String(this.#rv), annotations: { "k8s.io/initial-events-end": "true" } } },
          });
        }
      } else {
        for (const e of this.#history) if (e.rv > rv) this.#deliver(w, e);
      }
      const timeoutSeconds = Number(url.searchParams.get("timeoutSeconds") ?? this.#opts.watchTimeoutSeconds ?? 1800);
      w.timers.push(setTimeout(() => this.#endWatch(w), timeoutSeconds * 1000));
      if (bookmarks) {
        const every = this.#opts.bookmarkIntervalMs ?? 1000;
        const bookmark = () =>
          this.#send(w, { type: "BOOKMARK", object: { kind: "Pod", apiVersion: "v1", metadata: { resourceVersion: String(this.#rv) } } });
        w.timers.push(setInterval(bookmark, every));
      }
    } catch (err) {
      if (err instanceof HttpStatusError) return fail(err.status, err.reason, err.message);
      return fail(500, "InternalError", err instanceof Error ? err.message : String(err));
    }
  }
}
