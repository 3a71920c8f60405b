// HTTP/2 from the pod: a locked pod's TLS client that chooses h2 in ALPN gets HTTP/2, and every stream is one
// request of the same pipeline as HTTP/1.1 (filter, :authority against SNI, path normalisation), with the
// session's flood bounds. Real curl and Node's http2 client in the pod's namespace, the real proxy, real upstreams.
import { expect } from "chai";
import { join } from "node:path";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { GOOGLE_IP, POD_IP, ProxyWorld, STORAGE_IP, type Proc } from "../../../test/support/world.ts";

const CLIENT = join(import.meta.dirname, "h2-client.ts");

const FILTER = `
import type { Filter } from "@tproxy/tproxy/filter";
export default {
  request(flow) {
    // What the filter saw, for the upstream's /headers echo to show.
    flow.request.headers["x-filter-path"] = flow.request.path;
    flow.request.headers["x-filter-host"] = flow.request.host;
    if (flow.request.host !== "storage.googleapis.com" || flow.request.path.startsWith("/headers/denied")) {
      flow.respond(418, "Access Denied by Administrator", { "content-type": "text/html" });
    }
  },
} satisfies Filter;
`;

interface StreamResult {
  status: number;
  headers: Record<string, unknown>;
  body: string;
  error?: string;
}

