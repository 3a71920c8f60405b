// `npm run bench`: tproxy against mitmproxy and the direct path, in one run, through the same iptables
// REDIRECT rules, in network namespaces:
//
//   client (wrk, 10.77.1.2) ── node (router: REDIRECT to tproxy :8080 or mitmdump :8081, or none) ── upstream (nginx)
//
// Not a test: it prints numbers. Paths alternate within each case so drift on a shared machine hits
// all three alike; results are reported as ratios. Writes results/latest.json and results/latest.svg.
import { execFileSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { Netns, enableForwarding, hasCommand, link, must, removeStale, run, waitFor } from "../../../test/support/netns.ts";
import { TestCa } from "../../../test/support/pki.ts";

const REPO = resolve(import.meta.dirname, "../../..");
const RESULTS = join(import.meta.dirname, "results");
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const ONLY = process.env.BENCH_CASES?.split(",");
const PATHS = (process.env.BENCH_PATHS?.split(",") ?? ["direct", "tproxy", "mitmproxy"]) as PathName[];
const UPSTREAM = "10.77.2.10";
const NAME = "storage.googleapis.com";
const PREFIX = "/solutions-public-assets";
const HOSTNAMES = Array.from({ length: 200 }, (_, i) => `h${String(i).padStart(3, "0")}.bench.example`);

type PathName = "direct" | "tproxy" | "mitmproxy";

interface Sample {
  rps: number;
  mbps: number;
  p50ms: number;
  p99ms: number;
  errors: number;
  cpu?: number; // cores used by the proxy during the run
  rssMiB?: number; // proxy RSS at the end of the run
  peakRssMiB?: number; // proxy peak RSS so far (VmHWM)
}

interface Case {
  id: string;
  title: string;
  run(): Promise<Omit<Sample, "cpu" | "rssMiB" | "peakRssMiB">>;
  coldProxies?: boolean;
}

const log = (s: string) => process.stdout.write(`${s}\n`);

function preflight(): void {
  if (process.getuid?.() !== 0) {
    process.stderr.write("bench: needs root (network namespaces, iptables)\n");
    process.exit(1);
  }
  const missing = [["wrk", "wrk"], ["nginx", "nginx-light"], ["mitmdump", "mitmproxy"], ["iptables", "iptables"], ["curl", "curl"]].filter(([cmd]) => !hasCommand(cmd!));
  if (missing.length === 0) return;
  const pkgs = missing.map(([, p]) => p!).join(" ");
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

// ---- the world ----

let client: Netns;
let node: Netns;
let upstream: Netns;
const children: ChildProcess[] = [];
const dir = mkdtempSync(join(tmpdir(), "tproxy-bench-"));

async function buildWorld(): Promise<{ publicCa: string; tproxyCa: { cert: string; key: string } }> {
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
    listen ${UPSTREAM}:443 ssl;
    ssl_certificate ${cert.certPath};
    ssl_certificate_key ${cert.keyPath};
    root ${dir}/www;
  }
}
`);
  mkdirSync(join(dir, "tmp"));
  children.push(upstream.spawn("nginx", ["-c", conf, "-g", "daemon off; user root;"], { stdio: "ignore" }));
  await waitFor("nginx", async () => (await client.run("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", `http://${NAME}${PREFIX}/small`])).stdout === "200", 10_000, 100);

  const tproxyCa = { cert: join(dir, "tproxy-ca.pem"), key: join(dir, "tproxy-ca.key") };
  await must(process.execPath, [join(REPO, "packages/tproxy/dist/cli.js"), "ca", "create", "--cert", tproxyCa.cert, "--key", tproxyCa.key]);
  return { publicCa: ca.certPath, tproxyCa };
}

// Both filters make the tutorial's decision, for http and https alike: allow the bucket, 418 otherwise.
const TS_FILTER = `export default {
  request(flow) {
    if (!/^https?:\\/\\/(storage\\.googleapis\\.com|[a-z0-9-]+\\.bench\\.example)\\/solutions-public-assets\\//.test(flow.request.url)) {
      flow.respond(418, "Access Denied by Administrator", { "content-type": "text/html" });
    }
  },
};
`;
const PY_FILTER = `import re
from mitmproxy import http

ALLOWED = re.compile(r"^https?://(storage\\.googleapis\\.com|[a-z0-9-]+\\.bench\\.example)/solutions-public-assets/")

def request(flow):
    if not ALLOWED.match(flow.request.pretty_url):
        flow.response = http.Response.make(418, b"Access Denied by Administrator", {"Content-Type": "text/html"})
`;

