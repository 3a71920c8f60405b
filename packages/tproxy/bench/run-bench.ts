// `npm run bench`: tproxy against Squid, mitmproxy and the direct path, in one run, through the same
// iptables REDIRECT rules, in network namespaces:
//
//   client (wrk, h2load; 10.77.1.2) ── node (router: nat PREROUTING REDIRECT, or none) ── upstream (nginx, 10.77.2.10:80 and :443)
//
// The four paths (BENCH_PATHS picks some; all by default), switched by the node's REDIRECT rule:
//   direct     no rule: the client reaches nginx itself. The ceiling the others are measured against.
//   tproxy     80,443 → :8080. `tproxy run` in its chart-default configuration (--workers auto, ...) with a
//              TypeScript filter, inside a memory cgroup limited like the chart's container (BENCH_MEMORY_LIMIT_MIB).
//   squid      80 → :8082 (http_port intercept), 443 → :8083 (https_port intercept ssl-bump). Squid 5 from
//              Debian's squid-openssl, bumping every connection with certificates it mints (squid.ts).
//   mitmproxy  80,443 → :8081. `mitmdump --mode transparent` with a Python addon.
// Every proxy runs in the node namespace, makes the same decision (the bucket's URLs pass, anything else
// gets 418), checked with curl before measuring, and verifies upstream certificates against the bench's
// public CA. No client verifies a proxy's certificate (wrk cannot), on every path alike.
//
// The HTTP/2 case (https-h2: few connections, many concurrent streams each, from h2load) runs on the paths
// that speak HTTP/2 to clients: direct, tproxy (HTTP/2 is on in its default configuration) and mitmproxy;
// Squid has none, so it is skipped there. Before it, every path is checked to negotiate h2 with the client
// and with nginx (nginx answers a probe URL with the protocol it was asked over).
//
// Not a test: it prints numbers. Paths alternate within each case so drift on a shared machine hits
// all alike; results are reported as ratios. Writes results/latest.{md,json,svg}.
//
// Environment: BENCH_CASES (ids, comma-separated), BENCH_PATHS, BENCH_ROUNDS (2), BENCH_SECONDS (5),
// BENCH_TPROXY_ARGS (extra `tproxy run` arguments), BENCH_NODE_FLAGS (node flags for tproxy, e.g.
// --cpu-prof), BENCH_MEMORY_LIMIT_MIB (512, the chart's limit), BENCH_DEBUG (tproxy's memory metrics after
// each run), BENCH_H2_CONNS and BENCH_H2_STREAMS (the HTTP/2 case's connections, 4, and concurrent streams on
// each, 32), BENCH_REDRAW (redraw latest.svg from latest.json, measuring nothing). A partial run
// (BENCH_CASES or BENCH_PATHS set) leaves results/ as it was.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { Netns, enableForwarding, hasCommand, link, must, removeStale, run, waitFor } from "../../../test/support/netns.ts";
import { TestCa } from "../../../test/support/pki.ts";
import { createMemoryCgroup, inCgroup, readMemoryCgroup, removeMemoryCgroup, type MemoryCgroup } from "./memory-cgroup.ts";
import { SQUID_HTTPS_PORT, SQUID_HTTP_PORT, prepareSquid, writeSquidConf, type SquidSetup } from "./squid.ts";

const REPO = resolve(import.meta.dirname, "../../..");
const RESULTS = join(import.meta.dirname, "results");
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const ONLY = process.env.BENCH_CASES?.split(",");
const ALL_PATHS = ["direct", "tproxy", "squid", "mitmproxy"] as const;
type PathName = (typeof ALL_PATHS)[number];
type ProxyName = Exclude<PathName, "direct">;
const PATHS = (process.env.BENCH_PATHS?.split(",") ?? [...ALL_PATHS]) as PathName[];
const PROXIES = PATHS.filter((p): p is ProxyName => p !== "direct");
const LABEL: Record<PathName, string> = { direct: "direct", tproxy: "tproxy", squid: "Squid", mitmproxy: "mitmproxy" };
const TPROXY_ARGS = process.env.BENCH_TPROXY_ARGS?.split(" ").filter(Boolean) ?? [];
const MEMORY_LIMIT_MIB = Number(process.env.BENCH_MEMORY_LIMIT_MIB ?? 512);
const UPSTREAM = "10.77.2.10";
const NAME = "storage.googleapis.com";
const PREFIX = "/solutions-public-assets";
/** The HTTP/2 case: few connections, many concurrent streams on each (tproxy allows 100 per session). */
const H2_CASE = "https-h2";
const H2_CONNS = Number(process.env.BENCH_H2_CONNS ?? 4);
const H2_STREAMS = Number(process.env.BENCH_H2_STREAMS ?? 32);
const HOSTNAMES = Array.from({ length: 200 }, (_, i) => `h${String(i).padStart(3, "0")}.bench.example`);

/** What one load generator run measured on the client. */
interface Load {
  rps: number;
  mbps: number;
  p50ms: number;
  p99ms: number;
  errors: number;
  requests: number; // completed during the run
}

interface Sample extends Load {
  cpu?: number; // cores used by the proxy during the run
  cpuSecPer1k?: number; // CPU-seconds the proxy spent per 1,000 requests
  rssMiB?: number; // proxy RSS at the end of the run
  peakRssMiB?: number; // proxy peak RSS so far (VmHWM)
  memcgPeakMiB?: number; // tproxy only: peak usage of its memory cgroup since the bench began
}

interface Case {
  id: string;
  title: string;
  run(): Promise<Load>;
  coldProxies?: boolean;
  /** Paths this case cannot run on, with the reason (printed, and written under the results). */
  skip?: Partial<Record<PathName, string>>;
}

const log = (s: string) => process.stdout.write(`${s}\n`);

