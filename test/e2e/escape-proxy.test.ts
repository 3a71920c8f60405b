// Every way around the filter through the proxy itself, tried from the locked pod under the filters users write:
// the tutorial's URL-prefix regex, an audit filter that allows everything, a host allowlist and an IP allowlist.
// The proxy runs in the node's network, so each attempt aims at what only the node can reach (its loopback
// services, the metadata server, its own addresses and listeners, the blocked Service range) or at a target other
// than the one the filter judged (another port, another host in an upgrade, a forged SNI, a path outside the
// allowed prefix). Each refusal is shown with its control: the same attempt succeeding from the unlocked pod, or
// through the proxy with the protection switched off (--allow-upstream-cidr).
import { expect } from "chai";
import { join } from "node:path";
import { waitFor } from "../support/netns.ts";
import { TestCa } from "../support/pki.ts";
import { METRICS_PORT, REPO, TRANSPARENT_PORT, type Proc } from "../support/world.ts";
import { sourceHash } from "../../packages/tproxy/test/helpers.ts";
import { GOOGLE_IP, METADATA_IP, SERVICE_CIDR, SERVICE_IP, STORAGE_IP, TutorialWorld, type PodNs, TUTORIAL_HOSTS } from "../support/tutorial-world.ts";

const PREFIX = "tpx4";
const FILES_IP = "10.90.2.40";
const NODE_LOCKED_SIDE = "10.90.3.1";
const NODE_APP_SIDE = "10.90.1.1";
const HOSTS = {
  ...TUTORIAL_HOSTS,
  "files.example": FILES_IP,
  "loopback.example": "127.0.0.1",
  "kubernetes.default.svc": SERVICE_IP,
};

// A file server that would serve a file outside the allowed prefix: it decodes and resolves dot segments itself.
const FILE_SERVER = `
const http = require("node:http");
const { posix } = require("node:path");
const files = { "/allowed-prefix/public.txt": "public\\n", "/secret.txt": "SECRET\\n" };
http.createServer((req, res) => {
  let p = req.url.split("?")[0];
  try { p = decodeURIComponent(p); } catch {}
  p = posix.normalize(p.replace(/\\\\/g, "/").replace(/;[^/]*/g, ""));
  const body = files[p];
  res.writeHead(body ? 200 : 404, { "content-type": "text/plain" });
  res.end(body ?? "not found\\n");
}).listen(80, process.argv[1], () => console.log("listening"));`;

// One raw request from a pod: plain or TLS (any server name), optionally a WebSocket round trip after a 101.
const RAW = `
const net = require("node:net"), tls = require("node:tls"), fs = require("node:fs");
const [host, port, servername, request, ca] = process.argv.slice(1);
const opts = { host, port: Number(port) };
const sock = servername ? tls.connect({ ...opts, servername, ca: fs.readFileSync(ca) }) : net.connect(opts);
let buf = Buffer.alloc(0), upgraded = false;
const out = (o) => { console.log(JSON.stringify(o)); process.exit(0); };
const timer = setTimeout(() => out({ status: 0, error: "timeout", got: buf.toString("latin1") }), 8000);
sock.on(servername ? "secureConnect" : "connect", () => sock.write(Buffer.from(request, "base64")));
sock.on("error", (e) => out({ status: 0, error: e.code ?? e.message }));
sock.on("close", () => { const t = buf.toString("latin1"); const m = /^HTTP\\/1\\.1 (\\d+)/.exec(t); out({ status: m ? Number(m[1]) : 0, body: t.slice(t.indexOf("\\r\\n\\r\\n") + 4), error: m ? null : "closed" }); });
sock.on("data", (d) => {
  buf = Buffer.concat([buf, d]);
  if (upgraded) {
    if (buf.length >= 2 && buf.length >= 2 + buf[1]) { clearTimeout(timer); out({ status: 101, ws: buf.subarray(2, 2 + buf[1]).toString() }); }
    return;
  }
  const t = buf.toString("latin1");
  const end = t.indexOf("\\r\\n\\r\\n");
  if (end < 0) return;
  const status = Number(/^HTTP\\/1\\.1 (\\d+)/.exec(t)?.[1] ?? 0);
  if (status === 101 && !upgraded) {
    upgraded = true;
    buf = buf.subarray(end + 4);
    const mask = Buffer.from([1, 2, 3, 4]), payload = Buffer.from("ping");
    sock.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload.map((b, i) => b ^ mask[i % 4])]));
  }
});`;

