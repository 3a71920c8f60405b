// What the proxy suites read back from a running proxy: its metrics, its readiness, its log lines.
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { waitFor } from "../../../test/support/netns.ts";
import { METRICS_PORT, type Proc, type ProxyWorld } from "../../../test/support/world.ts";
import { compileFilter } from "../src/filter/compile.ts";
import { FilterHost, type FilterHostOptions, type FilterVersion } from "../src/filter/host.ts";
import type { FlowData } from "../src/filter/protocol.ts";
import type { ConnectionInfo } from "../src/server/target.ts";

/** What a hook gets for a GET of https://example.com + `path` from a pod. */
export const flow = (path: string): FlowData => ({
  id: "t",
  client: { address: "10.0.0.2", port: 1 },
  destination: undefined,
  sni: undefined,
  request: { method: "GET", scheme: "https", host: "example.com", port: 443, path, url: `https://example.com${path}`, headers: { host: "example.com" } },
});

/** A transparent plain-HTTP connection from a pod to 203.0.113.7:80, with `over` changed. */
export const conn = (over: Partial<ConnectionInfo> = {}): ConnectionInfo => ({
  mode: "transparent",
  tls: false,
  client: { address: "10.0.0.2", port: 40000 },
  destination: { address: "203.0.113.7", port: 80 },
  sni: undefined,
  ...over,
});

/** Sum of the samples of `name` whose labels include `labels` (0 when there is none). */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

/** Whether /metrics has at least one sample of `name`. */
export function hasMetric(text: string, name: string): boolean {
  return text.split("\n").some((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
}

export async function metricsOf(world: ProxyWorld, port = METRICS_PORT): Promise<string> {
  return world.node.must("curl", ["-sS", "--max-time", "5", `http://127.0.0.1:${port}/metrics`]);
}

/** /readyz as the kubelet sees it: status code and body. */
export async function readyz(world: ProxyWorld, port = METRICS_PORT): Promise<{ status: number; body: string }> {
  const r = await world.node.run("curl", ["-sS", "--max-time", "5", "-w", "\n%{http_code}", `http://127.0.0.1:${port}/readyz`]);
  const i = r.stdout.lastIndexOf("\n");
  return { status: Number(r.stdout.slice(i + 1)), body: r.stdout.slice(0, i) };
}

/** The hash the proxy reports for a filter source (tproxy_filter_info, /readyz). */
export function sourceHash(source: string): string {
  return createHash("sha256").update(source).digest("hex").slice(0, 16);
}

/** Waits for a line matching `pattern` written after the first `from` lines. */
export async function lineAfter(proc: Proc, from: number, pattern: RegExp, timeoutMs = 10_000): Promise<string> {
  let found: string | undefined;
  await waitFor(`a line matching ${pattern} after line ${from} (output so far:\n${proc.output}\n)`, () => {
    found = proc.lines.slice(from).find((l) => pattern.test(l));
    return found !== undefined;
  }, timeoutMs);
  return found!;
}

/** The request records of a proxy run with --log-format json. */
export function requestRecords(proc: Proc): Array<{ url: string; status: number; thread: number | undefined; decision: string }> {
  const out: Array<{ url: string; status: number; thread: number | undefined; decision: string }> = [];
  for (const line of proc.lines) {
    if (!line.startsWith("{")) continue;
    const r = JSON.parse(line) as { kind?: string; url: string; status: number; thread?: number; decision: string };
    if (r.kind === "request") out.push({ url: r.url, status: r.status, thread: r.thread, decision: r.decision });
  }
  return out;
}

/** A FilterHost and the folder its filter is written to, new for each test of the describe it is made in. */
export interface FilterHostFixture {
  readonly host: FilterHost;
  readonly dir: string;
  /** Writes `filter.ts` (and `extra` files beside it), compiles it and loads it in the host. */
  load(source: string, extra?: Record<string, string>): Promise<FilterVersion>;
}

/** Registers the beforeEach/afterEach of a FilterHostFixture in the calling describe; `options` is read per test. */
export function filterHostFixture(options: () => FilterHostOptions): FilterHostFixture {
  let dir = "";
  let host: FilterHost | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "tproxy-filter-"));
    host = new FilterHost(options());
  });
  afterEach(async () => {
    await host?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    get host() { return host!; },
    get dir() { return dir; },
    async load(source, extra = {}) {
      for (const [name, text] of Object.entries(extra)) writeFileSync(join(dir, name), text);
      writeFileSync(join(dir, "filter.ts"), source);
      return host!.load(await compileFilter(join(dir, "filter.ts")));
    },
  };
}