function preflight(): void {
  if (process.getuid?.() !== 0) {
    process.stderr.write("bench: needs root (network namespaces, iptables, cgroups)\n");
    process.exit(1);
  }
  // [command, Debian package, needed]: a proxy's only for its path, h2load only for the HTTP/2 case.
  const tools: [string, string, boolean][] = [["wrk", "wrk", true], ["nginx", "nginx-light", true], ["iptables", "iptables", true], ["curl", "curl", true],
    ["openssl", "openssl", true], ["h2load", "nghttp2-client", selectedCases().some((c) => c.id === H2_CASE)],
    ["mitmdump", "mitmproxy", PATHS.includes("mitmproxy")], ["squid", "squid-openssl", PATHS.includes("squid")]];
  const missing = tools.filter(([cmd, , needed]) => needed && !hasCommand(cmd));
  if (missing.length === 0) return;
  const pkgs = missing.map(([, p]) => p).join(" ");
  if (!hasCommand("apt-get")) {
    process.stderr.write(`bench: missing ${missing.map(([c]) => c).join(", ")}: install the Debian packages ${pkgs}\n`);
    process.exit(1);
  }
  log(`bench: installing ${pkgs} (apt-get)`);
  execFileSync("sh", ["-c", `apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${pkgs} >/dev/null`], { stdio: "inherit" });
}

function machine(): string {
  const cpu = cpus()[0]?.model.replace(/\s+/g, " ").trim() ?? "unknown CPU";
  return `${cpus().length} cores (${cpu}), ${Math.round(totalmem() / 2 ** 30)} GiB, Linux ${execFileSync("uname", ["-r"]).toString().trim()}, Node ${process.version}`;
}

function versions(): Record<string, string> {
  const first = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"] }).toString().split("\n")[0]!.trim();
    } catch {
      return "unknown";
    }
  };
  const v: Record<string, string> = {};
  if (PATHS.includes("squid")) v.squid = first("squid", ["-v"]).replace(/^Squid Cache: Version /, "");
  if (PATHS.includes("mitmproxy")) v.mitmproxy = first("mitmdump", ["--version"]).replace(/^Mitmproxy: /, "");
  if (selectedCases().some((c) => c.id === H2_CASE)) v.h2load = first("h2load", ["--version"]).replace(/^h2load nghttp2\//, "");
  return v;
}

// ---- the world ----

let client: Netns;
let node: Netns;
let upstream: Netns;
const children: ChildProcess[] = [];
const dir = mkdtempSync(join(tmpdir(), "tproxy-bench-"));
let memcg: MemoryCgroup | undefined;
let memcgError: string | undefined;

// The same decision in every proxy, for http and https alike: allow the bucket, 418 otherwise.
const ALLOWED = String.raw`^https?://(storage\.googleapis\.com|[a-z0-9-]+\.bench\.example)/solutions-public-assets/`;

async function buildWorld(): Promise<{ publicCa: string; tproxyCa: { cert: string; key: string }; squid?: SquidSetup }> {
  await removeStale("tpb");
  client = await Netns.create("tpbc");
  node = await Netns.create("tpbn");
  upstream = await Netns.create("tpbu");
  await link(client, ["10.77.1.2/24"], node, ["10.77.1.1/24"]);
  await link(node, ["10.77.2.1/24"], upstream, [`${UPSTREAM}/24`]);
  await enableForwarding(node);
  await client.must("ip", ["route", "add", "default", "via", "10.77.1.1"]);
  await upstream.must("ip", ["route", "add", "default", "via", "10.77.2.1"]);
  const hosts = Object.fromEntries([NAME, ...HOSTNAMES].map((n) => [n, UPSTREAM]));
  client.hosts(hosts);
  node.hosts(hosts);

  const ca = new TestCa(dir, "public");
  const cert = ca.issue("nginx", [NAME, "*.bench.example"]);
  const www = join(dir, "www", PREFIX.slice(1));
  mkdirSync(www, { recursive: true });
  writeFileSync(join(www, "small"), "x".repeat(100));
  writeFileSync(join(www, "1m"), Buffer.alloc(1024 * 1024, 0x61));
  const conf = join(dir, "nginx.conf");
  // nginx -V lists its build options on stderr; without the HTTP/2 module, "http2" below would stop nginx.
  const nginxH2 = /--with-http_v2_module/.test(execFileSync("sh", ["-c", "nginx -V 2>&1"]).toString());
  if (!nginxH2 && selectedCases().some((c) => c.id === H2_CASE)) {
    throw new Error(`nginx has no HTTP/2 module (no --with-http_v2_module in nginx -V), which the ${H2_CASE} case needs: install Debian's nginx-light or leave ${H2_CASE} out of BENCH_CASES`);
  }
  writeFileSync(conf, `
worker_processes 2;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp; proxy_temp_path ${dir}/tmp; fastcgi_temp_path ${dir}/tmp; uwsgi_temp_path ${dir}/tmp; scgi_temp_path ${dir}/tmp;
  keepalive_requests 1000000;
  sendfile on;
  server {
    listen ${UPSTREAM}:80;
    # nginx 1.22 (Debian 12): http2 is a listen parameter ("http2 on;" came with 1.25.1). Clients without
    # ALPN h2 (wrk; tproxy and mitmproxy for HTTP/1.1 clients) still get HTTP/1.1.
    listen ${UPSTREAM}:443 ssl${nginxH2 ? " http2" : ""};
    ssl_certificate ${cert.certPath};
    ssl_certificate_key ${cert.keyPath};
    root ${dir}/www;
    # The protocol nginx was asked over, for the HTTP/2 check: tells whether a proxy's upstream leg is h2.
    location = ${PREFIX}/protocol { default_type text/plain; return 200 "$server_protocol"; }
  }
}
`);
  mkdirSync(join(dir, "tmp"));
  children.push(upstream.spawn("nginx", ["-c", conf, "-g", "daemon off; user root;"], { stdio: "ignore" }));
  await waitFor("nginx", async () => (await client.run("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", `http://${NAME}${PREFIX}/small`])).stdout === "200", 10_000, 100);

  const tproxyCa = { cert: join(dir, "tproxy-ca.pem"), key: join(dir, "tproxy-ca.key") };
  await must(process.execPath, [join(REPO, "packages/tproxy/dist/cli.js"), "ca", "create", "--cert", tproxyCa.cert, "--key", tproxyCa.key]);
  if (PATHS.includes("tproxy")) {
    // After removeStale: the processes of a crashed run's cgroup died with its namespaces.
    try {
      memcg = createMemoryCgroup("tproxy-bench", MEMORY_LIMIT_MIB * 2 ** 20);
    } catch (e) {
      memcgError = (e as Error).message;
      log(`bench: tproxy runs without a memory limit: ${memcgError}`);
    }
  }
  const squid = PATHS.includes("squid") ? prepareSquid(dir, ca.certPath, ALLOWED) : undefined;
  return { publicCa: ca.certPath, tproxyCa, squid };
}