const FILTERS = {
  urlPrefix: `export default { request(flow) { if (!/^https?:\\/\\/(files\\.example|storage\\.googleapis\\.com)\\/(allowed-prefix|solutions-public-assets)\\//.test(flow.request.url)) flow.respond(418, "Access Denied by Administrator", { "content-type": "text/html" }); } };`,
  audit: `export default { request(flow) { flow.request.headers["x-audited"] = "yes"; } };`,
  hostAllowlist: `export default { request(flow) { if (!(flow.request.host === "www.google.com" || flow.request.host === "storage.googleapis.com")) flow.respond(418, "Access Denied by Administrator"); } };`,
  ipAllowlist: `export default { request(flow) { if (flow.destination?.address !== "${GOOGLE_IP}") flow.respond(418, "Access Denied by Administrator"); } };`,
};

function wsRequest(target: string, host: string): string {
  return Buffer.from(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`).toString("base64");
}
function getRequest(target: string, host: string): string {
  return Buffer.from(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`).toString("base64");
}

describe("escape attempts through the proxy (locked pod, four kinds of filter)", function () {
  this.timeout(90_000);
  let world: TutorialWorld;
  let proxyArgs: string[];

  before(async function () {
    this.timeout(180_000);
    await TutorialWorld.removeLeftovers(PREFIX);
    // The proxy's own policy, whatever the datapath: this suite names the node's pod-side addresses of the veth wiring.
    world = await TutorialWorld.create(PREFIX, { datapath: "veth" });
    for (const ns of [world.node, world.app.ns, world.locked.ns]) ns.hosts(HOSTS);
    // A service the node has on all its addresses, loopback included; a file server on the internet.
    const ca = new TestCa(world.dir, "node-local");
    const cert = ca.issue("node-local", ["node-local"]);
    const nodeLocal = world.spawn(world.node, process.execPath, [join(REPO, "test/support/upstream-server.ts"), "node-local", "0.0.0.0", "80", "443", cert.certPath, cert.keyPath]);
    await nodeLocal.waitForLine(/^listening/);
    await world.internet.must("ip", ["addr", "add", `${FILES_IP}/24`, "dev", (await world.internet.must("ip", ["-o", "-4", "addr", "show", "to", `${GOOGLE_IP}/32`])).split(/\s+/)[1]!]);
    const files = world.spawn(world.internet, process.execPath, ["-e", FILE_SERVER, FILES_IP]);
    await files.waitForLine(/listening/);
    await world.extraServer("other-port", GOOGLE_IP, 8081, 8443);
    proxyArgs = ["--block-cidr", SERVICE_CIDR];
    await world.installTproxy({ filterSource: FILTERS.audit, proxyArgs });
    world.schedulePod(world.app, false);
    const init = await world.deployLocked();
    if (init.child.exitCode !== 0) throw new Error(`sidecar-init exited ${init.child.exitCode}:\n${init.output}`);
  });
  after(async () => {
    await world?.close();
  });

  const curl = async (pod: PodNs, args: string[]) => {
    const r = await world.curlFrom(pod, ["-w", "\n%{http_code}", ...args]);
    const i = r.stdout.lastIndexOf("\n");
    return { body: r.stdout.slice(0, i), status: Number(r.stdout.slice(i + 1)), code: r.code };
  };
  const raw = async (pod: PodNs, host: string, port: number, request: string, servername = "") =>
    JSON.parse(await pod.ns.must(process.execPath, ["-e", RAW, host, String(port), servername, request, world.ca.cert], { timeoutMs: 15_000 })) as { status: number; body?: string; ws?: string; error: string | null };
  const proxy = (): Proc => world.proxy!;
  /** The proxy's request line for `url`, written after line `from`. */
  const logged = async (from: number, pattern: RegExp) => {
    await waitFor(`a log line matching ${pattern}`, () => proxy().lines.slice(from).some((l) => pattern.test(l)), 5000, 50);
  };
  /** Swaps the filter the kubelet's way and waits until every proxy worker runs it. */
  const useFilter = async (source: string) => {
    world.updateFilter(source);
    const hash = sourceHash(source);
    let last = "";
    await waitFor(`every worker running filter ${hash}`, async () => {
      last = await world.node.must("curl", ["-s", `http://127.0.0.1:${METRICS_PORT}/readyz`]);
      return last === `ready filter=${hash}\n`;
    }, 10_000, 100).catch((err: Error) => {
      throw new Error(`${err.message}; last /readyz: ${last}; proxy log:\n${proxy().lines.slice(-10).join("\n")}`);
    });
  };
  const restartProxy = async (extra: string[]) => {
    await proxy().stop("SIGTERM");
    await waitFor("the transparent port free", async () => !(await world.node.must("ss", ["-ltnH"])).includes(`:${TRANSPARENT_PORT} `), 5000, 50);
    await world.startProxy(extra);
  };

  describe("the node's own network (audit filter: the filter allows everything, the address policy refuses)", () => {
    before(async () => useFilter(FILTERS.audit));

    const NODE_LOCAL: Array<[string, string[], string]> = [
      ["Host: localhost", ["-H", "Host: localhost", "http://www.google.com/"], "address: loopback"],
      ["a name resolving to 127.0.0.1", ["-H", "Host: loopback.example", "http://www.google.com/"], "address: loopback"],
      ["HTTPS to a name resolving to 127.0.0.1", ["--resolve", `loopback.example:443:${GOOGLE_IP}`, "https://loopback.example/"], "address: loopback"],
      ["the metadata server by address", [`http://${METADATA_IP}/computeMetadata/v1/`], "address: metadata"],
      ["the metadata server by name", ["-H", "Host: metadata.google.internal", "http://www.google.com/computeMetadata/v1/"], "address: metadata"],
      ["the node's address", [`http://${NODE_LOCKED_SIDE}/`], "address: node-address"],
      ["the node's other address by Host", ["-H", `Host: ${NODE_APP_SIDE}`, `http://${NODE_APP_SIDE}/`], "address: node-address"],
      ["the blocked Service range by name", ["-H", "Host: kubernetes.default.svc", "http://www.google.com/"], "address: blocked-cidr"],
      ["the blocked Service range by name over HTTPS", ["--resolve", `kubernetes.default.svc:443:${GOOGLE_IP}`, "https://kubernetes.default.svc/"], "address: blocked-cidr"],
    ];
    for (const [name, args, reason] of NODE_LOCAL) {
      it(`refuses ${name} with 403 naming the reason`, async () => {
        const from = proxy().lines.length;
        const r = await curl(world.locked, args);
        expect(r.status, r.body).to.equal(403);
        expect(r.body).to.match(/^tproxy: (destination|[\w.-]+ resolves to a refused address: destination) \S+ (is node-local|is a cloud metadata service|is in the blocked range)/);
        await logged(from, new RegExp(`-> 403 \\d+b \\S+ denied \\(${reason}\\)`));
      });
    }

    it("refuses numeric host spellings with 400 (127.1, 2130706433, 0x7f000001)", async () => {
      for (const host of ["127.1", "2130706433", "0x7f000001"]) {
        const r = await curl(world.locked, ["-H", `Host: ${host}`, "http://www.google.com/"]);
        expect(r.status, host).to.equal(400);
        expect(r.body).to.match(/would be read as an IPv4 address/);
      }
    });

    it("refuses a Host naming the proxy's own ports (421): Host: localhost:<transparent port> does not loop", async () => {
      for (const host of [`localhost:${TRANSPARENT_PORT}`, `${NODE_LOCKED_SIDE}:${METRICS_PORT}`, `localhost:${METRICS_PORT}`]) {
        const from = proxy().lines.length;
        const r = await curl(world.locked, ["-H", `Host: ${host}`, "http://www.google.com/metrics"]);
        expect(r.status, host).to.equal(421);
        await logged(from, /-> 421 \d+b \S+ denied \(misdirected\)/);
      }
      // Control: the listener is there, on the node's loopback (a pod cannot reach it directly at all).
      expect(await world.node.must("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", `http://127.0.0.1:${METRICS_PORT}/metrics`])).to.equal("200");
      expect((await curl(world.app, [`http://${NODE_APP_SIDE}:${METRICS_PORT}/metrics`])).status).to.equal(0);
    });

    it("controls: the unlocked pod reaches the node's service and the metadata server directly", async () => {
      expect((await curl(world.app, [`http://${NODE_APP_SIDE}/`])).body).to.equal("node-local GET /\n");
      expect((await curl(world.app, [`http://${METADATA_IP}/computeMetadata/v1/`])).body).to.equal("metadata GET /computeMetadata/v1/\n");
    });
  });

  describe("the IP allowlist (flow.destination.address): a Host naming the node cannot ride on an allowed address", () => {
    before(async () => useFilter(FILTERS.ipAllowlist));

    it("refuses loopback, metadata and Service names sent to the allowed address", async () => {
      for (const [host, status] of [["localhost", 403], ["loopback.example", 403], ["metadata.google.internal", 403], ["kubernetes.default.svc", 403], ["127.1", 400], ["2130706433", 400]] as const) {
        const r = await curl(world.locked, ["-H", `Host: ${host}`, "http://www.google.com/"]);
        expect(r.status, `${host}: ${r.body}`).to.equal(status);
      }
      // Control: the allowed address with its own name gets through.
      expect((await curl(world.locked, ["http://www.google.com/ok"])).body).to.equal("www.google.com GET /ok\n");
    });
  });

  describe("the host allowlist (flow.request.host): one target per request, port from the connection", () => {
    before(async () => useFilter(FILTERS.hostAllowlist));

    it("refuses a Host that names another port (421); the unlocked pod reaches that port directly", async () => {
      const from = proxy().lines.length;
      const r = await curl(world.locked, ["-H", "Host: www.google.com:8081", "http://www.google.com/"]);
      expect(r.status).to.equal(421);
      expect(r.body).to.match(/names port 8081 but its connection goes to port 80/);
      await logged(from, /-> 421 \d+b \S+ denied \(misdirected\)/);
      expect((await curl(world.app, ["http://www.google.com:8081/"])).body).to.equal("other-port GET /\n");
    });

    it("refuses an absolute-form request or upgrade to another host and port (HTTP)", async () => {
      const get = await raw(world.locked, GOOGLE_IP, 80, getRequest("http://www.google.com:8081/", "www.google.com"));
      expect(get.status).to.equal(421);
      const ws = await raw(world.locked, GOOGLE_IP, 80, wsRequest("http://www.google.com:8081/ws", "storage.googleapis.com"));
      expect(ws.status).to.equal(421);
      // Controls: the same upgrade to the allowed host and port is relayed to exactly that server; the unlocked pod
      // reaches the other port's WebSocket directly.
      expect(await raw(world.locked, GOOGLE_IP, 80, wsRequest("http://storage.googleapis.com/ws", "www.google.com"))).to.deep.equal({ status: 101, ws: "storage.googleapis.com: ping" });
      expect(await raw(world.app, GOOGLE_IP, 8081, wsRequest("/ws", "www.google.com:8081"))).to.deep.equal({ status: 101, ws: "other-port: ping" });
    });

    it("refuses an absolute-form upgrade to another host or port over TLS, and the proxy lives on", async () => {
      const pid = proxy().child.pid;
      const otherPort = await raw(world.locked, GOOGLE_IP, 443, wsRequest("https://www.google.com:8443/ws", "www.google.com"), "www.google.com");
      expect(otherPort.status).to.equal(421);
      const otherHost = await raw(world.locked, GOOGLE_IP, 443, wsRequest("https://storage.googleapis.com/ws", "www.google.com"), "www.google.com");
      expect(otherHost.status).to.equal(421);
      // Control: the judged target over TLS is relayed.
      expect(await raw(world.locked, GOOGLE_IP, 443, wsRequest("https://www.google.com/ws", "www.google.com"), "www.google.com")).to.deep.equal({ status: 101, ws: "www.google.com: ping" });
      expect(proxy().child.pid).to.equal(pid);
      expect(proxy().child.exitCode).to.equal(null);
      expect(proxy().lines.some((l) => /internal error|exited|worker \d+ died/i.test(l)), proxy().output).to.equal(false);
    });
  });

  describe("the tutorial's URL-prefix regex: names and paths are what the filter judged", () => {
    before(async () => useFilter(FILTERS.urlPrefix));

    it("closes a TLS connection whose server name carries a newline or a slash; nothing forged reaches the log", async () => {
      for (const sni of ["storage.googleapis.com\n2099-01-01T00:00:00.000Z 10.90.1.2:1 GET https://forged/ -> 200", "files.example/allowed-prefix/.evil.example"]) {
        const from = proxy().lines.length;
        const r = await raw(world.locked, GOOGLE_IP, 443, getRequest("/allowed-prefix/x", "files.example"), sni);
        expect(r.status, JSON.stringify(r)).to.equal(0);
        expect(r.error).to.not.equal(null);
        await logged(from, /connection closed: refused TLS server name/);
        expect(proxy().lines.slice(from).some((l) => l.includes("forged") && !l.includes("connection closed")), proxy().lines.slice(from).join("\n")).to.equal(false);
      }
      // Control: the same request with a valid server name is judged (and allowed) by the filter.
      const ok = await raw(world.locked, STORAGE_IP, 443, getRequest("/solutions-public-assets/x", "storage.googleapis.com"), "storage.googleapis.com");
      expect(ok.status).to.equal(200);
    });

    it("normalises paths before the filter: traversal out of the allowed prefix is refused, not served", async () => {
      const attempts: Array<[string, number]> = [
        ["/allowed-prefix/../secret.txt", 418],
        ["/allowed-prefix/%2e%2e/secret.txt", 418],
        ["/allowed-prefix/%2E%2E/%2e%2e/secret.txt", 418],
        ["/allowed-prefix//../secret.txt", 418],
        ["/allowed-prefix/..%2fsecret.txt", 400],
        ["/allowed-prefix/..;/secret.txt", 400],
        ["/allowed-prefix/%252e%252e/secret.txt", 400],
      ];
      for (const [path, status] of attempts) {
        const r = await curl(world.locked, ["--path-as-is", `http://files.example${path}`]);
        expect(r.status, `${path}: ${r.body}`).to.equal(status);
        expect(r.body).to.not.include("SECRET");
        // Control: the server really serves the secret for this path to a client it sees directly.
        const direct = await curl(world.app, ["--path-as-is", `http://files.example${path}`]);
        if (!path.includes("%25")) expect(direct.body, `direct ${path}`).to.equal("SECRET\n");
      }
      // Control: the allowed file inside the prefix is served through the proxy.
      expect((await curl(world.locked, ["http://files.example/allowed-prefix/public.txt"])).body).to.equal("public\n");
    });
  });

  // Last: the proxy restarts with the protections off (the filter is swapped before, not after, a restart).
  describe("controls: the same attempts with --allow-upstream-cidr get through the proxy", () => {
    before(async () => {
      await useFilter(FILTERS.audit);
      await restartProxy([...proxyArgs, "--allow-upstream-cidr", "127.0.0.0/8", "--allow-upstream-cidr", `${METADATA_IP}/32,${SERVICE_CIDR}`, "--allow-upstream-cidr", `${NODE_LOCKED_SIDE}/32`]);
    });

    it("reaches the node's loopback service, the metadata server, the node's address and the Service range", async () => {
      expect((await curl(world.locked, ["-H", "Host: localhost", "http://www.google.com/"])).body).to.equal("node-local GET /\n");
      expect((await curl(world.locked, ["-H", "Host: loopback.example", "http://www.google.com/"])).body).to.equal("node-local GET /\n");
      expect((await curl(world.locked, [`http://${METADATA_IP}/computeMetadata/v1/`])).body).to.equal("metadata GET /computeMetadata/v1/\n");
      expect((await curl(world.locked, ["-H", "Host: metadata.google.internal", "http://www.google.com/x"])).body).to.equal("metadata GET /x\n");
      expect((await curl(world.locked, [`http://${NODE_LOCKED_SIDE}/`])).body).to.equal("node-local GET /\n");
      expect((await curl(world.locked, ["-H", "Host: kubernetes.default.svc", "http://www.google.com/"])).body).to.equal("kubernetes.default GET /\n");
    });

    it("still refuses a Host naming the proxy's own port, loopback allowed or not", async () => {
      expect((await curl(world.locked, ["-H", `Host: localhost:${TRANSPARENT_PORT}`, "http://www.google.com/"])).status).to.equal(421);
    });
  });
});
