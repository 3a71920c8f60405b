// Prometheus metrics of the proxy (prom-client).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class ProxyMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: "tproxy_requests_total", help: "Requests handled, by decision and status code", labelNames: ["decision", "status"] as const, registers: [this.registry] });
  readonly duration = new Histogram({
    name: "tproxy_request_duration_seconds",
    help: "Time from request headers to the end of the response, by decision",
    labelNames: ["decision"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly openConnections = new Gauge({ name: "tproxy_open_connections", help: "Client connections open, by mode", labelNames: ["mode"] as const, registers: [this.registry] });
  readonly rejectedConnections = new Counter({ name: "tproxy_rejected_connections_total", help: "Client connections closed by the proxy, by reason: unknown-protocol (neither TLS nor HTTP, or a refused TLS server name), tls-handshake, client-limit (--max-client-connections), handshake-timeout, header-timeout, request-timeout", labelNames: ["reason"] as const, registers: [this.registry] });
  readonly certCacheEntries = new Gauge({ name: "tproxy_certificate_cache_entries", help: "Leaf certificates held in memory", registers: [this.registry] });
  readonly certCacheLookups = new Counter({ name: "tproxy_certificate_cache_lookups_total", help: "Leaf certificate lookups, by result (hit or mint)", labelNames: ["result"] as const, registers: [this.registry] });
  readonly filterReloads = new Counter({ name: "tproxy_filter_reloads_total", help: "Filter loads, by result (success or error)", labelNames: ["result"] as const, registers: [this.registry] });
  readonly filterErrors = new Counter({ name: "tproxy_filter_errors_total", help: "Hook calls that failed, by kind (throw or timeout)", labelNames: ["kind"] as const, registers: [this.registry] });
  readonly filterWorkerRestarts = new Counter({ name: "tproxy_filter_worker_restarts_total", help: "Filter worker threads replaced because a hook did not yield", registers: [this.registry] });
  readonly filterInfo = new Gauge({ name: "tproxy_filter_info", help: "The filter in force (value 1), by source hash", labelNames: ["hash"] as const, registers: [this.registry], aggregator: "max" });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "tproxy_" });
  }

  setFilter(hash: string): void {
    this.filterInfo.reset();
    this.filterInfo.set({ hash }, 1);
  }
}