const TS_FILTER = `export default {
  request(flow) {
    if (!/${ALLOWED.replaceAll("/", "\\/")}/.test(flow.request.url)) {
      flow.respond(418, "Access Denied by Administrator", { "content-type": "text/html" });
    }
  },
};
`;
const PY_FILTER = `import re
from mitmproxy import http

ALLOWED = re.compile(r"${ALLOWED}")

def request(flow):
    if not ALLOWED.match(flow.request.pretty_url):
        flow.response = http.Response.make(418, b"Access Denied by Administrator", {"Content-Type": "text/html"})
`;

const proxies: Partial<Record<ProxyName, ChildProcess>> = {};
const unexpectedExits: Partial<Record<ProxyName, number>> = {};
let env: Awaited<ReturnType<typeof buildWorld>>;

const listening = (port: number) => async () => (await node.run("sh", ["-c", `ss -ltnH 'sport = :${port}' | grep -q .`])).code === 0;

/** Waits for a proxy, failing at once (with what it logged) if it exits instead of coming up. */
async function started(name: ProxyName, child: ChildProcess, probe: () => Promise<boolean>, timeoutMs: number, logFile?: string): Promise<void> {
  await waitFor(name, async () => {
    if (child.exitCode !== null || child.signalCode !== null) {
      const lines = logFile && existsSync(logFile) ? readFileSync(logFile, "utf8").trim().split("\n") : [];
      const fatal = [...new Set(lines.filter((l) => /FATAL|ERROR/.test(l)).map((l) => l.replace(/^[\d/]+ [\d:]+\| /, "")))];
      const tail = lines.length ? `: ${(fatal.length ? fatal.slice(-3) : lines.slice(-5)).join(" | ")}` : "";
      throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) while starting${tail}`);
    }
    return probe();
  }, timeoutMs, 100);
}

async function stopProxy(name: ProxyName): Promise<void> {
  const p = proxies[name];
  delete proxies[name];
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  p.kill("SIGKILL");
  await new Promise((r) => p.once("exit", r));
}

/** The ENV lines of the proxy's image (docker/tproxy.Dockerfile), e.g. { NODE_OPTIONS: "...", MALLOC_ARENA_MAX: "2" }. */
function imageEnv(): Record<string, string> {
  const text = readFileSync(join(REPO, "docker/tproxy.Dockerfile"), "utf8").replace(/\\\n\s*/g, " ");
  const env: Record<string, string> = {};
  for (const line of text.split("\n").filter((l) => l.startsWith("ENV "))) {
    for (const m of line.slice(4).matchAll(/([A-Z_][A-Z0-9_]*)=("[^"]*"|\S+)/g)) env[m[1]!] = m[2]!.replace(/^"|"$/g, "");
  }
  return env;
}

async function startProxy(name: ProxyName): Promise<void> {
  await stopProxy(name);
  let child: ChildProcess;
  if (name === "tproxy") {
    const nodeFlags = process.env.BENCH_NODE_FLAGS?.split(" ").filter(Boolean) ?? []; // e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
    const args = [...nodeFlags, join(REPO, "packages/tproxy/dist/cli.js"), "run", "--ca-cert", env.tproxyCa.cert, "--ca-key", env.tproxyCa.key,
      "--filter", join(dir, "filter.ts"), "--upstream-ca", env.publicCa, "--transparent-port", "8080", "--metrics-port", "9090", ...TPROXY_ARGS];
    // The whole tproxy process tree lives in the memory cgroup: sh joins it, then becomes `ip netns exec`,
    // which becomes node (one pid throughout). Joining comes first because `ip netns exec` mounts a sysfs
    // of the namespace over /sys, hiding /sys/fs/cgroup.
    const inNode = ["ip", "netns", "exec", node.name, process.execPath, ...args];
    const [cmd, argv] = memcg ? inCgroup(memcg, inNode[0]!, inNode.slice(1)) : [inNode[0]!, inNode.slice(1)];
    // The environment the image gives the proxy (NODE_OPTIONS, MALLOC_ARENA_MAX), so the bench measures what runs.
    child = spawn(cmd, argv, { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, ...imageEnv() } });
    await started(name, child, async () => (await node.run("curl", ["-s", "http://127.0.0.1:9090/readyz"])).stdout.startsWith("ready"), 15_000);
  } else if (name === "squid") {
    const conf = writeSquidConf(env.squid!);
    child = node.spawn("squid", ["-N", "-f", conf], { stdio: ["ignore", "ignore", "inherit"] });
    const both = async () => (await listening(SQUID_HTTP_PORT)()) && (await listening(SQUID_HTTPS_PORT)());
    await started(name, child, both, 30_000, join(env.squid!.dir, "cache.log"));
  } else {
    mkdirSync(join(dir, "mitmproxy"), { recursive: true });
    child = node.spawn("mitmdump", ["--mode", "transparent", "--listen-port", "8081", "-s", join(dir, "filter.py"),
      "--set", `confdir=${join(dir, "mitmproxy")}`, "--set", `ssl_verify_upstream_trusted_ca=${env.publicCa}`], { stdio: "ignore" });
    await started(name, child, listening(8081), 30_000);
  }
  proxies[name] = child;
  children.push(child);
}

async function startProxies(): Promise<void> {
  writeFileSync(join(dir, "filter.ts"), TS_FILTER);
  writeFileSync(join(dir, "filter.py"), PY_FILTER);
  for (const name of PROXIES) await startProxy(name);
}

async function usePath(path: PathName): Promise<void> {
  await node.must("iptables", ["-t", "nat", "-F", "PREROUTING"]);
  const redirect = (ports: string, to: number) => node.must("iptables", ["-t", "nat", "-A", "PREROUTING", "-s", "10.77.1.2", "-p", "tcp", "-m", "multiport", "--dports", ports, "-j", "REDIRECT", "--to-ports", String(to)]);
  if (path === "tproxy") await redirect("80,443", 8080);
  if (path === "mitmproxy") await redirect("80,443", 8081);
  if (path === "squid") {
    await redirect("80", SQUID_HTTP_PORT);
    await redirect("443", SQUID_HTTPS_PORT);
  }
}

/** Before measuring: every proxy passes the bucket and answers 418 for anything else, over http and https. */
async function checkDecisions(): Promise<void> {
  const expected: [string, number][] = [
    [`http://${NAME}${PREFIX}/small`, 200], [`https://${NAME}${PREFIX}/small`, 200],
    [`http://${NAME}/private/small`, 418], [`https://${HOSTNAMES[0]}/private/small`, 418],
  ];
  for (const path of PROXIES) {
    await usePath(path);
    const got: string[] = [];
    for (const [url, status] of expected) {
      const code = (await client.run("curl", ["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", url])).stdout;
      if (code !== String(status)) throw new Error(`${path} answered ${code || "nothing"} for ${url}, expected ${status}: it does not make the bench's decision`);
      got.push(`${url.split(":")[0]} ${code}`);
    }
    log(`  decision check ${path}: ${got.join(", ")}`);
  }
}

/** What the HTTP/2 check found per path: the protocol on the client leg and on the leg to nginx. */
const h2Legs: Partial<Record<PathName, { client: string; upstream: string }>> = {};

/**
 * Before the HTTP/2 case: each of its paths negotiates h2 with the client (curl --http2, the version curl
 * reports), still makes the bench's decision over it (200 / 418), and says which protocol its leg to nginx
 * speaks (nginx's probe URL answers with $server_protocol). A client leg that is not h2 stops the bench:
 * the case would measure HTTP/1.1 under an HTTP/2 title.
 */
async function checkHttp2(c: Case): Promise<void> {
  for (const path of PATHS.filter((p) => !c.skip?.[p])) {
    await usePath(path);
    const expected: [string, string][] = [[`https://${NAME}${PREFIX}/protocol`, "200"], [small("https"), "200"]];
    if (path !== "direct") expected.push([`https://${HOSTNAMES[0]}/private/small`, "418"]);
    const got: { code: string; body: string }[] = [];
    for (const [url, status] of expected) {
      const r = await client.run("curl", ["-sk", "--http2", "-w", "\n%{http_version} %{http_code}", "--max-time", "10", url]);
      const lines = r.stdout.split("\n");
      const [version = "", code = ""] = (lines.pop() ?? "").split(" ");
      if (version !== "2") throw new Error(`${path}: curl --http2 got HTTP/${version || "nothing"} for ${url}, not HTTP/2: the ${c.id} case needs h2 negotiated with the client (ALPN)`);
      if (code !== status) throw new Error(`${path} answered ${code || "nothing"} over HTTP/2 for ${url}, expected ${status}: it does not make the bench's decision for streams`);
      got.push({ code, body: lines.join("\n").trim() });
    }
    h2Legs[path] = { client: "HTTP/2", upstream: got[0]!.body || "unknown" };
    log(`  HTTP/2 check ${path}: client leg HTTP/2, leg to nginx ${h2Legs[path].upstream}; allowed ${got[1]!.code}${got[2] ? `, denied ${got[2].code}` : ""}`);
  }
}

// ---- load generators ----

function toMs(value: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(value.trim());
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === "us" ? n / 1000 : m[2] === "ms" ? n : m[2] === "s" ? n * 1000 : n * 60_000;
}

function toMB(value: string): number {
  const m = /^([\d.]+)(B|KB|MB|GB)$/.exec(value.trim());
  if (!m) return 0;
  return Number(m[1]) * { B: 1e-6, KB: 1 / 1024, MB: 1, GB: 1024 }[m[2] as "B"] * (m[2] === "B" ? 1 : 1.048576);
}

async function wrk(url: string, connections: number, extra: string[] = []): Promise<Load> {
  const threads = Math.min(2, connections);
  const cmd = `ulimit -n $(ulimit -Hn); wrk -t${threads} -c${connections} -d${SECONDS}s --timeout 10s --latency ${extra.map((e) => `'${e}'`).join(" ")} ${url}`;
  const r = await client.run("sh", ["-c", cmd], { timeoutMs: (SECONDS + 30) * 1000 });
  const out = r.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0);
  const requests = Number(/(\d+) requests in /.exec(out)?.[1] ?? 0);
  const mbps = toMB(/Transfer\/sec:\s+(\S+)/.exec(out)?.[1] ?? "0B");
  const p50ms = toMs(/^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? "");
  const p99ms = toMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? "");
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = non2xx + (sockErr ? sockErr.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  if (rps === 0) log(`  wrk gave no result: ${r.stderr.trim() || out.trim()}`);
  return { rps, mbps, p50ms, p99ms, errors, requests };
}

