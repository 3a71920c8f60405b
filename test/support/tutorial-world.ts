// The tutorial's cluster on one machine, in network namespaces, with the real tproxy parts:
//
//   debian-app        (10.90.1.2) ─┐
//   debian-app-locked (10.90.3.2) ─┼─ node (router; runs tproxy-podwatch and tproxy run, as the
//                                  │        DaemonSet pod would, with the chart's flags)
//                                  └─ internet: www.google.com, storage.googleapis.com, the metadata
//                                     server 169.254.169.254, a "service" at 10.96.0.1 (the cluster's
//                                     service range), each answering with its own name.
//
// What is not real, and stands in for what cannot run here: the Kubernetes API (the stand-in of
// ./kube-api-stand-in.ts, spoken to by podwatch through the real @kubernetes/client-node), and the
// kubelet (this file: it gives pods their IPs, keeps a pod Pending until its init container exited 0
// and only then lets it run, and updates the filter ConfigMap volume the kubelet's way). Pods trust CAs the way the tutorial mounts them: a
// file over /etc/ssl/certs/ca-certificates.crt (ip netns exec bind-mounts /etc/netns/<ns>/ssl).
import type { ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeApiStandIn } from "./kube-api-stand-in.ts";
import { writeConfigMap } from "./configmap.ts";
import { BridgeCni, calicoLike, datapathFromEnv, type Datapath, type PodLink } from "./datapath.ts";
import { Netns, enableForwarding, link, removeStale, uniqueName, waitFor, type RunResult } from "./netns.ts";
import { TestCa } from "./pki.ts";
import { METRICS_PORT, Proc, REPO, TPROXY_CLI, TRANSPARENT_PORT } from "./world.ts";

export const PODWATCH_CLI = join(REPO, "packages/podwatch/dist/cli.js");
export const SIDECAR_CLI = join(REPO, "packages/sidecar-init/dist/cli.js");
export const CHART_FILTER = join(REPO, "charts/tproxy/files/filter.ts");

export const NODE_NAME = "demo-node";
export const ANNOTATION = "initializer.kubernetes.io/tproxy";
export const APP_IP = "10.90.1.2";
export const LOCKED_IP = "10.90.3.2";
export const LOCKED_IP6 = "fd90:3::2";
export const GOOGLE_IP = "10.90.2.10";
export const STORAGE_IP = "10.90.2.20";
export const METADATA_IP = "169.254.169.254";
export const SERVICE_IP = "10.96.0.1";
export const SERVICE_CIDR = "10.96.0.0/12";
export const DNS_IP = "10.90.2.53";
/** The node's own address, on its uplink (what Kubernetes calls its InternalIP, `status.hostIP`). */
export const NODE_IP = "10.90.2.1";
export const INTERNET_IP6 = "fd90:2::10";
export const BUCKET_URL = "https://storage.googleapis.com/solutions-public-assets/";

/** The tutorial's names, as every namespace of the world resolves them (suites add their own servers' names). */
export const TUTORIAL_HOSTS: Readonly<Record<string, string>> = {
  "www.google.com": GOOGLE_IP,
  "storage.googleapis.com": STORAGE_IP,
  metadata: METADATA_IP,
  "metadata.google.internal": METADATA_IP,
};

export interface PodNs {
  name: string;
  ns: Netns;
  /** Its IPv4 address: APP_IP and LOCKED_IP, except on "bridge-cni" (what host-local gave it). */
  ip: string;
}

/** What the kubelet stand-in starts: one pod of its node. */
export interface KubeletPod {
  name: string;
  namespace?: string;
  ip: string;
  annotations?: Record<string, string>;
  /** Init containers, run in order before the app; default none. */
  initContainers?: readonly string[];
}

interface InitState {
  name: string;
  exitCode?: number;
}

/**
 * The kubelet's part of a pod's life, as the tests need it, written to the API stand-in: the sandbox
 * comes up and the pod gets its IP at once; while init containers have yet to exit 0 the pod stays
 * Pending (with its IP: init containers use the pod's network); when the last one exited 0 the app
 * containers start and the pod is Running. An init container that fails leaves the pod Pending (a real
 * kubelet restarts it with backoff; here the test decides whether to run it again).
 */
export class KubeletStandIn {
  readonly #api: KubeApiStandIn;
  readonly nodeName: string;

