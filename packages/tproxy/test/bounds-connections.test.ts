// One pod cannot starve the others: slow and idle clients are closed after their bound, and one source
// address holds at most --max-client-connections connections while another source is still served.
// The real `tproxy run` on loopback (no namespaces needed: 127.0.0.1 and 127.0.0.2 are two sources),
// real TCP and TLS sockets; small bounds given by flag. Nothing here measures speed: each test waits,
// within a generous bound, for the event a client would see (its connection closed, or its answer).
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { createInterface } from "node:readline";
import { run, waitFor } from "../../../test/support/netns.ts";
import { metric } from "./helpers.ts";

const CLI = join(import.meta.dirname, "../src/cli.ts");
const FILTER = `export default { request(flow) { flow.respond(200, "served " + flow.request.path); } };\n`;
/** Longest wait for an event a test expects (far above every bound used here). */
const EVENT_WAIT_MS = 15_000;

interface Running {
  child: ChildProcess;
  lines: string[];
  transparent: number;
  standard: number;
  metrics: number;
}

async function startProxy(dir: string, extra: string[]): Promise<Running> {
  const child = spawn(process.execPath, [
    CLI, "run", "--ca-cert", join(dir, "ca.pem"), "--ca-key", join(dir, "ca.key"), "--filter", join(dir, "filter.ts"),
    "--listen-address", "127.0.0.1", "--transparent-port", "0", "--standard-port", "0", "--metrics-port", "0",
    "--workers", "1", "--log-format", "json", ...extra,
  ], { stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  for (const s of [child.stdout!, child.stderr!]) createInterface({ input: s }).on("line", (l) => lines.push(l));
  let ports: { transparent: number; standard: number; metrics: number } | undefined;
  await waitFor(`tproxy listening (output: ${lines.join("\n")})`, () => {
    if (child.exitCode !== null) throw new Error(`tproxy exited ${child.exitCode}:\n${lines.join("\n")}`);
    const l = lines.find((x) => x.includes("tproxy listening"));
    if (l) ports = JSON.parse(l) as { transparent: number; standard: number; metrics: number };
    return ports !== undefined;
  }, EVENT_WAIT_MS);
  return { child, lines, ...ports! };
}

async function stopProxy(p: Running | undefined): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill("SIGKILL");
  await new Promise((r) => p.child.once("exit", r));
}

async function metricsText(p: Running): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${p.metrics}/metrics`);
  return res.text();
}

const sockets = new Set<net.Socket>();
function track<T extends net.Socket>(s: T): T {
  sockets.add(s);
  s.on("error", () => undefined);
  s.once("close", () => sockets.delete(s));
  return s;
}

function connectFrom(source: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = track(net.connect({ host: "127.0.0.1", port, localAddress: source }));
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

function tlsFrom(source: string, port: number, ca: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const raw = track(net.connect({ host: "127.0.0.1", port, localAddress: source }));
    const s = track(tls.connect({ socket: raw, servername: "bounds.example", ca }));
    s.once("secureConnect", () => resolve(s));
    s.once("error", reject);
  });
}

/** Resolves with everything the peer sent once the socket closes; rejects after EVENT_WAIT_MS. */
function closed(s: net.Socket): Promise<string> {
  let got = "";
  s.on("data", (d: Buffer) => { got += d.toString("latin1"); });
  return new Promise((resolve, reject) => {
    if (s.destroyed) return resolve(got);
    const timer = setTimeout(() => reject(new Error(`connection still open after ${EVENT_WAIT_MS} ms (received: ${JSON.stringify(got)})`)), EVENT_WAIT_MS);
    s.once("close", () => { clearTimeout(timer); resolve(got); });
  });
}

/** Writes `chunk` every `everyMs` until the socket closes (the trickle of a slowloris client). */
function trickle(s: net.Socket, chunk: string, everyMs: number): () => number {
  let sent = 0;
  const timer = setInterval(() => {
    if (s.destroyed || !s.writable) return clearInterval(timer);
    s.write(chunk);
    sent += 1;
  }, everyMs);
  s.once("close", () => clearInterval(timer));
  return () => sent;
}

/** One whole request on a fresh connection from `source`: the status line and body. */
async function served(source: string, port: number, path: string, ca?: string): Promise<string> {
  const s = ca ? await tlsFrom(source, port, ca) : await connectFrom(source, port);
  const text = closed(s);
  s.write(`GET ${path} HTTP/1.1\r\nHost: bounds.example\r\nConnection: close\r\n\r\n`);
  return text;
}

describe("tproxy connection bounds (loopback, real sockets)", function () {
  this.timeout(60_000);
  let dir: string;
  let ca: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "tpb-bounds-"));
    writeFileSync(join(dir, "filter.ts"), FILTER);
    const r = await run(process.execPath, [CLI, "ca", "create", "--cert", join(dir, "ca.pem"), "--key", join(dir, "ca.key")]);
    expect(r.code, r.stderr).to.equal(0);
    ca = readFileSync(join(dir, "ca.pem"), "utf8");
  });
  afterEach(() => {
    for (const s of sockets) s.destroy();
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  describe("timeouts", () => {
    let proxy: Running;
    before(async () => {
      proxy = await startProxy(dir, ["--handshake-timeout", "500", "--header-timeout", "600", "--idle-timeout", "700", "--request-timeout", "1500"]);
    });
    after(() => stopProxy(proxy));

    for (const [what, listener, useTls] of [
      ["transparent plain HTTP", "transparent", false],
      ["transparent HTTPS", "transparent", true],
      ["standard (explicit proxy)", "standard", false],
    ] as const) {
      it(`${what}: a slowloris client (header bytes trickled) is closed unanswered after the header timeout; another source is served meanwhile`, async () => {
        const port = proxy[listener];
        const slow = useTls ? await tlsFrom("127.0.0.1", port, ca) : await connectFrom("127.0.0.1", port);
        const result = closed(slow);
        const target = listener === "standard" ? "http://bounds.example/slow" : "/slow";
        slow.write(`GET ${target} HTTP/1.1\r\nHost: bounds.example\r\n`);
        const sent = trickle(slow, "X-Slow: a\r\n", 100);
        const other = await served("127.0.0.2", port, listener === "standard" ? "http://bounds.example/other" : "/other", useTls ? ca : undefined);
        expect(other).to.match(/^HTTP\/1\.1 200 /).and.to.match(/served \/other$/);
        expect(await result, "the slow client got no answer").to.equal("");
        // It was still sending when it was cut off: the bound is on the head, not on silence.
        expect(sent()).to.be.greaterThan(3);
        expect(metric(await metricsText(proxy), "tproxy_rejected_connections_total", { reason: "header-timeout" })).to.be.greaterThan(0);
      });
    }

    it("a body trickled after a complete head is closed after the request timeout", async () => {
      const s = await connectFrom("127.0.0.1", proxy.transparent);
      const result = closed(s);
      s.write("POST /upload HTTP/1.1\r\nHost: bounds.example\r\nContent-Length: 100000\r\n\r\n");
      const sent = trickle(s, "x", 100);
      const got = await result;
      // The filter answered the head at once; the body never finished and the connection was cut.
      expect(got).to.match(/^HTTP\/1\.1 200 /);
      expect(sent()).to.be.greaterThan(10);
      expect(metric(await metricsText(proxy), "tproxy_rejected_connections_total", { reason: "request-timeout" })).to.be.greaterThan(0);
    });

    it("an idle keep-alive connection is closed after the idle timeout, after serving requests on it", async () => {
      const s = await tlsFrom("127.0.0.1", proxy.transparent, ca);
      let got = "";
      s.on("data", (d: Buffer) => { got += d.toString("latin1"); });
      for (const path of ["/one", "/two"]) {
        s.write(`GET ${path} HTTP/1.1\r\nHost: bounds.example\r\n\r\n`);
        await waitFor(`the answer to ${path}`, () => got.includes(`served ${path}`), EVENT_WAIT_MS);
      }
      expect(got.match(/HTTP\/1\.1 200 /g)).to.have.length(2);
      await closed(s);
    });

    it("a TLS connection that never sends a request is closed after the idle timeout", async () => {
      const s = await tlsFrom("127.0.0.1", proxy.transparent, ca);
      expect(await closed(s)).to.equal("");
    });

    it("a TLS client that never finishes its handshake, and a client that never speaks, are closed", async () => {
      const before = metric(await metricsText(proxy), "tproxy_rejected_connections_total", { reason: "handshake-timeout" });
      // The first bytes of a TLS ClientHello record, then nothing: the sniff says TLS, the handshake never ends.
      const half = await connectFrom("127.0.0.1", proxy.transparent);
      const halfClosed = closed(half);
      half.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]));
      const silent = await connectFrom("127.0.0.1", proxy.transparent);
      await Promise.all([halfClosed, closed(silent)]);
      expect(metric(await metricsText(proxy), "tproxy_rejected_connections_total", { reason: "handshake-timeout" }) - before).to.equal(2);
      // The proxy still serves.
      expect(await served("127.0.0.2", proxy.transparent, "/after", ca)).to.match(/served \/after$/);
    });
  });

  describe("per-client connection cap", () => {
    let proxy: Running;
    before(async () => {
      proxy = await startProxy(dir, ["--max-client-connections", "100"]);
    });
    after(() => stopProxy(proxy));

    /** Established connections the proxy holds on `port` from `source` (its side of them, read with ss). */
    const held = async (port: number, source: string): Promise<number> => {
      const out = await run("ss", ["-Htn", "state", "established", "sport", "=", `:${port}`, "dst", source]);
      return out.stdout.split("\n").filter((l) => l.trim() !== "").length;
    };

    it("of 2,000 idle connections from one source only 100 stay open, the rest are reset; another source is served", async () => {
      const port = proxy.transparent;
      let reset = 0;
      for (let batch = 0; batch < 10; batch += 1) {
        // A refused connection may be reset before or after the client sees its connect complete.
        await Promise.all(Array.from({ length: 200 }, () => new Promise<void>((resolve) => {
          const s = track(net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.1" }));
          s.once("close", () => { reset += 1; resolve(); });
          s.once("connect", () => resolve());
        })));
      }
      const text = async () => metricsText(proxy);
      await waitFor("1,900 refused by the cap", async () => metric(await text(), "tproxy_rejected_connections_total", { reason: "client-limit" }) === 1900, EVENT_WAIT_MS);
      await waitFor("1,900 client sockets reset", () => reset === 1900, EVENT_WAIT_MS);
      const m = await text();
      expect(metric(m, "tproxy_open_connections", { mode: "transparent" })).to.equal(100);
      expect(await held(port, "127.0.0.1")).to.equal(100);
      // Connection 2,001 from the same source is refused at once; another source is served.
      const extra = track(net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.1" }));
      expect(await closed(extra)).to.equal("");
      expect(await served("127.0.0.2", port, "/other", ca)).to.match(/served \/other$/);
      // The flood is logged as one line and summaries, not a line per refused connection.
      const refusals = proxy.lines.filter((l) => l.includes("per-client connection limit"));
      expect(refusals.length).to.be.within(1, 3);
      // Freed slots are usable again.
      for (const s of [...sockets].slice(0, 10)) s.destroy();
      await waitFor("slots freed", async () => metric(await text(), "tproxy_open_connections", { mode: "transparent" }) <= 90, EVENT_WAIT_MS);
      expect(await served("127.0.0.1", port, "/again", ca)).to.match(/served \/again$/);
    });
  });

  describe("per-client connection cap over several serving threads", () => {
    let proxy: Running;
    before(async () => {
      proxy = await startProxy(dir, ["--max-client-connections", "100", "--workers", "4"]);
    });
    after(() => stopProxy(proxy));

    it("holds exactly the cap from one source however the kernel spreads its connections over the threads", async () => {
      const port = proxy.transparent;
      // The kernel hashes each connection to a thread: 100 connections do not split 25/25/25/25, so a share of
      // the cap per thread would refuse some of them. One count for the process refuses none.
      const open = await Promise.all(Array.from({ length: 100 }, () => connectFrom("127.0.0.1", port)));
      const text = async () => metricsText(proxy);
      await waitFor("100 connections held", async () => metric(await text(), "tproxy_open_connections", { mode: "transparent" }) === 100, EVENT_WAIT_MS);
      expect(metric(await text(), "tproxy_rejected_connections_total", { reason: "client-limit" })).to.equal(0);
      expect(open.filter((s) => s.destroyed)).to.deep.equal([]);
      // The 101st is refused, whichever thread it reaches; another source is served.
      for (let i = 0; i < 8; i += 1) expect(await closed(track(net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.1" })))).to.equal("");
      expect(metric(await text(), "tproxy_rejected_connections_total", { reason: "client-limit" })).to.equal(8);
      expect(await served("127.0.0.2", port, "/other", ca)).to.match(/served \/other$/);
    });
  });

  describe("connection cap of the whole proxy (--max-connections)", () => {
    let proxy: Running;
    before(async () => {
      proxy = await startProxy(dir, ["--max-connections", "50", "--max-client-connections", "0", "--workers", "2"]);
    });
    after(() => stopProxy(proxy));

    it("holds 50 connections from all sources together and resets the rest at once; freed room is usable again", async () => {
      const port = proxy.transparent;
      const text = async () => metricsText(proxy);
      // 30 from each of two sources: no per-pod cap here, so only the proxy's own bound refuses.
      const attempts = await Promise.all(Array.from({ length: 60 }, (_, i) => new Promise<net.Socket>((resolve) => {
        const s = track(net.connect({ host: "127.0.0.1", port, localAddress: i % 2 ? "127.0.0.1" : "127.0.0.2" }));
        s.once("connect", () => resolve(s));
        s.once("close", () => resolve(s));
      })));
      await waitFor("10 refused by the proxy's cap", async () => metric(await text(), "tproxy_rejected_connections_total", { reason: "proxy-limit" }) === 10, EVENT_WAIT_MS);
      await waitFor("50 held", async () => metric(await text(), "tproxy_open_connections", { mode: "transparent" }) === 50, EVENT_WAIT_MS);
      expect(metric(await text(), "tproxy_rejected_connections_total", { reason: "client-limit" })).to.equal(0);
      expect(proxy.lines.some((l) => l.includes("proxy connection limit (--max-connections)"))).to.equal(true);
      for (const sock of attempts.filter((x) => !x.destroyed).slice(0, 5)) sock.destroy();
      await waitFor("room freed", async () => metric(await text(), "tproxy_open_connections", { mode: "transparent" }) === 45, EVENT_WAIT_MS);
      expect(await served("127.0.0.2", port, "/room", ca)).to.match(/served \/room$/);
    });
  });
});
