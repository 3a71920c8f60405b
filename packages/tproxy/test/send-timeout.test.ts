// --send-timeout: an answer whose client takes none of it for the bound is cut off (HTTP/1.1: the connection is
// reset; HTTP/2: the stream alone, or every stream of a session whose socket is not read), and its upstream
// request with it. Until then such an answer holds socket buffers on both legs, charged to the proxy's cgroup
// (memory-limit.test.ts measures 440-545 KiB per unread HTTP/2 stream). Real clients in the pod's namespace,
// the real proxy in the node's, an upstream that streams as fast as it is taken. Each bounded case has its
// control: the same client against a proxy without the bound (--send-timeout 0) gets its whole answer, and a
// slow reader that keeps taking is never cut, however long its answer takes.
import { expect } from "chai";
import { join } from "node:path";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { waitFor } from "../../../test/support/netns.ts";
import { ProxyWorld, STORAGE_IP, TRANSPARENT_PORT, type Proc } from "../../../test/support/world.ts";
import { metric, metricsOf } from "./helpers.ts";

const CLIENT = join(import.meta.dirname, "unread-client.ts");
const HOST = "storage.googleapis.com";
const MIB = 1024 * 1024;
/** Far more than every socket buffer between the upstream and the client can hold. */
const LARGE = 64 * MIB;
const BOUND_MS = 1500;
/** How long the unread clients take nothing: well past the bound. */
const STALL_MS = 4000;

interface H1Result {
  status: number;
  length: number;
  bytes: number;
  error?: string;
}
interface H2StreamResult {
  first: { status: number; bytes: number; rstCode?: number; error?: string };
  then: { status: number; body: string };
}

