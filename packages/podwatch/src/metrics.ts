// Prometheus metrics of one podwatch instance, in its own registry.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export interface Metrics {
  readonly registry: Registry;
  readonly podsSelected: Gauge;
  readonly rules: Gauge<"family">;
  readonly applyDuration: Histogram;
  readonly applies: Counter<"family">;
  readonly enforceRules: Gauge<"family">;
  readonly enforceApplies: Counter<"family">;
  readonly applyErrors: Counter<"family">;
  readonly watchRestarts: Counter;
  readonly synced: Gauge;
}

/** Creates the metrics; `defaults` adds the process metrics (off in unit tests). */
export function createMetrics(opts: { defaults?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (opts.defaults ?? true) collectDefaultMetrics({ register: registry, prefix: "tproxy_podwatch_" });
  const registers = [registry];
  return {
    registry,
    podsSelected: new Gauge({ name: "tproxy_podwatch_pods_selected", help: "Pod IPs of this node that are redirected to the proxy", registers }),
    rules: new Gauge({ name: "tproxy_podwatch_rules", help: "Rules in the TPROXY-REDIRECT chain after the last successful apply", labelNames: ["family"], registers }),
    applyDuration: new Histogram({
      name: "tproxy_podwatch_apply_duration_seconds",
      help: "Time of one reconcile: read the kernel's nat and filter tables, and restore what differs",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    applies: new Counter({ name: "tproxy_podwatch_applies_total", help: "iptables-restore transactions that changed the chain", labelNames: ["family"], registers }),
    enforceRules: new Gauge({ name: "tproxy_podwatch_enforce_rules", help: "Rules in the filter chain TPROXY-ENFORCE after the last successful apply", labelNames: ["family"], registers }),
    enforceApplies: new Counter({ name: "tproxy_podwatch_enforce_applies_total", help: "iptables-restore transactions that changed the TPROXY-ENFORCE chain", labelNames: ["family"], registers }),
    applyErrors: new Counter({ name: "tproxy_podwatch_apply_errors_total", help: "Failed iptables-save or iptables-restore runs (either table)", labelNames: ["family"], registers }),
    watchRestarts: new Counter({ name: "tproxy_podwatch_watch_restarts_total", help: "Pod watch restarts after an error", registers }),
    synced: new Gauge({ name: "tproxy_podwatch_synced", help: "1 once the initial pod list has been received", registers }),
  };
}
