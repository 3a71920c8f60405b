// Wires the parts: pod informers → coalescing reconciler → iptables; plus /healthz and /metrics.
import { KubeConfig } from "@kubernetes/client-node";
import { rm, writeFile } from "node:fs/promises";
import { chooseTools, CNI_UNINSTALL_MARKER_SUFFIX, execRunner, ToolsMissing, type Chosen } from "@tproxy/iptables";
import { pino, type Logger } from "pino";
import { systemClock, type Clock } from "./clock.ts";
import type { PodwatchConfig } from "./config.ts";
import { PodwatchError } from "./errors.ts";
import { ExecIptables, type IptablesRunner } from "./iptables.ts";
import { daemonSetState, tcpMigrateReq, type DaemonSetState } from "./lifecycle.ts";
import { createMetrics, type Metrics } from "./metrics.ts";
import { Reconciler } from "./reconciler.ts";
import { startStatusServer, type Health, type StatusServer } from "./server.ts";
import { IdentityPublisher } from "./identity.ts";
import { PodWatcher } from "./watcher.ts";
import { startCniSocket, type CniSocket } from "./cni-socket.ts";

/** Side effects podwatch uses; each defaults to the real thing. */
export interface PodwatchDeps {
  /** Default: `loadFromDefault()` (KUBECONFIG, ~/.kube/config, or the in-cluster service account). */
  readonly kubeConfig?: KubeConfig;
  /** Default: the `iptables-*` / `ip6tables-*` binaries of the configured (or detected) backend, on PATH. */
  readonly runner?: IptablesRunner;
  readonly clock?: Clock;
  readonly log?: Logger;
  readonly metrics?: Metrics;
  /** Skip the HTTP status server (library use). Default false. */
  readonly noStatusServer?: boolean;
}

export interface Podwatch {
  /** Port of /healthz and /metrics (undefined with `noStatusServer`). */
  readonly statusPort: number | undefined;
  readonly reconciler: Reconciler;
  readonly watcher: PodWatcher;
  health(): Health;
  /** Stops watching and serving. The chain in the kernel is left as it is (fail closed). */
  stop(): Promise<void>;
  /**
   * The stop of SIGTERM: stops, then asks the API whether this podwatch's DaemonSet still exists. If it
   * does (a rolling update, a restart) or the answer is unclear, the chains stay for the next podwatch;
   * if it is gone (an uninstall), they are taken away, but for the locked pods still on this node.
   */
  shutdown(): Promise<void>;
}