describe("--send-timeout: answers a client does not take (network namespaces, iptables REDIRECT)", function () {
  this.timeout(60_000);
  let world: ProxyWorld;
  let ca: { cert: string; key: string };
  let filter: string;

  before(async function () {
    world = await ProxyWorld.create("st");
    ca = await world.makeProxyCa();
    const filterDir = join(world.dir, "filter");
    writeConfigMap(filterDir, { "filter.ts": "export default { request() {} };\n" });
    filter = join(filterDir, "filter.ts");
    await world.redirectPod();
  });
  after(async () => {
    await world?.close();
  });

  const start = (sendTimeout: number, more: string[] = []): Promise<Proc> =>
    world.startProxy(["--ca-cert", ca.cert, "--ca-key", ca.key, "--filter", filter, "--upstream-ca", world.publicCa.certPath, "--workers", "1", "--send-timeout", String(sendTimeout), ...more]);

  const client = async (spec: Record<string, unknown>): Promise<string> => {
    const r = await world.pod.run(process.execPath, [CLIENT, JSON.stringify({ ca: ca.cert, servername: HOST, address: HOST, ...spec })], { timeoutMs: 40_000 });
    if (r.code !== 0) throw new Error(`unread client failed (${r.code}): ${r.stderr}`);
    return r.stdout.trim();
  };

  /** The proxy's connections to the upstream, as the node's kernel lists them. */
  const upstreamConnections = async (): Promise<number> => {
    const out = await world.node.must("ss", ["-Htn", "state", "established", "dst", `${STORAGE_IP}:443`]);
    return out.split("\n").filter((l) => l.trim() !== "").length;
  };

  /** Bytes the node's kernel holds queued toward the pod on the proxy's sockets (Send-Q of its port's connections, any state). */
  const queuedTowardPod = async (): Promise<number> => {
    const out = await world.node.must("ss", ["-Htn", "sport", "=", `:${TRANSPARENT_PORT}`]);
    return out.split("\n").filter((l) => l.trim() !== "").reduce((sum, l) => sum + Number(l.trim().split(/\s+/)[2] ?? 0), 0);
  };

  /**
   * A client that asks for answers on one HTTP/2 session and reads none of its bytes (unread-client.ts), kept until
   * stopped. Its windows are the largest HTTP/2 allows, so that the proxy sends until TCP itself stops it: the
   * session's socket is stalled, not only its streams.
   */
  const spawnUnread = (spec: Record<string, unknown>): Proc => world.spawn(world.pod, process.execPath, [CLIENT, JSON.stringify(spec)]);

  describe(`with the bound (${BOUND_MS} ms)`, () => {
    let proxy: Proc;
    before(async () => {
      proxy = await start(BOUND_MS);
    });
    after(async () => {
      await proxy.stop("SIGKILL");
    });

    it("HTTP/1.1: resets the connection of a client that stops reading its answer, and cuts the upstream request off", async () => {
      const r = JSON.parse(await client({ mode: "h1", path: `/bytes/${LARGE}`, stallMs: STALL_MS })) as H1Result;
      expect(r.status).to.equal(200);
      expect(r.length).to.equal(LARGE);
      expect(r.bytes, "bytes of the answer the client got").to.be.below(LARGE);
      expect(r.error).to.equal("ECONNRESET");
      await proxy.waitForLine(/connection closed: answer not taken by the client \(bound 1500 ms\)/);
      // The upstream's answer was cut off with it: no connection to the upstream is left (a whole answer's
      // connection would stay in the keep-alive pool: the control below).
      await waitFor("the upstream connection to close", async () => (await upstreamConnections()) === 0, 5_000);
      expect(metric(await metricsOf(world), "tproxy_rejected_connections_total", { reason: "send-timeout" })).to.be.greaterThan(0);
    });

    it("HTTP/1.1: a slow reader that keeps taking its answer (1 MiB, then 300 ms of nothing, and so on) gets all of it, though it takes longer than the bound", async () => {
      // Larger than the socket buffers between the proxy and the client (about 4 MiB here), so that the proxy
      // has bytes waiting through most of it.
      const size = 24 * MIB;
      const began = Date.now();
      const r = JSON.parse(await client({ mode: "h1", path: `/bytes/${size}`, takeBytes: MIB, pauseMs: 300 })) as H1Result;
      expect(r).to.deep.equal({ status: 200, length: size, bytes: size });
      expect(Date.now() - began, "how long the answer took: more than the bound, or this shows nothing").to.be.above(2 * BOUND_MS);
    });

    it("WebSocket: resets a tunnel whose client stops reading what the server sends", async () => {
      const r = JSON.parse(await client({ mode: "ws", bytes: 24 * MIB, stallMs: STALL_MS })) as { echoed: number; closeCode?: number };
      // 1006: closed without a close frame (the reset); the echo never came whole.
      expect(r).to.deep.equal({ echoed: 0, closeCode: 1006 });
    });

    it("HTTP/2: resets only the stream whose client withholds its window; the session's next stream is answered", async () => {
      const cut = async (): Promise<number> => metric(await metricsOf(world), "tproxy_rejected_connections_total", { reason: "send-timeout" });
      const before = await cut();
      const r = JSON.parse(await client({ mode: "h2-stream", path: `/bytes/${LARGE}`, stallMs: STALL_MS, then: "/after" })) as H2StreamResult;
      expect(r.first.status).to.equal(200);
      expect(r.first.rstCode, JSON.stringify(r)).to.equal(8); // NGHTTP2_CANCEL
      expect(r.first.bytes).to.be.below(LARGE);
      expect(r.then).to.deep.equal({ status: 200, body: `${HOST} GET /after\n` });
      expect(await cut()).to.equal(before + 1);
      // The request line shows the answer as cut short, on HTTP/2.
      await proxy.waitForLine(/GET https:\/\/storage\.googleapis\.com\/bytes\/67108864 -> 200\(incomplete\) .* h2$/);
    });

  });

  describe(`with the bound (${BOUND_MS} ms) and a short idle bound (1000 ms)`, () => {
    let proxy: Proc;
    before(async () => {
      proxy = await start(BOUND_MS, ["--idle-timeout", "1000"]);
    });
    after(async () => {
      await proxy.stop("SIGKILL");
    });

    it("HTTP/2: a session whose socket is not read at all has its streams reset, its upstream requests cut off, and is then reset itself: nothing stays queued toward it", async () => {
      const unread = spawnUnread({ mode: "h2-sessions", ca: ca.cert, servername: HOST, address: STORAGE_IP, sessions: 1, streams: 4, bytes: LARGE, window: 2 ** 31 - 1 });
      try {
        const stalled = JSON.parse(await unread.waitForLine(/"phase":"stalled"/, 20_000)) as { ok: number; errors: Record<string, number> };
        expect(stalled).to.include({ ok: 1 });
        await waitFor("the upstream connections to close", async () => (await upstreamConnections()) === 0, BOUND_MS + 5_000);
        // Closed as idle once its streams are gone, with a reset: a plain close would leave what was queued in
        // the kernel, retried toward a client that does not read (the control below shows it queued).
        await waitFor("no byte queued toward the pod", async () => (await queuedTowardPod()) === 0, 5_000);
      } finally {
        await unread.stop("SIGKILL");
      }
    });
  });

  describe("without it (--send-timeout 0), the control", () => {
    let proxy: Proc;
    before(async () => {
      proxy = await start(0);
    });
    after(async () => {
      await proxy.stop("SIGKILL");
    });

    it("HTTP/1.1: the client that stopped reading gets its whole answer once it reads again", async () => {
      const r = JSON.parse(await client({ mode: "h1", path: `/bytes/${LARGE}`, stallMs: STALL_MS })) as H1Result;
      expect(r).to.deep.equal({ status: 200, length: LARGE, bytes: LARGE });
    });

    it("WebSocket: the tunnel's client gets the whole echo once it reads again", async () => {
      const r = JSON.parse(await client({ mode: "ws", bytes: 24 * MIB, stallMs: STALL_MS })) as { echoed: number; closeCode?: number };
      // The upstream prefixes its echo with its name.
      expect(r).to.deep.equal({ echoed: 24 * MIB + `${HOST}: `.length });
    });

    it("HTTP/2: the stream whose window was withheld is answered whole", async () => {
      const r = JSON.parse(await client({ mode: "h2-stream", path: `/bytes/${16 * MIB}`, stallMs: STALL_MS, then: "/after" })) as H2StreamResult;
      expect(r.first, JSON.stringify(r)).to.deep.equal({ status: 200, bytes: 16 * MIB, rstCode: 0 });
      expect(r.then).to.deep.equal({ status: 200, body: `${HOST} GET /after\n` });
    });

    it("HTTP/2: a session whose socket is not read keeps its upstream requests open", async () => {
      const unread = spawnUnread({ mode: "h2-sessions", ca: ca.cert, servername: HOST, address: STORAGE_IP, sessions: 1, streams: 4, bytes: LARGE, window: 2 ** 31 - 1 });
      try {
        await unread.waitForLine(/"phase":"stalled"/, 20_000);
        await new Promise((r) => setTimeout(r, BOUND_MS + 2_000));
        expect(await upstreamConnections()).to.equal(4);
        expect(await queuedTowardPod(), "bytes queued toward the pod").to.be.above(0);
      } finally {
        await unread.stop("SIGKILL");
      }
    });
  });
});
