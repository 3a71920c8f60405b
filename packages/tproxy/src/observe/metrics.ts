// The proxy's counters, kept as plain numbers where requests are served, and handed to prom-client only
// where they are exposed (exposition.ts): in the supervisor, which sums its serving threads' counters into
// its one registry. A serving thread thus carries no Prometheus library (about 15 MiB per isolate, measured
// with `npm run bench`), and counting a request is a few map lookups.
//
// toJSON() returns prom-client's own JSON form (Registry.getMetricsAsJSON), so prom-client's
// AggregatorRegistry.aggregate sums the threads exactly as it sums cluster workers.

type Labels<K extends string> = Partial<Record<K, string>>;

/** prom-client's JSON form of one metric. */
export interface MetricJson {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  aggregator: "sum" | "max";
  values: { labels: Record<string, string | number>; value: number; metricName?: string }[];
}

function keyOf(labels: Record<string, string | undefined> | undefined): string {
  if (!labels) return "";
  const names = Object.keys(labels);
  if (names.length > 1) names.sort();
  let k = "";
  for (const name of names) k += `${name}\u0000${labels[name] ?? ""}\u0001`;
  return k;
}

/** A counter or a gauge: one number per label set, exposed in prom-client's JSON form. */
abstract class Series<K extends string> {
  readonly name: string;
  readonly help: string;
  protected abstract readonly type: "counter" | "gauge";
  protected readonly aggregator: "sum" | "max" = "sum";
  protected readonly values = new Map<string, { labels: Labels<K>; value: number }>();
  constructor(name: string, help: string) {
    this.name = name;
    this.help = help;
  }
  protected slot(labels: Labels<K> | undefined): { labels: Labels<K>; value: number } {
    const key = keyOf(labels);
    let s = this.values.get(key);
    if (!s) {
      s = { labels: { ...labels } as Labels<K>, value: 0 };
      this.values.set(key, s);
    }
    return s;
  }
  toJSON(): MetricJson {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: [...this.values.values()].map((s) => ({ labels: s.labels as Record<string, string>, value: s.value })) };
  }
}

export class Counter<K extends string = never> extends Series<K> {
  protected readonly type = "counter";
  inc(labels?: Labels<K>, by = 1): void {
    this.slot(labels).value += by;
  }
}

export class Gauge<K extends string = never> extends Series<K> {
  protected readonly type = "gauge";
  protected override readonly aggregator: "sum" | "max";
  constructor(name: string, help: string, aggregator: "sum" | "max" = "sum") {
    super(name, help);
    this.aggregator = aggregator;
  }
  inc(labels?: Labels<K>, by = 1): void {
    this.slot(labels).value += by;
  }
  dec(labels?: Labels<K>, by = 1): void {
    this.slot(labels).value -= by;
  }
  set(labelsOrValue: Labels<K> | number, value?: number): void {
    if (typeof labelsOrValue === "number") this.slot(undefined).value = labelsOrValue;
    else this.slot(labelsOrValue).value = value ?? 0;
  }
  reset(): void {
    this.values.clear();
  }
}