/**
 * h2load (nghttp2-client): `conns` connections with up to `streams` concurrent streams each, for SECONDS.
 * It prints no percentiles, so they come from its per-request log (start µs, status, elapsed µs).
 * A run that did not negotiate h2 throws: h2load would quietly fall back to HTTP/1.1.
 */
async function h2load(url: string, conns: number, streams: number): Promise<Load> {
  const logFile = join(dir, "h2load.log");
  rmSync(logFile, { force: true });
  const cmd = `ulimit -n $(ulimit -Hn); h2load -t ${Math.min(2, conns)} -c ${conns} -m ${streams} -D ${SECONDS} --log-file=${logFile} ${url}`;
  const r = await client.run("sh", ["-c", cmd], { timeoutMs: (SECONDS + 30) * 1000 });
  const out = r.stdout;
  const protocol = /Application protocol: (\S+)/.exec(out)?.[1];
  if (protocol !== "h2") throw new Error(`h2load negotiated ${protocol ?? "no protocol"} with ${url}, not h2: ${r.stderr.trim() || out.trim().split("\n").slice(-5).join(" | ")}`);
  const fin = /finished in ([\d.]+)(\w+), ([\d.]+) req\/s, ([\d.]+)(\w+)\/s/.exec(out);
  const counts = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  if (!fin || !counts) {
    log(`  h2load gave no result: ${r.stderr.trim() || out.trim()}`);
    return { rps: 0, mbps: 0, p50ms: NaN, p99ms: NaN, errors: 0, requests: 0 };
  }
  const [done, failed] = [Number(counts[3]), Number(counts[5])]; // failed: non-2xx answers and stream/connection errors
  const elapsed = existsSync(logFile)
    ? readFileSync(logFile, "utf8").split("\n").map((l) => Number(l.split("\t")[2])).filter((n) => Number.isFinite(n)).sort((a, b) => a - b)
    : [];
  const pct = (q: number) => (elapsed.length ? elapsed[Math.min(elapsed.length - 1, Math.floor(elapsed.length * q))]! / 1000 : NaN);
  const mbps = toMB(`${fin[4]}${fin[5]!.toUpperCase()}`);
  return { rps: Number(fin[3]), mbps, p50ms: pct(0.5), p99ms: pct(0.99), errors: failed, requests: done };
}