  constructor(api: KubeApiStandIn, nodeName: string) {
    this.#api = api;
    this.nodeName = nodeName;
  }

  /** Schedules the pod on this node and brings up its sandbox. */
  startPod(pod: KubeletPod): void {
    const namespace = pod.namespace ?? "default";
    const inits = [...(pod.initContainers ?? [])];
    this.#api.createPod({ name: pod.name, namespace, nodeName: this.nodeName, annotations: pod.annotations ?? {}, initContainers: inits, phase: "Pending" });
    this.#api.setPodIP(namespace, pod.name, pod.ip, "Pending");
    if (inits.length === 0) this.#running(namespace, pod.name);
    else this.#writeInit(namespace, pod.name, inits.map((name) => ({ name })));
  }

  /**
   * Brings up the sandbox of a pod already in the API (created through admission: createPodObject): its
   * IP, and its init containers (names from its spec) waiting to run, or Running when it has none.
   */
  adopt(namespace: string, name: string, ip: string): void {
    const inits = ((this.#api.getPod(namespace, name)?.spec.initContainers ?? []) as Array<{ name: string }>).map((c) => c.name);
    this.#api.setPodIP(namespace, name, ip, "Pending");
    if (inits.length === 0) this.#running(namespace, name);
    else this.#writeInit(namespace, name, inits.map((n) => ({ name: n })));
  }

  /** Init containers of the pod that have not exited 0 yet, in order. */
  pendingInitContainers(namespace: string, name: string): string[] {
    return this.#inits(namespace, name).filter((c) => c.exitCode !== 0).map((c) => c.name);
  }

  /** Follows an init container's process: when it exits, the pod's status says so (and may run). */
  follow(namespace: string, name: string, container: string, child: ChildProcess): void {
    const done = () => this.initContainerExited(namespace, name, container, child.exitCode ?? 128);
    if (child.exitCode !== null || child.signalCode !== null) done();
    else child.once("exit", done);
  }

  /** An init container exited with `code`; after the last one exited 0 the pod is Running. */
  initContainerExited(namespace: string, name: string, container: string, code: number): void {
    if (!this.#api.getPod(namespace, name)) return; // deleted meanwhile
    const inits = this.#inits(namespace, name).map((c) => (c.name === container ? { name: c.name, exitCode: code } : c));
    this.#writeInit(namespace, name, inits);
    if (inits.every((c) => c.exitCode === 0)) this.#running(namespace, name);
  }

  #inits(namespace: string, name: string): InitState[] {
    const statuses = (this.#api.getPod(namespace, name)?.status.initContainerStatuses ?? []) as Array<{ name: string; state?: { terminated?: { exitCode: number } } }>;
    return statuses.map((s) => ({ name: s.name, ...(s.state?.terminated ? { exitCode: s.state.terminated.exitCode } : {}) }));
  }

  #writeInit(namespace: string, name: string, inits: readonly InitState[]): void {
    const initContainerStatuses = inits.map((c) => ({
      name: c.name,
      ready: c.exitCode === 0,
      state: c.exitCode === undefined ? { waiting: { reason: "PodInitializing" } } : { terminated: { exitCode: c.exitCode, reason: c.exitCode === 0 ? "Completed" : "Error" } },
    }));
    this.#api.updatePod(namespace, name, { status: { initContainerStatuses } });
  }

  #running(namespace: string, name: string): void {
    this.#api.updatePod(namespace, name, { status: { phase: "Running", containerStatuses: [{ name: "app", ready: true, state: { running: {} } }] } });
  }
}

/** The init container the tutorial's locked pod runs. */
export const SIDECAR_INIT_CONTAINER = "sidecar-init";

export class TutorialWorld {
  readonly prefix: string;
  readonly dir: string;
  /**
   * How the pods are wired to the node (./datapath.ts); extra pods get a veth, except on "calico". Default:
   * env TPROXY_TEST_DATAPATH, else "veth"; the suites that name APP_IP and LOCKED_IP run on "veth" and "calico".
   */
  readonly datapath: Datapath;
  /**
   * The node address podwatch DNATs to (`--redirect-to-address`, as the chart passes status.hostIP); none
   * (REDIRECT) on "veth", where the tests began. Read by every `startPodwatch`.
   */
  redirectToAddress: string | undefined;
  /** Each wired pod's link, by namespace name (not for "veth": its links are removed with the namespaces). */
  readonly links = new Map<string, PodLink>();
  /** The reference CNI network, for "bridge-cni". */
  cni: BridgeCni | undefined;
  node!: Netns;
  internet!: Netns;
  app!: PodNs;
  locked!: PodNs;
  api!: KubeApiStandIn;
  kubelet!: KubeletStandIn;
  kubeconfig!: string;
  ca!: { cert: string; key: string };
  /** The stand-in public CA the internet's servers have their certificates from. */
  publicCaPem!: string;
  filterDir!: string;
  proxy: Proc | undefined;
  podwatch: Proc | undefined;
  readonly #procs: Proc[] = [];
  readonly #etcDirs: string[] = [];
  /** Namespaces of pods added with `addPod`, removed by `close()`. */
  readonly #extraNs: Netns[] = [];