export async function startPodwatch(config: PodwatchConfig, deps: PodwatchDeps = {}): Promise<Podwatch> {
  const log = deps.log ?? pino({ name: "tproxy-podwatch" });
  const clock = deps.clock ?? systemClock;
  const metrics = deps.metrics ?? createMetrics();
  let kubeConfig = deps.kubeConfig;
  if (!kubeConfig) {
    kubeConfig = new KubeConfig();
    kubeConfig.loadFromDefault();
  }

  const runner = deps.runner ?? (await nodeIptables(config, log));
  const kc = kubeConfig;
  let watcher: PodWatcher | undefined;
  const reconciler = new Reconciler({
    pods: () => watcher?.pods() ?? [],
    runner,
    clock,
    log,
    metrics,
    annotation: config.annotation,
    initContainer: config.initContainer,
    nodeName: config.nodeName,
    proxyPort: config.proxyPort,
    redirectTo: config.redirectTo,
    guardPort: config.proxyPort,
    allowDns: config.allowDns,
    standardPort: config.standardPort,
    resyncMs: config.resyncMs,
  });
  const identityFile = config.podIdentityFile;
  const identity = identityFile === undefined ? undefined : new IdentityPublisher({
    path: identityFile,
    nodeName: config.nodeName,
    pods: () => watcher?.pods() ?? [],
    watching: () => watcher?.watching ?? false,
    clock,
    log,
  });
  watcher = new PodWatcher({
    kubeConfig,
    nodeName: config.nodeName,
    namespaces: config.namespaces,
    clock,
    log,
    metrics,
    onChange: (reason) => {
      reconciler.enqueue(reason);
      identity?.changed();
    },
    onSynced: () => {
      reconciler.start();
      identity?.changed();
    },
  });
  const w = watcher;

  const health = (): Health => {
    const lastApplyOk = reconciler.lastOk ?? false;
    const at = reconciler.lastSuccessAt;
    return {
      healthy: w.synced && lastApplyOk,
      synced: w.synced,
      lastApplyOk,
      ...(reconciler.lastError !== undefined ? { lastError: reconciler.lastError } : {}),
      ...(at !== undefined ? { lastSuccessAgoSeconds: Math.round((clock.now() - at) / 100) / 10 } : {}),
    };
  };

  const migrate = await tcpMigrateReq();
  if (migrate === "0") {
    log.warn(
      "net.ipv4.tcp_migrate_req is 0 on this node: when a rolling update stops the old proxy, connections queued on its listeners are reset " +
        "instead of moving to the new one's; set it to 1 on the node (sysctl -w net.ipv4.tcp_migrate_req=1, Linux 5.14+) for a hand-over that loses none",
    );
  }
  let server: StatusServer | undefined;
  if (!deps.noStatusServer) {
    server = await startStatusServer({ port: config.metricsPort, host: config.metricsAddress, registry: metrics.registry, health });
    log.info({ port: server.port }, "serving /healthz and /metrics");
  }
  log.info(
    { node: config.nodeName, namespaces: config.namespaces.length > 0 ? config.namespaces : "all", annotation: config.annotation, initContainer: config.initContainer, allowDns: config.allowDns.length > 0 ? config.allowDns : "port 53 anywhere", standardPort: config.standardPort, proxyPort: config.proxyPort, redirectTo: config.redirectTo, resyncMs: config.resyncMs, podIdentityFile: identityFile },
    "watching pods of this node",
  );
  w.start();
  let cniSocket: CniSocket | undefined;
  if (config.cniSocket !== undefined) {
    // A marker of an earlier uninstall must not take the plugin off the node of this new install.
    await rm(`${config.cniSocket}${CNI_UNINSTALL_MARKER_SUFFIX}`, { force: true });
    cniSocket = await startCniSocket({ path: config.cniSocket, pods: () => w.pods(), synced: () => w.synced, annotation: config.annotation, initContainer: config.initContainer, namespaces: config.namespaces });
    log.info({ socket: config.cniSocket }, "answering tproxy-cni on its socket");
  }

  // Whether this podwatch could read its DaemonSet once it had started. `helm uninstall` deletes the
  // DaemonSet and, right after it, the RoleBinding and ServiceAccount that let podwatch read it; the pods
  // get SIGTERM only once the garbage collector deletes them, by when the API often refuses (401 or 403)
  // rather than says 404. A podwatch that could read its DaemonSet and no longer may is seeing its
  // release removed: that counts as gone. One that never could (RBAC missing) tells nothing.
  let dsReadable = false;
  const probeDaemonSet = async (): Promise<void> => {
    const ref = config.daemonSet;
    if (!ref) return;
    const ds = await withTimeout<DaemonSetState>(daemonSetState(kc, ref), 5000, { state: "unknown", why: "the API did not answer within 5 s" });
    dsReadable = ds.state === "present";
    if (!dsReadable) log.warn({ daemonset: `${ref.namespace}/${ref.name}`, state: ds.state, why: "why" in ds ? ds.why : undefined }, "cannot read this podwatch's daemonset at start: an uninstall will leave the node's chains in place");
  };

  const finalStop = async (): Promise<void> => {
    const ref = config.daemonSet;
    if (!ref) {
      log.info("stopping; the chains stay as they are (no --daemonset to tell an uninstall from a restart)");
      return;
    }
    let ds = await withTimeout<DaemonSetState>(daemonSetState(kc, ref), 5000, { state: "unknown", why: "the API did not answer within 5 s" });
    if (ds.state === "refused" && dsReadable) ds = { state: "gone", why: `${ds.why}, though it was readable at start: the release's RBAC is being deleted` };
    if (ds.state === "present") {
      log.info({ daemonset: `${ref.namespace}/${ref.name}` }, "stopping; the daemonset is still there (a restart or rolling update): the chains stay for the next podwatch");
      return;
    }
    if (ds.state === "unknown" || ds.state === "refused") {
      log.warn({ why: ds.why }, "stopping; cannot tell an uninstall from a restart: the chains stay as they are");
      return;
    }
    if (config.cniSocket !== undefined) {
      // The installer container (lock.mode cni) takes tproxy-cni off the node on this marker: left there,
      // with no podwatch to answer, it would fail every new pod's sandbox on this node.
      const marker = `${config.cniSocket}${CNI_UNINSTALL_MARKER_SUFFIX}`;
      await writeFile(marker, `${ds.why}\n`).then(
        () => log.info({ marker }, "uninstall: told the CNI installer to take tproxy-cni off this node"),
        (err: unknown) => log.error({ marker, err: String(err) }, "uninstall: cannot leave the CNI uninstall marker; tproxy-cni stays in the node's CNI configuration"),
      );
    }
    if (!w.synced) {
      log.warn({ why: ds.why }, "uninstall, but the pod list never arrived: which pods are locked is unknown, so the chains stay as they are");
      return;
    }
    const { keptFor } = await reconciler.uninstall();
    if (keptFor.length > 0) {
      log.warn(
        { why: ds.why, lockedPods: keptFor },
        "uninstall: locked pods still run on this node, so their redirect and enforce rules stay (their lock lets 80/443 out for the node to redirect: without the rules it would leave unfiltered); " +
          "nothing removes those rules any more: delete these pods, then the chains TPROXY-REDIRECT (nat) and TPROXY-ENFORCE (filter) by hand, or install tproxy again",
      );
    } else {
      log.info({ why: ds.why }, "uninstall: every chain and jump of podwatch's removed from this node");
    }
  };

  const dsProbed = probeDaemonSet().catch((err: unknown) => log.warn({ err: String(err) }, "reading this podwatch's daemonset at start failed"));

  return {
    statusPort: server?.port,
    reconciler,
    watcher: w,
    health,
    async stop() {
      await cniSocket?.close();
      await w.stop();
      await identity?.stop();
      await reconciler.stop();
      await server?.close();
    },
    async shutdown() {
      await dsProbed;
      await cniSocket?.close();
      await w.stop();
      await identity?.stop();
      await reconciler.stop();
      try {
        await finalStop();
      } finally {
        await server?.close();
      }
    },
  };
}

/**
 * The node's iptables programs: the suffixed ones of the backend configured, or of the one detected
 * (the backend kube-proxy uses), called directly. Logs the choice and why.
 */
async function nodeIptables(config: PodwatchConfig, log: Logger): Promise<ExecIptables> {
  let chosen: Chosen;
  try {
    chosen = await chooseTools(config.iptablesBackend, execRunner({ timeoutMs: 30_000 }));
  } catch (err) {
    if (err instanceof ToolsMissing) {
      throw new PodwatchError("ERR_IPTABLES_MISSING", `${err.message}; the podwatch image needs the iptables package${config.iptablesBackend === "auto" ? "" : ", or choose another --iptables-backend"}`, { cause: err });
    }
    throw err;
  }
  const { tools, reason } = chosen;
  log.info({ backend: tools.backend, reason, ipv4: [tools.ipv4.save, tools.ipv4.restore], ipv6: [tools.ipv6.save, tools.ipv6.restore] }, `iptables backend ${tools.backend}: ${reason}`);
  return new ExecIptables({ tools });
}

function withTimeout<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => resolve(fallback), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