// 200 first requests to 200 distinct names, 8 at a time, a new TLS connection each: certificate minting.
const DISTINCT = `
const https = require("node:https");
const names = process.argv.slice(1);
const lat = []; let errors = 0; let next = 0;
const t0 = performance.now();
function one() {
  const name = names[next++]; if (!name) return Promise.resolve();
  const s = performance.now();
  return new Promise((res) => {
    https.get({ host: name, path: "${PREFIX}/small", rejectUnauthorized: false, agent: false }, (r) => { r.resume(); r.on("end", () => { if (r.statusCode !== 200) errors++; lat.push(performance.now() - s); res(); }); })
      .on("error", () => { errors++; res(); });
  }).then(one);
}
Promise.all(Array.from({ length: 8 }, one)).then(() => {
  const secs = (performance.now() - t0) / 1000; lat.sort((a, b) => a - b);
  console.log(JSON.stringify({ rps: names.length / secs, p50: lat[Math.floor(lat.length * 0.5)], p99: lat[Math.floor(lat.length * 0.99)], errors, requests: lat.length }));
});`;

// Latency at a steady, moderate load (not at saturation, where queueing decides): 16 keep-alive
// connections, each sending one request every 16 ms (1,000 requests/s in all).
const PACED = `
const https = require("node:https");
const [url, seconds] = process.argv.slice(1);
const agent = new https.Agent({ keepAlive: true, maxSockets: 16, rejectUnauthorized: false });
const lat = []; let errors = 0; const end = performance.now() + Number(seconds) * 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function loop(offset) {
  await sleep(offset);
  while (performance.now() < end) {
    const s = performance.now();
    await new Promise((res) => https.get(url, { agent }, (r) => { r.resume(); r.on("end", () => { if (r.statusCode !== 200) errors++; lat.push(performance.now() - s); res(); }); }).on("error", () => { errors++; res(); }));
    await sleep(Math.max(0, 16 - (performance.now() - s)));
  }
}
const t0 = performance.now();
Promise.all(Array.from({ length: 16 }, (_, i) => loop(i))).then(() => {
  lat.sort((a, b) => a - b);
  console.log(JSON.stringify({ rps: lat.length / ((performance.now() - t0) / 1000), p50: lat[Math.floor(lat.length * 0.5)], p99: lat[Math.floor(lat.length * 0.99)], errors, requests: lat.length }));
  process.exit(0);
});`;

function scripted(stdout: string): Load {
  const j = JSON.parse(stdout.trim()) as { rps: number; p50: number; p99: number; errors: number; requests: number };
  return { rps: j.rps, mbps: 0, p50ms: j.p50, p99ms: j.p99, errors: j.errors, requests: j.requests };
}

async function paced(): Promise<Load> {
  return scripted((await client.run(process.execPath, ["-e", PACED, small("https"), String(SECONDS)], { timeoutMs: (SECONDS + 30) * 1000 })).stdout);
}

async function distinctNames(): Promise<Load> {
  return scripted((await client.run(process.execPath, ["-e", DISTINCT, ...HOSTNAMES], { timeoutMs: 120_000 })).stdout);
}

function small(scheme: string): string {
  return `${scheme}://${NAME}${PREFIX}/small`;
}
const CASES: Case[] = [
  { id: "http-keepalive", title: "small HTTP, 16 keep-alive conns", run: () => wrk(small("http"), 16) },
  { id: "https-keepalive", title: "small HTTPS, 16 keep-alive conns", run: () => wrk(small("https"), 16) },
  { id: "https-paced", title: "latency: small HTTPS, 16 conns at 1,000 req/s", run: () => paced() },
  { id: "https-newconn", title: "small HTTPS, new conn per request", run: () => wrk(small("https"), 16, ["-H", "Connection: close"]) },
  { id: "https-1mib", title: "1 MiB HTTPS downloads, 16 conns", run: () => wrk(`https://${NAME}${PREFIX}/1m`, 16) },
  { id: "distinct-names", title: "first requests to 200 names", run: distinctNames, coldProxies: true },
  { id: "https-1000conns", title: "small HTTPS, 1,000 conns", run: () => wrk(small("https"), 1000) },
  // After the 1,000-connection case, so that its memory (tproxy's RSS rises with streams in flight) does not
  // end up in that case's peak RSS, a high-water mark over the process's life.
  {
    id: H2_CASE, title: `small HTTP/2, ${H2_CONNS} conns × ${H2_STREAMS} streams`, run: () => h2load(small("https"), H2_CONNS, H2_STREAMS),
    skip: { squid: "Squid has no HTTP/2 (neither toward clients nor toward servers)" },
  },
];

function selectedCases(): Case[] {
  return CASES.filter((c) => !ONLY || ONLY.includes(c.id));
}

// ---- measuring the proxy ----

/** The process and all its descendants (a proxy's workers and helpers), whichever of its threads started them. */
function tree(pid: number): number[] {
  const out = [pid];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      for (const child of readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").trim().split(/\s+/).filter(Boolean)) out.push(...tree(Number(child)));
    }
  } catch {
    // gone
  }
  return out;
}

/** CPU ticks, RSS and peak RSS summed over a process tree (a process's threads are counted in it). */
function procStat(root: number): { cpuTicks: number; rss: number; hwm: number } {
  const sum = { cpuTicks: 0, rss: 0, hwm: 0 };
  for (const pid of tree(root)) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) * 1024;
      // utime + stime, plus cutime + cstime: a worker that ended and was reaped meanwhile still counts
      sum.cpuTicks += Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
      sum.rss += kb("VmRSS");
      sum.hwm += kb("VmHWM");
    } catch {
      // the process ended meanwhile
    }
  }
  return sum;
}

/** Squid's warnings and errors in cache.log from line `from` on (BENCH_DEBUG prints those of each run). */
function squidLogSince(from: number): string[] {
  const file = join(env.squid!.dir, "cache.log");
  const lines = existsSync(file) ? readFileSync(file, "utf8").split("\n") : [];
  return from === 0 ? lines : lines.slice(from).filter((l) => /WARNING|ERROR|FATAL/i.test(l));
}