  private constructor(prefix: string, datapath: Datapath) {
    this.prefix = prefix;
    this.datapath = datapath;
    this.redirectToAddress = datapath === "veth" ? undefined : NODE_IP;
    this.dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  }

  /**
   * Removes what a crashed earlier run with this prefix left: processes in its namespaces, the namespaces
   * (the extra pods' `<prefix>x…` ones too), their /etc/netns folders, its temporary folders.
   */
  static async removeLeftovers(prefix: string): Promise<void> {
    await removeStale(prefix);
    for (const entry of readdirSync(tmpdir())) {
      if (entry.startsWith(`${prefix}-`)) rmSync(join(tmpdir(), entry), { recursive: true, force: true });
    }
  }

  /** Builds the namespaces and servers, starts the API stand-in; nothing of tproxy runs yet. */
  static async create(prefix: string, options: { datapath?: Datapath } = {}): Promise<TutorialWorld> {
    const w = new TutorialWorld(prefix, options.datapath ?? datapathFromEnv());
    try {
      await w.#build();
    } catch (err) {
      await w.close();
      throw err;
    }
    return w;
  }

  async #build(): Promise<void> {
    const p = this.prefix;
    this.node = await this.#ns(uniqueName(`${p}n`));
    this.internet = await this.#ns(uniqueName(`${p}i`));
    this.app = { name: "debian-app", ns: await this.#ns(uniqueName(`${p}a`)), ip: APP_IP };
    this.locked = { name: "debian-app-locked", ns: await this.#ns(uniqueName(`${p}l`)), ip: LOCKED_IP };

    if (this.datapath === "veth") {
      await link(this.app.ns, [`${APP_IP}/24`, "fd90:1::2/64"], this.node, ["10.90.1.1/24", "fd90:1::1/64"]);
      await link(this.locked.ns, [`${LOCKED_IP}/24`, `${LOCKED_IP6}/64`], this.node, ["10.90.3.1/24", "fd90:3::1/64"]);
    }
    const { bIf } = await link(this.node, [`${NODE_IP}/24`, "fd90:2::1/64"], this.internet, [`${GOOGLE_IP}/24`, `${STORAGE_IP}/24`, `${DNS_IP}/24`, `${INTERNET_IP6}/64`]);
    await this.internet.must("ip", ["addr", "add", `${METADATA_IP}/32`, "dev", bIf]);
    await this.internet.must("ip", ["addr", "add", `${SERVICE_IP}/32`, "dev", bIf]);
    await enableForwarding(this.node);
    await this.node.must("ip", ["route", "add", `${METADATA_IP}/32`, "via", GOOGLE_IP]);
    await this.node.must("ip", ["route", "add", `${SERVICE_IP}/32`, "via", GOOGLE_IP]);
    if (this.datapath === "veth") {
      await this.app.ns.must("ip", ["route", "add", "default", "via", "10.90.1.1"]);
      await this.locked.ns.must("ip", ["route", "add", "default", "via", "10.90.3.1"]);
      for (const pod of [this.app.ns, this.locked.ns]) await pod.must("ip", ["-6", "route", "add", "default", "via", pod === this.app.ns ? "fd90:1::1" : "fd90:3::1"]);
    } else {
      // The bridge: host-local's addresses (IPv4), in the order a node would start the two pods. Calico:
      // the tutorial's addresses, as /32 and /128.
      if (this.datapath === "bridge-cni") this.cni = new BridgeCni(this.node, this.dir);
      // A real node's default route (via its uplink's router, here the internet host): Calico's proxy ARP
      // answers for 169.254.1.1 only with a route to it.
      else await this.node.must("ip", ["route", "add", "default", "via", GOOGLE_IP]);
      for (const [pod, ip6] of [[this.app, "fd90:1::2"], [this.locked, LOCKED_IP6]] as const) {
        const wired = this.cni ? await this.cni.add(pod.ns) : await calicoLike(this.node, pod.ns, pod.ip, ip6);
        this.links.set(pod.ns.name, wired);
        pod.ip = wired.ip;
      }
    }
    await this.internet.must("ip", ["route", "add", "default", "via", NODE_IP]);
    await this.internet.must("ip", ["-6", "route", "add", "default", "via", "fd90:2::1"]);
    for (const ns of [this.node, this.app.ns, this.locked.ns]) ns.hosts(TUTORIAL_HOSTS);

    // The "internet": servers with certificates from a stand-in public CA.
    const publicCa = new TestCa(this.dir, "public");
    const servers: Array<[string, string, string[]]> = [
      ["www.google.com", GOOGLE_IP, ["www.google.com", GOOGLE_IP]],
      ["storage.googleapis.com", STORAGE_IP, ["storage.googleapis.com", STORAGE_IP]],
      ["metadata", METADATA_IP, ["metadata", "metadata.google.internal", METADATA_IP]],
      ["kubernetes.default", SERVICE_IP, ["kubernetes.default", SERVICE_IP]],
    ];
    for (const [name, ip, alt] of servers) {
      const cert = publicCa.issue(name.replace(/\W/g, "-"), alt);
      const proc = this.spawn(this.internet, process.execPath, [join(REPO, "test/support/upstream-server.ts"), name, ip, "80", "443", cert.certPath, cert.keyPath]);
      await proc.waitForLine(/^listening/);
    }
    // The node and the unlocked pod trust the public CA, as every real machine trusts the web's roots.
    this.publicCaPem = readFileSync(publicCa.certPath, "utf8");
    this.#trust(this.node, this.publicCaPem);
    this.#trust(this.app.ns, this.publicCaPem);

    this.api = await KubeApiStandIn.start();
    this.kubelet = new KubeletStandIn(this.api, NODE_NAME);
    this.kubeconfig = (await this.api.exposeIn(this.node)).kubeconfigPath;
  }

  #extraPods = 0;

  /** Another pod, linked to the node on its own subnet (10.90.(4+n).0/24). */
  async addPod(name: string): Promise<PodNs> {
    const n = 4 + this.#extraPods++;
    const ns = await this.#ns(uniqueName(`${this.prefix}x`));
    this.#extraNs.push(ns);
    if (this.datapath === "calico") {
      this.links.set(ns.name, await calicoLike(this.node, ns, `10.90.${n}.2`));
    } else {
      await link(ns, [`10.90.${n}.2/24`], this.node, [`10.90.${n}.1/24`]);
      await ns.must("ip", ["route", "add", "default", "via", `10.90.${n}.1`]);
    }
    ns.hosts(TUTORIAL_HOSTS);
    return { name, ns, ip: `10.90.${n}.2` };
  }

  /**
   * A pod's network namespace with nothing in it yet (a sandbox the CNI chain is to wire), its hosts file
   * set as every pod's; removed by `close()`.
   */
  async sandboxNs(): Promise<Netns> {
    const ns = await this.#ns(uniqueName(`${this.prefix}s`));
    this.#extraNs.push(ns);
    ns.hosts(TUTORIAL_HOSTS);
    return ns;
  }

  /** Runs another test server in the internet namespace (e.g. on other ports, or on the IPv6 address). */
  async extraServer(name: string, address: string, httpPort: number, httpsPort: number): Promise<Proc> {
    const ca = new TestCa(this.dir, `extra-${httpPort}`);
    const cert = ca.issue(name.replace(/\W/g, "-"), [name]);
    const proc = this.spawn(this.internet, process.execPath, [join(REPO, "test/support/upstream-server.ts"), name, address, String(httpPort), String(httpsPort), cert.certPath, cert.keyPath]);
    await proc.waitForLine(/^listening/);
    return proc;
  }

  async #ns(name: string): Promise<Netns> {
    const ns = await Netns.create(name);
    this.#etcDirs.push(`/etc/netns/${name}`);
    return ns;
  }

