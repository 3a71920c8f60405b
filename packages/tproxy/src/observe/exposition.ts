// The one place the proxy's metrics become Prometheus text: prom-client sums the parts (the supervisor's own
// counters, the process metrics, each serving thread's counters) with each metric's aggregator, and
// renders them. Loaded only where /metrics is served.
import { AggregatorRegistry, Registry, collectDefaultMetrics } from "prom-client";
import type { MetricJson } from "./metrics.ts";

/** Process-wide metrics (CPU, memory, file descriptors, event loop lag of this thread), `tproxy_` prefixed. */
export function processMetrics(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "tproxy_" });
  return registry;
}

export const CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

/** Sums metrics given in prom-client's JSON form, part by part, and renders the Prometheus text. */
export async function render(process: Registry, parts: MetricJson[][]): Promise<string> {
  const own = await process.getMetricsAsJSON();
  return AggregatorRegistry.aggregate([own, ...parts] as Parameters<typeof AggregatorRegistry.aggregate>[0]).metrics();
}