describe("HTTP/2 from the pod, judged per stream (network namespaces, iptables REDIRECT)", function () {
  this.timeout(60_000);
  let world: ProxyWorld;
  let proxy: Proc;
  let ca: { cert: string; key: string };

  before(async function () {
    world = await ProxyWorld.create("th2");
    ca = await world.makeProxyCa();
    const filterDir = join(world.dir, "filter");
    writeConfigMap(filterDir, { "filter.ts": FILTER });
    proxy = await world.startProxy(["--ca-cert", ca.cert, "--ca-key", ca.key, "--filter", join(filterDir, "filter.ts"), "--upstream-ca", world.publicCa.certPath, "--workers", "1", "--idle-timeout", "1000", "--http2"]);
    await world.redirectPod();
  });
  after(async () => {
    await world?.close();
  });

  const curl = async (args: string[]) => {
    const r = await world.curl(["--cacert", ca.cert, "-w", "\n%{http_code} %{http_version}", ...args]);
    const i = r.stdout.lastIndexOf("\n");
    const [status, version] = r.stdout.slice(i + 1).split(" ");
    return { body: r.stdout.slice(0, i), status: Number(status), version, stderr: r.stderr };
  };

  const h2 = async (spec: Record<string, unknown>): Promise<string> => {
    const r = await world.pod.run(process.execPath, [CLIENT, JSON.stringify({ ca: ca.cert, ...spec })], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`h2 client failed (${r.code}): ${r.stderr}`);
    return r.stdout;
  };
  const streams = async (servername: string, requests: Array<{ path: string; authority?: string; method?: string }>): Promise<StreamResult[]> =>
    JSON.parse(await h2({ mode: "requests", host: servername, servername, requests })) as StreamResult[];

  it("offers HTTP/1.1 only with --http2 off (control: the same request to the default proxy gets HTTP/2)", async () => {
    // A second proxy, --http2 off, takes the pod's connections to www.google.com only.
    const off = await world.startProxy(["--ca-cert", ca.cert, "--ca-key", ca.key, "--filter", join(world.dir, "filter", "filter.ts"), "--upstream-ca", world.publicCa.certPath, "--workers", "1", "--transparent-port", "15180", "--metrics-port", "15181", "--http2", "off"]);
    const rule = ["PREROUTING", "-s", POD_IP, "-d", GOOGLE_IP, "-p", "tcp", "--dport", "443", "-j", "REDIRECT", "--to-ports", "15180"];
    await world.node.must("iptables", ["-t", "nat", "-I", ...rule]);
    try {
      const r = await curl(["--http2", "https://www.google.com/"]);
      expect([r.status, r.version]).to.deep.equal([418, "1.1"]);
      const control = await curl(["--http2", "https://storage.googleapis.com/allowed"]);
      expect([control.status, control.version]).to.deep.equal([200, "2"]);
    } finally {
      await world.node.must("iptables", ["-t", "nat", "-D", ...rule]);
      await off.stop("SIGTERM");
    }
  });

  it("refuses cleartext HTTP/2 (prior knowledge) in HTTP/2's terms: GOAWAY HTTP_1_1_REQUIRED with the reason", async () => {
    // Node's own HTTP/2 client, over plain TCP to port 80 (REDIRECTed to the proxy like any request).
    const script = `
      const s = require("node:http2").connect("http://www.google.com");
      s.on("goaway", (code, last, data) => { console.log(JSON.stringify({ code, last, data: data.toString() })); });
      s.on("error", () => undefined);
      s.on("close", () => process.exit(0));
      s.request({ ":path": "/" }).on("error", () => undefined).end();`;
    const r = await world.pod.run(process.execPath, ["-e", script], { timeoutMs: 15_000 });
    expect(JSON.parse(r.stdout.trim().split("\n")[0]!)).to.deep.equal({ code: 13, last: 0, data: "tproxy: cleartext HTTP/2 is not served; use HTTP/1.1, or HTTP/2 over TLS" });
    // Control: HTTP/1.1 on the same port is judged as usual (the filter's 418).
    const h1 = await world.curl(["-o", "/dev/null", "-w", "%{http_code}", "http://www.google.com/"]);
    expect(h1.stdout).to.equal("418");
  });

  it("answers curl --http2 with the filter's decisions, over HTTP/2; --http1.1 still works", async () => {
    const ok = await curl(["--http2", "https://storage.googleapis.com/allowed"]);
    expect(ok.status).to.equal(200);
    expect(ok.version).to.equal("2");
    expect(ok.body).to.equal("storage.googleapis.com GET /allowed\n");
    const denied = await curl(["--http2", "https://www.google.com/"]);
    expect(denied.status).to.equal(418);
    expect(denied.version).to.equal("2");
    expect(denied.body).to.equal("Access Denied by Administrator");
    const h1 = await curl(["--http1.1", "https://storage.googleapis.com/allowed"]);
    expect(h1.status).to.equal(200);
    expect(h1.version).to.equal("1.1");
    expect(h1.body).to.equal("storage.googleapis.com GET /allowed\n");
    // Each stream is a request line of its own, marked h2.
    const lines = proxy.lines.filter((l) => l.includes("https://storage.googleapis.com/allowed"));
    expect(lines.some((l) => / -> 200 .* h2$/.test(l)), lines.join("\n")).to.equal(true);
  });

  it("judges each stream of one connection on its own: an allowed and a denied stream each get their status", async () => {
    const [a, d, b] = await streams("storage.googleapis.com", [{ path: "/headers/a" }, { path: "/headers/denied" }, { path: "/headers/b" }]);
    expect(d!.status).to.equal(418);
    expect(d!.body).to.equal("Access Denied by Administrator");
    for (const [r, path] of [[a!, "/headers/a"], [b!, "/headers/b"]] as const) {
      expect(r.status, r.error).to.equal(200);
      const seen = JSON.parse(r.body) as Record<string, string>;
      // The filter ran on this stream and its header reached the upstream (over HTTP/1.1, no pseudo-headers).
      expect(seen["x-filter-path"]).to.equal(path);
      expect(seen.host).to.equal("storage.googleapis.com");
      expect(Object.keys(seen).filter((k) => k.startsWith(":"))).to.deep.equal([]);
    }
  });

  it("refuses a stream whose :authority differs from the SNI as HTTP/1.1 refuses a Host/SNI mismatch (421)", async () => {
    const h1 = await curl(["--http1.1", "-H", "Host: www.google.com", "https://storage.googleapis.com/front"]);
    expect(h1.status).to.equal(421);
    // Connection coalescing: one connection made for storage.googleapis.com, a stream for www.google.com.
    const [mismatch, match] = await streams("storage.googleapis.com", [
      { path: "/headers/front", authority: "www.google.com" },
      { path: "/headers/front", authority: "storage.googleapis.com" },
    ]);
    expect(mismatch!.status).to.equal(421);
    expect(mismatch!.body).to.match(/^tproxy: Host "www\.google\.com" does not match the TLS server name "storage\.googleapis\.com"/);
    // The control on the same connection passes and reaches the upstream.
    expect(match!.status).to.equal(200);
    expect((JSON.parse(match!.body) as Record<string, string>)["x-filter-host"]).to.equal("storage.googleapis.com");
  });

  it("normalises a stream's path exactly as an HTTP/1.1 request's", async () => {
    const raw = "/x/../headers/./a/%2e%2e/b";
    const h1 = await curl(["--http1.1", "--path-as-is", `https://storage.googleapis.com${raw}`]);
    expect(h1.status).to.equal(200);
    const h1Path = (JSON.parse(h1.body) as Record<string, string>)["x-filter-path"];
    const [r] = await streams("storage.googleapis.com", [{ path: raw }]);
    expect(r!.status).to.equal(200);
    expect((JSON.parse(r!.body) as Record<string, string>)["x-filter-path"]).to.equal(h1Path).and.to.equal("/headers/b");
  });

  it("refuses CONNECT over HTTP/2 with a clear status", async () => {
    const [r] = await streams("storage.googleapis.com", [{ path: "", method: "CONNECT", authority: "storage.googleapis.com:443" }]);
    expect(r!.status).to.equal(501);
    expect(r!.body).to.match(/CONNECT over HTTP\/2/);
  });

  it("closes a session idle for --idle-timeout (1 s here), never one whose stream is still open", async () => {
    const out = JSON.parse(await h2({ mode: "idle", host: "storage.googleapis.com", servername: "storage.googleapis.com", requests: [{ path: "/slow/2500" }] })) as {
      results: StreamResult[];
      closed: boolean;
    };
    // The control: a stream open longer than the idle bound is answered.
    expect(out.results[0]!.status, out.results[0]!.error).to.equal(200);
    expect(out.results[0]!.body).to.equal("storage.googleapis.com slow 2500\n");
    // Then, with no stream open, the session is closed (the client waits up to 15 s: a bound, not a speed).
    expect(out.closed).to.equal(true);
  });

  it("ends a session that resets streams rapidly, and keeps serving another client", async () => {
    const flood = h2({ mode: "rapid-reset", host: STORAGE_IP, servername: "storage.googleapis.com", streams: 20_000 });
    // The control, while the flood runs.
    const [control] = await streams("storage.googleapis.com", [{ path: "/during-flood" }]);
    const result = JSON.parse(await flood) as { sent: number; goaway: number | null; closed: boolean; ms: number };
    // Ended by the proxy with GOAWAY before the client sent everything (without the bound: no GOAWAY, all sent).
    expect(result.goaway, JSON.stringify(result)).to.not.equal(null);
    expect(result.sent, JSON.stringify(result)).to.be.below(20_000);
    expect(control!.status).to.equal(200);
    const [after] = await streams("storage.googleapis.com", [{ path: "/after-flood" }]);
    expect(after!.status).to.equal(200);
    expect(after!.body).to.equal("storage.googleapis.com GET /after-flood\n");
  });
});