const proxies: Partial<Record<"tproxy" | "mitmproxy", ChildProcess>> = {};
let env: { publicCa: string; tproxyCa: { cert: string; key: string } };

async function startProxies(): Promise<void> {
  for (const p of Object.values(proxies)) {
    p.kill("SIGKILL");
    await new Promise((r) => p.once("exit", r));
  }
  writeFileSync(join(dir, "filter.ts"), TS_FILTER);
  writeFileSync(join(dir, "filter.py"), PY_FILTER);
  if (PATHS.includes("tproxy")) {
    const nodeFlags = process.env.BENCH_NODE_FLAGS?.split(" ").filter(Boolean) ?? []; // e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
    proxies.tproxy = node.spawn(process.execPath, [...nodeFlags, join(REPO, "packages/tproxy/dist/cli.js"), "run", "--ca-cert", env.tproxyCa.cert, "--ca-key", env.tproxyCa.key,
      "--filter", join(dir, "filter.ts"), "--upstream-ca", env.publicCa, "--transparent-port", "8080", "--metrics-port", "9090",
      ...(process.env.BENCH_TPROXY_ARGS?.split(" ").filter(Boolean) ?? [])], { stdio: ["ignore", "ignore", "inherit"] });
    children.push(proxies.tproxy);
    await waitFor("tproxy", async () => (await node.run("curl", ["-s", "http://127.0.0.1:9090/readyz"])).stdout.startsWith("ready"), 15_000, 100);
  }
  if (PATHS.includes("mitmproxy")) {
    mkdirSync(join(dir, "mitmproxy"), { recursive: true });
    proxies.mitmproxy = node.spawn("mitmdump", ["--mode", "transparent", "--listen-port", "8081", "-s", join(dir, "filter.py"),
      "--set", `confdir=${join(dir, "mitmproxy")}`, "--set", `ssl_verify_upstream_trusted_ca=${env.publicCa}`], { stdio: "ignore" });
    children.push(proxies.mitmproxy);
    await waitFor("mitmdump", async () => (await node.run("sh", ["-c", "ss -ltn | grep -q ':8081 '"])).code === 0, 30_000, 200);
  }
}