  /** Mounts a CA bundle over the namespace's /etc/ssl/certs/ca-certificates.crt (as the tutorial's volume does). */
  #trust(ns: Netns, pem: string): void {
    const dir = `/etc/netns/${ns.name}/ssl/certs`;
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "ca-certificates.crt"), pem);
  }

  /** A process started elsewhere that `close()` is to stop too. */
  adopt(p: Proc): Proc {
    this.#procs.push(p);
    return p;
  }

  spawn(ns: Netns, cmd: string, args: string[], env: Record<string, string> = {}): Proc {
    const p = new Proc(ns.spawn(cmd, args, { env: { ...process.env, ...env } }));
    this.#procs.push(p);
    return p;
  }

  /** What `helm install` sets up on the node: the CA (`tproxy ca create`), the filter ConfigMap, the DaemonSet pod. */
  async installTproxy(options: { filterSource?: string; proxyArgs?: string[] } = {}): Promise<void> {
    this.ca = { cert: join(this.dir, "tproxy-ca.crt"), key: join(this.dir, "tproxy-ca.key") };
    await this.node.must(process.execPath, [TPROXY_CLI, "ca", "create", "--cert", this.ca.cert, "--key", this.ca.key]);
    this.filterDir = join(this.dir, "filter");
    writeConfigMap(this.filterDir, { "filter.ts": options.filterSource ?? readFileSync(CHART_FILTER, "utf8") });
    await this.startPodwatch();
    await this.startProxy(options.proxyArgs);
  }

  async startPodwatch(extra: string[] = []): Promise<Proc> {
    // Outside a cluster the client finds the API through KUBECONFIG. The resync is longer than any
    // suite, so what the tests see follows from pod events (the chart's 60s would hide a lost event).
    // The lock's init container is named as this world's pods name it; the resolver is the chart's lock.allowDns.
    this.podwatch = this.spawn(this.node, process.execPath, [
      PODWATCH_CLI, "--node-name", NODE_NAME, "--proxy-port", String(TRANSPARENT_PORT), "--resync", "10m", "--metrics-port", "15172",
      "--init-container", SIDECAR_INIT_CONTAINER, "--allow-dns", DNS_IP,
      ...(this.redirectToAddress ? ["--redirect-to-address", this.redirectToAddress] : []), ...extra,
    ], { KUBECONFIG: this.kubeconfig });
    return this.podwatch;
  }

  async startProxy(extra: string[] = []): Promise<Proc> {
    this.proxy = this.spawn(this.node, process.execPath, [
      TPROXY_CLI, "run", "--ca-cert", this.ca.cert, "--ca-key", this.ca.key, "--filter", join(this.filterDir, "filter.ts"),
      "--transparent-port", String(TRANSPARENT_PORT), "--metrics-port", String(METRICS_PORT), ...extra,
    ]);
    await this.proxy.waitForLine(/tproxy listening/, 15_000);
    return this.proxy;
  }

  /** The kubelet's ConfigMap volume update (what `helm upgrade` with an edited filter leads to). */
  updateFilter(source: string): void {
    writeConfigMap(this.filterDir, { "filter.ts": source });
  }

  /**
   * Schedules a pod on the node and gives it its IP, as the scheduler and kubelet do. An annotated pod
   * is the tutorial's locked pod: it has the sidecar-init init container, so it stays Pending (with its
   * IP) until `sidecarInit(pod)` exited 0; any other pod runs at once. `initContainers` overrides that.
   */
  schedulePod(pod: PodNs, annotated: boolean, options: { initContainers?: readonly string[] } = {}): void {
    this.kubelet.startPod({
      name: pod.name,
      ip: pod.ip,
      annotations: annotated ? { [ANNOTATION]: "true" } : {},
      initContainers: options.initContainers ?? (annotated ? [SIDECAR_INIT_CONTAINER] : []),
    });
  }

  /**
   * Runs the real init container in the pod's namespace; the returned process shows its exit and output.
   * When the pod is scheduled with a sidecar-init init container, its exit is what the kubelet reports:
   * exit 0 lets the pod run.
   */
  sidecarInit(pod: PodNs = this.locked, args: string[] = ["--block-cidr", SERVICE_CIDR, "--allow-dns", DNS_IP, "--wait-timeout", "30s"]): Proc {
    const proc = this.spawn(pod.ns, process.execPath, [SIDECAR_CLI, ...args]);
    if (this.kubelet?.pendingInitContainers("default", pod.name).includes(SIDECAR_INIT_CONTAINER)) {
      this.kubelet.follow("default", pod.name, SIDECAR_INIT_CONTAINER, proc.child);
    }
    return proc;
  }

  /**
   * `kubectl apply -f examples/debian-app-locked-manual.yaml`: the annotated pod is scheduled, gets the
   * root-certs volume, and its init container runs to its end. Resolves with the init container.
   */
  async deployLocked(pod: PodNs = this.locked): Promise<Proc> {
    this.schedulePod(pod, true);
    this.mountRootCerts(pod);
    const init = this.sidecarInit(pod);
    if (init.child.exitCode === null) await new Promise((r) => init.child.once("exit", r));
    return init;
  }

  /** The tutorial's cluster with tproxy installed, `debian-app` running and `debian-app-locked` locked. */
  static async installed(prefix: string, options: { datapath?: Datapath } = {}): Promise<TutorialWorld> {
    await TutorialWorld.removeLeftovers(prefix);
    const world = await TutorialWorld.create(prefix, options);
    try {
      await world.installTproxy();
      world.schedulePod(world.app, false);
      const init = await world.deployLocked();
      if (init.child.exitCode !== 0) throw new Error(`sidecar-init exited ${init.child.exitCode}:\n${init.output}`);
    } catch (err) {
      await world.close();
      throw err;
    }
    return world;
  }

  /** An unlocked pod trusts the web's roots (the stand-in public CA), as its image's CA bundle does. */
  trustPublicCa(pod: PodNs): void {
    this.#trust(pod.ns, this.publicCaPem);
  }

  /** Locked pods trust the tproxy CA through the root-certs ConfigMap mounted over /etc/ssl/certs. */
  mountRootCerts(pod: PodNs = this.locked): void {
    this.#trust(pod.ns, readFileSync(this.ca.cert, "utf8"));
  }

  /** One round of the example app's loop (examples/debian-app.yaml): two requests and one ping. */
  async appRound(pod: PodNs): Promise<string[]> {
    const lines: string[] = [];
    for (const url of ["https://www.google.com", BUCKET_URL]) {
      const r = await pod.ns.run("curl", ["-s", "-o", "/dev/null", "--max-time", "5", "-w", "%{http_code}", url], { timeoutMs: 10_000 });
      lines.push(`${url}: ${r.stdout}`);
    }
    const ping = await pod.ns.run("ping", ["-c", "1", "-W", "1", "www.google.com"], { timeoutMs: 5000 });
    lines.push(...`${ping.stdout}${ping.stderr}`.split("\n").filter((l) => /^(PING|64 bytes|ping:)/.test(l)));
    return lines;
  }

  curlFrom(pod: PodNs, args: string[], timeoutS = 5): Promise<RunResult> {
    return pod.ns.run("curl", ["-sS", "--max-time", String(timeoutS), ...args], { timeoutMs: (timeoutS + 5) * 1000 });
  }

  async waitForRedirect(ip: string, present = true, timeoutMs = 10_000): Promise<void> {
    await waitFor(`the node's REDIRECT for ${ip} to be ${present ? "present" : "gone"}`, async () => {
      const rules = await this.node.must("iptables-save", ["-t", "nat"]);
      return rules.includes(`-s ${ip}/32`) === present;
    }, timeoutMs, 100);
  }

  async close(): Promise<void> {
    for (const p of this.#procs) await p.stop("SIGKILL").catch(() => undefined);
    await this.api?.close().catch(() => undefined);
    // CNI DEL before the namespaces go, as a runtime tears a sandbox down (host-local frees the address).
    for (const l of this.links.values()) await l.remove().catch(() => undefined);
    for (const ns of [...this.#extraNs, this.app?.ns, this.locked?.ns, this.node, this.internet]) await ns?.destroy().catch(() => undefined);
    for (const d of this.#etcDirs) rmSync(d, { recursive: true, force: true });
    rmSync(this.dir, { recursive: true, force: true });
  }
}