export class Histogram<K extends string = never> {
  readonly name: string;
  readonly help: string;
  readonly buckets: readonly number[];
  readonly #series = new Map<string, { labels: Labels<K>; counts: number[]; sum: number; count: number }>();
  constructor(name: string, help: string, buckets: readonly number[]) {
    this.name = name;
    this.help = help;
    this.buckets = buckets;
  }
  observe(labels: Labels<K>, value: number): void {
    const key = keyOf(labels);
    let s = this.#series.get(key);
    if (!s) {
      s = { labels: { ...labels }, counts: new Array<number>(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.#series.set(key, s);
    }
    // Counted in the first bucket that holds it; made cumulative when exposed.
    const i = this.buckets.findIndex((b) => value <= b);
    if (i >= 0) s.counts[i]! += 1;
    s.sum += value;
    s.count += 1;
  }
  toJSON(): MetricJson {
    const values: MetricJson["values"] = [];
    for (const s of this.#series.values()) {
      let cumulative = 0;
      this.buckets.forEach((le, i) => {
        cumulative += s.counts[i]!;
        values.push({ labels: { ...(s.labels as Record<string, string>), le }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      values.push({ labels: { ...(s.labels as Record<string, string>), le: "+Inf" }, value: s.count, metricName: `${this.name}_bucket` });
      values.push({ labels: { ...(s.labels as Record<string, string>) }, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...(s.labels as Record<string, string>) }, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: "histogram", aggregator: "sum", values };
  }
}

/**
 * Adds the counters and histograms of `from` into `into` (gauges are a thread's present state and are left
 * out): what the supervisor keeps of a serving thread that is gone, so that sums never go backwards.
 */
export function addCounts(into: MetricJson[], from: readonly MetricJson[]): MetricJson[] {
  for (const m of from) {
    if (m.type === "gauge") continue;
    let target = into.find((t) => t.name === m.name);
    if (!target) {
      target = { ...m, values: [] };
      into.push(target);
    }
    for (const v of m.values) {
      const key = `${v.metricName ?? ""}|${keyOf(v.labels as Record<string, string>)}`;
      const same = target.values.find((t) => `${t.metricName ?? ""}|${keyOf(t.labels as Record<string, string>)}` === key);
      if (same) same.value += v.value;
      else target.values.push({ ...v, labels: { ...v.labels } });
    }
  }
  return into;
}

export class ProxyMetrics {
  readonly requests = new Counter<"decision" | "status">("tproxy_requests_total", "Requests handled, by decision and status code");
  readonly duration = new Histogram<"decision">(
    "tproxy_request_duration_seconds",
    "Time from request headers to the end of the response, by decision",
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  );
  readonly openConnections = new Gauge<"mode">("tproxy_open_connections", "Client connections open, by mode");
  readonly rejectedConnections = new Counter<"reason">("tproxy_rejected_connections_total", "Client connections closed by the proxy, by reason: unknown-protocol (neither TLS nor HTTP, or a refused TLS server name), h2c (cleartext HTTP/2), tls-handshake, client-limit (--max-client-connections), proxy-limit (--max-connections), stream-client-limit and stream-proxy-limit (an HTTP/2 stream refused by the same limits, which count streams in flight beyond a session's first), handshake-timeout, header-timeout, request-timeout, send-timeout (an answer the client took none of for --send-timeout: its connection, or its HTTP/2 stream alone)");
  readonly certCacheEntries = new Gauge("tproxy_certificate_cache_entries", "Leaf certificates held in memory");
  readonly certCacheLookups = new Counter<"result">("tproxy_certificate_cache_lookups_total", "Leaf certificate lookups, by result: hit (in this thread's cache), shared (minted by another serving thread), mint");
  readonly filterReloads = new Counter<"result">("tproxy_filter_reloads_total", "Filter loads, by result (success or error)");
  readonly filterLoadFailures = new Counter<"reason">("tproxy_filter_load_failures_total", "Filter versions refused, by reason: read (the files cannot be read), compile (esbuild), type (type errors against the filter contract), evaluate (its top-level code threw, or its default export is no filter)");
  readonly filterErrors = new Counter<"kind">("tproxy_filter_errors_total", "Hook calls that failed, by kind (throw or timeout)");
  readonly workerRestarts = new Counter<"reason">("tproxy_worker_restarts_total", "Serving threads replaced, by reason: hook-stuck (a filter hook ran past twice its budget without yielding), stalled (no heartbeat), exited (the thread ended or crashed)");
  readonly caReloads = new Counter<"result">("tproxy_ca_reloads_total", "CA changes seen on the mounted files, by result (success, or error: the previous CA stays)");
  readonly caExpiry = new Gauge("tproxy_ca_expiry_timestamp_seconds", "When the CA in force expires (Unix time)", "max");
  readonly filterInfo = new Gauge<"hash">("tproxy_filter_info", "The filter in force (value 1), by source hash", "max");

  setFilter(hash: string): void {
    this.filterInfo.reset();
    this.filterInfo.set({ hash }, 1);
  }

  toJSON(): MetricJson[] {
    return [this.requests, this.duration, this.openConnections, this.rejectedConnections, this.certCacheEntries, this.certCacheLookups, this.filterReloads, this.filterLoadFailures, this.filterErrors, this.workerRestarts, this.caReloads, this.caExpiry, this.filterInfo].map((m) => m.toJSON());
  }
}