/** Restarts a proxy that died since the last run (an OOM kill of tproxy, say), counting it. */
async function ensureRunning(name: ProxyName): Promise<void> {
  const p = proxies[name];
  if (p && p.exitCode === null && p.signalCode === null) return;
  unexpectedExits[name] = (unexpectedExits[name] ?? 0) + 1;
  log(`  ${name} had exited (${p?.exitCode ?? p?.signalCode ?? "not running"}); restarting it`);
  await startProxy(name);
}

async function measure(path: PathName, c: Case): Promise<Sample> {
  if (path !== "direct") await ensureRunning(path);
  await usePath(path);
  const pid = path === "direct" ? undefined : proxies[path]?.pid;
  const before = pid ? procStat(pid) : undefined;
  const squidLogAt = path === "squid" ? squidLogSince(0).length : 0;
  const t0 = performance.now();
  const s: Sample = await c.run();
  const secs = (performance.now() - t0) / 1000;
  if (path === "tproxy" && process.env.BENCH_DEBUG) {
    const m = (await node.run("curl", ["-s", "http://127.0.0.1:9090/metrics"])).stdout;
    log(m.split("\n").filter((l) => /^tproxy_(nodejs_heap_size|nodejs_external|process_resident|open_conn)/.test(l)).join("\n"));
  }
  if (path === "squid" && process.env.BENCH_DEBUG) log(squidLogSince(squidLogAt).join("\n"));
  if (pid && before) {
    const after = procStat(pid);
    const cpuSeconds = (after.cpuTicks - before.cpuTicks) / 100;
    s.cpu = cpuSeconds / secs;
    if (s.requests > 0) s.cpuSecPer1k = (cpuSeconds / s.requests) * 1000;
    s.rssMiB = after.rss / 2 ** 20;
    s.peakRssMiB = after.hwm / 2 ** 20;
  }
  if (path === "tproxy" && memcg) {
    const peak = readMemoryCgroup(memcg).peakBytes;
    if (peak !== undefined) s.memcgPeakMiB = peak / 2 ** 20;
  }
  return s;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

function combine(samples: Sample[]): Sample {
  const pick = (k: keyof Sample) => {
    const xs = samples.map((s) => s[k]).filter((x): x is number => typeof x === "number" && !Number.isNaN(x));
    return xs.length ? median(xs) : undefined;
  };
  const max = (k: "peakRssMiB" | "memcgPeakMiB") => Math.max(...samples.map((s) => s[k] ?? 0)) || undefined;
  return {
    rps: pick("rps")!, mbps: pick("mbps")!, p50ms: pick("p50ms")!, p99ms: pick("p99ms")!,
    errors: samples.reduce((a, s) => a + s.errors, 0),
    requests: samples.reduce((a, s) => a + s.requests, 0),
    cpu: pick("cpu"), cpuSecPer1k: pick("cpuSecPer1k"), rssMiB: pick("rssMiB"),
    peakRssMiB: max("peakRssMiB"), memcgPeakMiB: max("memcgPeakMiB"),
  };
}

// ---- report ----

type Results = Record<string, Partial<Record<PathName, Sample>>>;

interface NodeCost {
  /** RSS summed over each proxy's processes at the end of a case's runs (median), and the highest peak. */
  rssMiB: Record<"keepalive16" | "conns1000" | "peak1000" | "h2", Partial<Record<ProxyName, number>>>;
  /** CPU-seconds each proxy spent per 1,000 requests, per case (median of the rounds). */
  cpuSecondsPer1000Requests: Record<string, Partial<Record<ProxyName, number>>>;
  /** The tproxy path's memory cgroup over the whole run (every case, the 1,000-connection one and the HTTP/2 one last). */
  tproxyMemoryCgroup:
    | { cgroupVersion: 1 | 2; limitMiB: number; peakMiB?: number; oomKills?: number; restarts: number; tproxyArgs: string[] }
    | { unavailable: string };
}

function fmt(n: number | undefined, digits = 0): string {
  return n === undefined || Number.isNaN(n) ? "—" : n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** `tproxy run`'s defaults for some options, from its --help (they are the chart's too), e.g. "`--workers auto`". */
function cliDefaults(flags: string[]): string {
  const help = execFileSync(process.execPath, [join(REPO, "packages/tproxy/dist/cli.js"), "run", "--help"]).toString().replace(/\s+/g, " ");
  return flags.map((f) => {
    const d = new RegExp(`${f} <\\w+> .*?\\(default: "([^"]*)"`).exec(help)?.[1];
    return d === undefined ? `\`${f}\` (default unknown)` : `\`${f} ${d}\``;
  }).join(", ");
}

function nodeCost(results: Results): NodeCost {
  const per = (f: (r: Partial<Record<PathName, Sample>>, p: ProxyName) => number | undefined, r?: Partial<Record<PathName, Sample>>) =>
    Object.fromEntries(PROXIES.map((p) => [p, r ? f(r, p) : undefined]).filter(([, v]) => v !== undefined)) as Partial<Record<ProxyName, number>>;
  let tproxyMemoryCgroup: NodeCost["tproxyMemoryCgroup"] = { unavailable: memcgError ?? "the tproxy path did not run" };
  if (memcg) {
    const st = readMemoryCgroup(memcg);
    tproxyMemoryCgroup = {
      cgroupVersion: memcg.version, limitMiB: memcg.limitBytes / 2 ** 20,
      peakMiB: st.peakBytes === undefined ? undefined : st.peakBytes / 2 ** 20,
      oomKills: st.oomKills, restarts: unexpectedExits.tproxy ?? 0, tproxyArgs: TPROXY_ARGS,
    };
  }
  return {
    rssMiB: {
      keepalive16: per((r, p) => r[p]?.rssMiB, results["https-keepalive"]),
      conns1000: per((r, p) => r[p]?.rssMiB, results["https-1000conns"]),
      peak1000: per((r, p) => r[p]?.peakRssMiB, results["https-1000conns"]),
      h2: per((r, p) => r[p]?.rssMiB, results[H2_CASE]),
    },
    cpuSecondsPer1000Requests: Object.fromEntries(Object.entries(results).map(([id, r]) => [id, per((r, p) => r[p]?.cpuSecPer1k, r)])),
    tproxyMemoryCgroup,
  };
}

function table(head: string[], align: string[], rows: string[][]): string {
  return [`| ${head.join(" | ")} |`, `|${align.join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
}

function markdown(results: Results, cost: NodeCost): string {
  const cases = CASES.filter((c) => results[c.id]);
  const title = (c: Case) => c.title;
  const ratio = (a?: Sample, b?: Sample, pct = false) => (a && b && b.rps ? (pct ? `${((a.rps / b.rps) * 100).toFixed(1)}%` : `${(a.rps / b.rps).toFixed(1)}×`) : "—");
  const proxies = PROXIES;
  const withTproxy = (p: ProxyName) => p !== "tproxy" && PATHS.includes("tproxy");

  const throughput = table(
    ["case", ...PATHS.map((p) => `${LABEL[p]} req/s`), ...proxies.map((p) => `${LABEL[p]}/direct`), ...proxies.filter(withTproxy).map((p) => `tproxy/${LABEL[p]}`)],
    ["---", ...PATHS.map(() => "--:"), ...proxies.map(() => "--:"), ...proxies.filter(withTproxy).map(() => "--:")],
    cases.map((c) => {
      const r = results[c.id]!;
      const mb = c.id === "https-1mib" ? ` (MB/s: ${PATHS.map((p) => fmt(r[p]?.mbps)).join(", ")})` : "";
      return [`${title(c)}${mb}`, ...PATHS.map((p) => fmt(r[p]?.rps)), ...proxies.map((p) => ratio(r[p], r.direct, true)), ...proxies.filter(withTproxy).map((p) => ratio(r.tproxy, r[p]))];
    }),
  );
  const latency = table(
    ["case", ...PATHS.map((p) => `${LABEL[p]} p50 / p99 ms`), `errors (${PATHS.map((p) => LABEL[p]).join(", ")})`],
    ["---", ...PATHS.map(() => "--:"), "--:"],
    cases.map((c) => {
      const r = results[c.id]!;
      return [title(c), ...PATHS.map((p) => (r[p] ? `${fmt(r[p].p50ms, 2)} / ${fmt(r[p].p99ms, 2)}` : "—")), PATHS.map((p) => fmt(r[p]?.errors)).join(", ")];
    }),
  );
  const resources = table(
    ["case", ...proxies.map((p) => `${LABEL[p]} CPU cores, RSS / peak MiB`)],
    ["---", ...proxies.map(() => "--:")],
    cases.map((c) => {
      const r = results[c.id]!;
      return [title(c), ...proxies.map((p) => (r[p] ? `${fmt(r[p].cpu, 2)}, ${fmt(r[p].rssMiB)} / ${fmt(r[p].peakRssMiB)}` : "—"))];
    }),
  );

  const rss = table(
    ["", ...proxies.map((p) => LABEL[p])],
    ["---", ...proxies.map(() => "--:")],
    [
      ["RSS, 16 keep-alive HTTPS conns (MiB)", ...proxies.map((p) => fmt(cost.rssMiB.keepalive16[p]))],
      ["RSS, 1,000 HTTPS conns (MiB)", ...proxies.map((p) => fmt(cost.rssMiB.conns1000[p]))],
      ["peak RSS, 1,000 HTTPS conns (MiB)", ...proxies.map((p) => fmt(cost.rssMiB.peak1000[p]))],
      [`RSS, HTTP/2: ${H2_CONNS} conns × ${H2_STREAMS} streams (MiB)`, ...proxies.map((p) => fmt(cost.rssMiB.h2[p]))],
    ],
  );
  const cpu = table(
    ["case", ...proxies.map((p) => LABEL[p]), ...proxies.filter(withTproxy).map((p) => `tproxy/${LABEL[p]}`)],
    ["---", ...proxies.map(() => "--:"), ...proxies.filter(withTproxy).map(() => "--:")],
    cases.map((c) => {
      const r = cost.cpuSecondsPer1000Requests[c.id] ?? {};
      const rel = (p: ProxyName) => (r.tproxy !== undefined && r[p] ? `${(r.tproxy / r[p]).toFixed(2)}×` : "—");
      return [title(c), ...proxies.map((p) => fmt(r[p], 3)), ...proxies.filter(withTproxy).map(rel)];
    }),
  );
  const m = cost.tproxyMemoryCgroup;
  const limit = "unavailable" in m
    ? `tproxy ran without a memory limit: ${m.unavailable}.`
    : `tproxy ran in a cgroup v${m.cgroupVersion} memory group limited to **${fmt(m.limitMiB)} MiB** (BENCH_MEMORY_LIMIT_MIB${m.limitMiB === 512 ? "; the chart's default limit" : ""}), ` +
      `${m.tproxyArgs.length ? `with \`${m.tproxyArgs.join(" ")}\` (BENCH_TPROXY_ARGS) added to` : "in"} its chart-default configuration ` +
      `(${cliDefaults(["--workers", "--max-client-connections"])}; ${cpus().length} cores), through every case above, ` +
      `${results[H2_CASE] ? "the 1,000-connection one and the HTTP/2 one last" : "the 1,000-connection one last"}: peak usage **${fmt(m.peakMiB)} MiB** (the cgroup's own count: process memory, page cache and kernel memory such as socket buffers), ` +
      `**${fmt(m.oomKills)} OOM kills** (processes the kernel killed in the group; the bench found the tproxy process it started dead and restarted it ${fmt(m.restarts)} times).`;

  const skipped = cases.flatMap((c) => PATHS.filter((p) => c.skip?.[p]).map((p) => `${LABEL[p]} did not run "${c.title}": ${c.skip![p]}.`));
  const legs = Object.entries(h2Legs).filter(([p]) => p !== "direct").map(([p, l]) => `${LABEL[p as PathName]} ${l.upstream}`);
  const h2 = results[H2_CASE]
    ? `"${CASES.find((c) => c.id === H2_CASE)!.title}" is h2load's HTTP/2 over TLS: h2 was negotiated with the client on every path (checked with curl --http2 before measuring, and in every h2load run); ` +
      `the proxies' leg to nginx spoke ${legs.join(", ") || "—"} (nginx's own answer to a probe).`
    : "";
  const notes = [...skipped, h2].filter(Boolean).join("\n");
  return `${throughput}
${notes ? `\n${notes}\n` : ""}
Latency (median of the rounds) and errors (sum of the rounds: non-2xx responses, connect/read/write errors and timeouts):

${latency}

The proxies' CPU (cores busy during the run) and memory (RSS at the end of the run / peak RSS, MiB), summed over each proxy's processes:

${resources}

## What a node costs

Memory, summed over each proxy's processes (tproxy: one process, its supervisor and serving threads; Squid: squid and its certificate helpers; mitmproxy: one process):

${rss}

CPU-seconds per 1,000 requests (the proxy's CPU ticks over the run, divided by the requests the client completed; lower is better):

${cpu}

${limit}
`;
}

function chart(results: Results): string {
  // Throughput cases only: the steady-load case runs at a fixed rate, so its ratio says nothing.
  const ids = Object.keys(results).filter((id) => id !== "https-paced");
  const bars: [ProxyName, string][] = ([["tproxy", "#2b6cb0"], ["squid", "#2f855a"], ["mitmproxy", "#c05621"]] as [ProxyName, string][])
    .filter(([p]) => ids.some((id) => results[id]![p] && results[id]!.direct));
  const W = 820, barH = 14, gap = 3, rowH = bars.length * (barH + gap) + 14, left = 290, barMax = W - left - 130;
  const H = 60 + ids.length * rowH + 30;
  const bar = (y: number, v: number, color: string, label: string) =>
    `<rect x="${left}" y="${y}" width="${Math.max(1, Math.min(1, v) * barMax).toFixed(1)}" height="${barH}" fill="${color}"/><text x="${(left + Math.min(1, v) * barMax + 6).toFixed(1)}" y="${y + 11}" font-size="11">${label} ${(v * 100).toFixed(1)}%</text>`;
  const rows = ids.map((id, i) => {
    const y = 50 + i * rowH;
    const r = results[id]!;
    const title = CASES.find((c) => c.id === id)?.title ?? id;
    const drawn = bars.map(([p, color], j) => (r[p] && r.direct ? bar(y + j * (barH + gap), r[p].rps / r.direct.rps, color, LABEL[p]) : ""));
    return `<text x="10" y="${y + (bars.length * (barH + gap)) / 2 + 4}" font-size="12">${title}</text>${drawn.join("")}`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="24" font-size="15" font-weight="bold">Requests/s as a share of the direct path (higher is better)</text>
<line x1="${left}" y1="40" x2="${left}" y2="${H - 25}" stroke="#999"/><line x1="${left + barMax}" y1="40" x2="${left + barMax}" y2="${H - 25}" stroke="#ddd"/>
<text x="${left + barMax - 20}" y="${H - 10}" font-size="11">100%</text>
${rows.join("\n")}
</svg>
`;
}

async function main(): Promise<void> {
  if (process.env.BENCH_REDRAW) {
    // Redraw the chart from the published results, without measuring.
    const { results } = JSON.parse(readFileSync(join(RESULTS, "latest.json"), "utf8")) as { results: Results };
    writeFileSync(join(RESULTS, "latest.svg"), chart(results));
    log(`redrew ${join(RESULTS, "latest.svg")}`);
    return;
  }
  preflight();
  log(`tproxy bench: ${SECONDS}s per run, ${ROUNDS} rounds, paths alternating (${PATHS.join(", ")})`);
  log(`machine: ${machine()}`);
  env = await buildWorld();
  await startProxies();
  await checkDecisions();
  const h2 = selectedCases().find((c) => c.id === H2_CASE);
  if (h2) await checkHttp2(h2);
  const results: Results = {};
  for (const c of selectedCases()) {
    const samples: Partial<Record<PathName, Sample[]>> = {};
    for (const path of PATHS.filter((p) => c.skip?.[p])) log(`  ${c.id} ${path}: skipped, ${c.skip![path]}`);
    for (let round = 0; round < ROUNDS; round += 1) {
      if (c.coldProxies) await startProxies();
      for (const path of PATHS.filter((p) => !c.skip?.[p])) {
        if (c.coldProxies && round > 0) await startProxies();
        const s = await measure(path, c);
        (samples[path] ??= []).push(s);
        const cost = s.cpu === undefined ? "" : `; ${fmt(s.cpu, 2)} cores, ${fmt(s.cpuSecPer1k, 3)} CPU-s/1k req, RSS ${fmt(s.rssMiB)} MiB`;
        log(`  ${c.id} ${path} round ${round + 1}: ${fmt(s.rps)} req/s, p50 ${fmt(s.p50ms, 2)} ms, p99 ${fmt(s.p99ms, 2)} ms${s.errors ? `, ${s.errors} errors` : ""}${cost}`);
      }
    }
    results[c.id] = Object.fromEntries(Object.entries(samples).map(([p, ss]) => [p, combine(ss)]));
  }

  const cost = nodeCost(results);
  const stamp = new Date().toISOString();
  const v = versions();
  const about = `Measured ${stamp} on ${machine()}; ${Object.entries(v).map(([k, x]) => `${k} ${x}`).join(", ")}${Object.keys(v).length ? "; " : ""}` +
    `${SECONDS}s per run, ${ROUNDS} rounds alternating, median shown.`;
  const md = `${about}\n\n${markdown(results, cost)}`;
  log(`\n${md}`);
  // Only a full run (every case, every path) replaces the published results.
  const partial = ONLY !== undefined || process.env.BENCH_PATHS !== undefined;
  const out = partial ? join(dir, "partial") : RESULTS;
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, "latest.json"), JSON.stringify({ date: stamp, machine: machine(), versions: v, seconds: SECONDS, rounds: ROUNDS, paths: PATHS, results, nodeCost: cost, http2Legs: h2Legs }, null, 2) + "\n");
  writeFileSync(join(out, "latest.svg"), chart(results));
  writeFileSync(join(out, "latest.md"), md);
  log(partial ? "a partial run (BENCH_CASES or BENCH_PATHS set): results/ left as it was" : `wrote ${join(RESULTS, "latest.json")}, latest.svg and latest.md`);
}

async function cleanup(): Promise<void> {
  // A graceful stop first, so that --cpu-prof (BENCH_NODE_FLAGS) can write its profile.
  const t = proxies.tproxy;
  if (t && t.exitCode === null) {
    t.kill("SIGTERM");
    await Promise.race([new Promise((r) => t.once("exit", r)), new Promise((r) => setTimeout(r, 5000))]);
  }
  for (const c of children) c.kill("SIGKILL");
  for (const ns of [client, node, upstream]) await ns?.destroy().catch(() => undefined);
  if (memcg) await removeMemoryCgroup(memcg).catch((e: Error) => log(`bench: ${e.message}`));
  rmSync(dir, { recursive: true, force: true });
}

process.on("SIGINT", () => void cleanup().then(() => process.exit(130)));
try {
  await main();
} finally {
  await cleanup();
  await run("true", []);
}
