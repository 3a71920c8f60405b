// Wires the parts: pod informers → coalescing reconciler → iptables; plus /healthz and /metrics.
import { KubeConfig } from "@kubernetes/client-node";
import { chooseTools, execRunner, ToolsMissing, type Chosen } from "@tproxy/iptables";
import { pino, type Logger } from "pino";
import { systemClock, type Clock } from "./clock.ts";
import type { PodwatchConfig } from "./config.ts";
import { PodwatchError } from "./errors.ts";
import { ExecIptables, type IptablesRunner } from "./iptables.ts";
import { createMetrics, type Metrics } from "./metrics.ts";
import { Reconciler } from "./reconciler.ts";
import { startStatusServer, type Health, type StatusServer } from "./server.ts";
import { PodWatcher } from "./watcher.ts";

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
    allowDns: config.allowDns,
    standardPort: config.standardPort,
    resyncMs: config.resyncMs,
  });
  watcher = new PodWatcher({
    kubeConfig,
    nodeName: config.nodeName,
    namespaces: config.namespaces,
    clock,
    log,
    metrics,
    onChange: (reason) => reconciler.enqueue(reason),
    onSynced: () => reconciler.start(),
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

  let server: StatusServer | undefined;
  if (!deps.noStatusServer) {
    server = await startStatusServer({ port: config.metricsPort, host: config.metricsAddress, registry: metrics.registry, health });
    log.info({ port: server.port }, "serving /healthz and /metrics");
  }
  log.info(
    { node: config.nodeName, namespaces: config.namespaces.length > 0 ? config.namespaces : "all", annotation: config.annotation, initContainer: config.initContainer, allowDns: config.allowDns.length > 0 ? config.allowDns : "port 53 anywhere", standardPort: config.standardPort, proxyPort: config.proxyPort, redirectTo: config.redirectTo, resyncMs: config.resyncMs },
    "watching pods of this node",
  );
  w.start();

  return {
    statusPort: server?.port,
    reconciler,
    watcher: w,
    health,
    async stop() {
      await w.stop();
      await reconciler.stop();
      await server?.close();
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