async function usePath(path: PathName): Promise<void> {
  await node.must("iptables", ["-t", "nat", "-F", "PREROUTING"]);
  if (path === "direct") return;
  const port = path === "tproxy" ? "8080" : "8081";
  await node.must("iptables", ["-t", "nat", "-A", "PREROUTING", "-s", "10.77.1.2", "-p", "tcp", "-m", "multiport", "--dports", "80,443", "-j", "REDIRECT", "--to-ports", port]);
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

async function wrk(url: string, connections: number, extra: string[] = []): Promise<Omit<Sample, "cpu" | "rssMiB" | "peakRssMiB">> {
  const threads = Math.min(2, connections);
  const cmd = `ulimit -n $(ulimit -Hn); wrk -t${threads} -c${connections} -d${SECONDS}s --timeout 10s --latency ${extra.map((e) => `'${e}'`).join(" ")} ${url}`;
  const r = await client.run("sh", ["-c", cmd], { timeoutMs: (SECONDS + 30) * 1000 });
  const out = r.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0);
  const mbps = toMB(/Transfer\/sec:\s+(\S+)/.exec(out)?.[1] ?? "0B");
  const p50ms = toMs(/^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? "");
  const p99ms = toMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? "");
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = non2xx + (sockErr ? sockErr.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  if (rps === 0) log(`  wrk gave no result: ${r.stderr.trim() || out.trim()}`);
  return { rps, mbps, p50ms, p99ms, errors };
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
  console.log(JSON.stringify({ rps: names.length / secs, p50: lat[Math.floor(lat.length * 0.5)], p99: lat[Math.floor(lat.length * 0.99)], errors }));
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
  console.log(JSON.stringify({ rps: lat.length / ((performance.now() - t0) / 1000), p50: lat[Math.floor(lat.length * 0.5)], p99: lat[Math.floor(lat.length * 0.99)], errors }));
  process.exit(0);
});`;

async function paced(): Promise<Omit<Sample, "cpu" | "rssMiB" | "peakRssMiB">> {
  const r = await client.run(process.execPath, ["-e", PACED, small("https"), String(SECONDS)], { timeoutMs: (SECONDS + 30) * 1000 });
  const j = JSON.parse(r.stdout.trim()) as { rps: number; p50: number; p99: number; errors: number };
  return { rps: j.rps, mbps: 0, p50ms: j.p50, p99ms: j.p99, errors: j.errors };
}

async function distinctNames(): Promise<Omit<Sample, "cpu" | "rssMiB" | "peakRssMiB">> {
  const r = await client.run(process.execPath, ["-e", DISTINCT, ...HOSTNAMES], { timeoutMs: 120_000 });
  const j = JSON.parse(r.stdout.trim()) as { rps: number; p50: number; p99: number; errors: number };
  return { rps: j.rps, mbps: 0, p50ms: j.p50, p99ms: j.p99, errors: j.errors };
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
];

// ---- measuring the proxy ----

/** The process and all its descendants (a proxy's workers). */
function tree(pid: number): number[] {
  const out = [pid];
  try {
    for (const tid of readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean)) out.push(...tree(Number(tid)));
  } catch {
    // gone
  }
  return out;
}

/** CPU ticks, RSS and peak RSS summed over a process tree. */
function procStat(root: number): { cpuTicks: number; rss: number; hwm: number } {
  const sum = { cpuTicks: 0, rss: 0, hwm: 0 };
  for (const pid of tree(root)) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) * 1024;
      // utime + stime, and those of waited-for children
      sum.cpuTicks += Number(fields[11]) + Number(fields[12]);
      sum.rss += kb("VmRSS");
      sum.hwm += kb("VmHWM");
    } catch {
      // the process ended meanwhile
    }
  }
  return sum;
}

async function measure(path: PathName, c: Case): Promise<Sample> {
  await usePath(path);
  const pid = path === "direct" ? undefined : proxies[path]?.pid;
  const before = pid ? procStat(pid) : undefined;
  const t0 = performance.now();
  const s: Sample = await c.run();
  const secs = (performance.now() - t0) / 1000;
  if (path === "tproxy" && process.env.BENCH_DEBUG) {
    const m = (await node.run("curl", ["-s", "http://127.0.0.1:9090/metrics"])).stdout;
    log(m.split("\n").filter((l) => /^tproxy_(nodejs_heap_size|nodejs_external|process_resident|open_conn)/.test(l)).join("\n"));
  }
  if (pid && before) {
    const after = procStat(pid);
    s.cpu = (after.cpuTicks - before.cpuTicks) / 100 / secs;
    s.rssMiB = after.rss / 2 ** 20;
    s.peakRssMiB = after.hwm / 2 ** 20;
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
  return {
    rps: pick("rps")!, mbps: pick("mbps")!, p50ms: pick("p50ms")!, p99ms: pick("p99ms")!,
    errors: samples.reduce((a, s) => a + s.errors, 0),
    cpu: pick("cpu"), rssMiB: pick("rssMiB"),
    peakRssMiB: Math.max(...samples.map((s) => s.peakRssMiB ?? 0)) || undefined,
  };
}

// ---- report ----

function fmt(n: number | undefined, digits = 0): string {
  return n === undefined || Number.isNaN(n) ? "—" : n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function chart(results: Record<string, Record<PathName, Sample>>): string {
  // Throughput cases only: the steady-load case runs at a fixed rate, so its ratio says nothing.
  const ids = Object.keys(results).filter((id) => id !== "https-paced");
  const W = 820, rowH = 44, left = 290, barMax = W - left - 130;
  const H = 60 + ids.length * rowH + 30;
  const ratios = ids.map((id) => {
    const r = results[id]!;
    return { id, t: r.tproxy && r.direct ? r.tproxy.rps / r.direct.rps : 0, m: r.mitmproxy && r.direct ? r.mitmproxy.rps / r.direct.rps : 0 };
  });
  const bar = (y: number, v: number, color: string, label: string) =>
    `<rect x="${left}" y="${y}" width="${Math.max(1, Math.min(1, v) * barMax)}" height="14" fill="${color}"/><text x="${left + Math.min(1, v) * barMax + 6}" y="${y + 11}" font-size="11">${label} ${(v * 100).toFixed(1)}%</text>`;
  const rows = ratios.map((r, i) => {
    const y = 50 + i * rowH;
    const title = CASES.find((c) => c.id === r.id)?.title ?? r.id;
    return `<text x="10" y="${y + 18}" font-size="12">${title}</text>${bar(y, r.t, "#2b6cb0", "tproxy")}${bar(y + 17, r.m, "#c05621", "mitmproxy")}`;
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
    const { results } = JSON.parse(readFileSync(join(RESULTS, "latest.json"), "utf8")) as { results: Record<string, Record<PathName, Sample>> };
    writeFileSync(join(RESULTS, "latest.svg"), chart(results));
    log(`redrew ${join(RESULTS, "latest.svg")}`);
    return;
  }
  preflight();
  log(`tproxy bench: ${SECONDS}s per run, ${ROUNDS} rounds, paths alternating (${PATHS.join(", ")})`);
  log(`machine: ${machine()}`);
  env = await buildWorld();
  await startProxies();
  const results: Record<string, Record<PathName, Sample>> = {};
  for (const c of CASES.filter((c) => !ONLY || ONLY.includes(c.id))) {
    const samples: Record<string, Sample[]> = {};
    for (let round = 0; round < ROUNDS; round += 1) {
      if (c.coldProxies) await startProxies();
      for (const path of PATHS) {
        if (c.coldProxies && round > 0) await startProxies();
        const s = await measure(path, c);
        (samples[path] ??= []).push(s);
        log(`  ${c.id} ${path} round ${round + 1}: ${fmt(s.rps)} req/s, p50 ${fmt(s.p50ms, 2)} ms, p99 ${fmt(s.p99ms, 2)} ms${s.errors ? `, ${s.errors} errors` : ""}`);
      }
    }
    results[c.id] = Object.fromEntries(Object.entries(samples).map(([p, ss]) => [p, combine(ss)])) as Record<PathName, Sample>;
  }

  const header = "| case | direct req/s | tproxy req/s | mitmproxy req/s | tproxy/direct | mitmproxy/direct | tproxy/mitmproxy | p50 / p99 ms (direct, tproxy, mitmproxy) | tproxy CPU, RSS / peak MiB | mitmproxy CPU, RSS MiB |";
  const lines = [header, "|---|---:|---:|---:|---:|---:|---:|---|---|---|"];
  for (const c of CASES) {
    const r = results[c.id];
    if (!r) continue;
    const d = r.direct, t = r.tproxy, m = r.mitmproxy;
    const ratio = (a?: Sample, b?: Sample) => (a && b && b.rps ? `${(a.rps / b.rps * (b === d ? 100 : 1)).toFixed(b === d ? 1 : 1)}${b === d ? "%" : "×"}` : "—");
    const lat = [d, t, m].map((s) => (s ? `${fmt(s.p50ms, 2)}/${fmt(s.p99ms, 2)}` : "—")).join(", ");
    const mb = c.id === "https-1mib" ? ` (${fmt(d?.mbps)}, ${fmt(t?.mbps)}, ${fmt(m?.mbps)} MB/s)` : "";
    lines.push(`| ${c.title}${mb} | ${fmt(d?.rps)} | ${fmt(t?.rps)} | ${fmt(m?.rps)} | ${ratio(t, d)} | ${ratio(m, d)} | ${ratio(t, m)} | ${lat} | ${t ? `${fmt(t.cpu, 2)} cores, ${fmt(t.rssMiB)} / ${fmt(t.peakRssMiB)}` : "—"} | ${m ? `${fmt(m.cpu, 2)} cores, ${fmt(m.rssMiB)}` : "—"} |`);
  }
  const table = lines.join("\n");
  log(`\n${table}\n`);
  // Only a full run (every case, every path) replaces the published results.
  const partial = ONLY !== undefined || process.env.BENCH_PATHS !== undefined;
  const out = partial ? join(dir, "partial") : RESULTS;
  mkdirSync(out, { recursive: true });
  const stamp = new Date().toISOString();
  writeFileSync(join(out, "latest.json"), JSON.stringify({ date: stamp, machine: machine(), seconds: SECONDS, rounds: ROUNDS, results }, null, 2) + "\n");
  writeFileSync(join(out, "latest.svg"), chart(results));
  writeFileSync(join(out, "latest.md"), `Measured ${stamp} on ${machine()}; ${SECONDS}s per run, ${ROUNDS} rounds alternating, median shown.\n\n${table}\n`);
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
  rmSync(dir, { recursive: true, force: true });
}

process.on("SIGINT", () => void cleanup().then(() => process.exit(130)));
try {
  await main();
} finally {
  await cleanup();
  await run("true", []);
}
