// HTTP/2 sessions under the same bounds as HTTP/1.1 connections, and under HTTP/2's own floods: each stream's
// request must arrive within --request-timeout (only that stream ends), and CONTINUATION, SETTINGS and PING
// floods end their session after a bounded number of frames while the proxy serves other clients. Real frames
// over TLS from the pod's namespace to the real proxy; each case is bounded by the client's own waits and the
// test's timeout, never by a speed.
import { expect } from "chai";
import { join } from "node:path";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { ProxyWorld, STORAGE_IP, type Proc } from "../../../test/support/world.ts";

const CLIENT = join(import.meta.dirname, "h2-client.ts");
const HOST = "storage.googleapis.com";
/** Lets everything through: the bounds, not the filter, are under test. */
const FILTER = `export default { request() {} };\n`;

interface StreamResult {
  status: number;
  body: string;
  error?: string;
  rstCode?: number;
}

describe("HTTP/2 bounds: per-stream request timeout and frame floods (network namespaces, iptables REDIRECT)", function () {
  this.timeout(60_000);
  let world: ProxyWorld;
  let proxy: Proc;
  let ca: { cert: string; key: string };

  before(async function () {
    world = await ProxyWorld.create("hb");
    ca = await world.makeProxyCa();
    const filterDir = join(world.dir, "filter");
    writeConfigMap(filterDir, { "filter.ts": FILTER });
    proxy = await world.startProxy([
      "--ca-cert", ca.cert, "--ca-key", ca.key, "--filter", join(filterDir, "filter.ts"), "--upstream-ca", world.publicCa.certPath, "--workers", "1",
      "--http2", "--request-timeout", "1000", "--idle-timeout", "1000",
    ]);
    await world.redirectPod();
  });
  after(async () => {
    await world?.close();
  });

  const h2 = async (spec: Record<string, unknown>): Promise<string> => {
    const r = await world.pod.run(process.execPath, [CLIENT, JSON.stringify({ ca: ca.cert, host: HOST, servername: HOST, ...spec })], { timeoutMs: 40_000 });
    if (r.code !== 0) throw new Error(`h2 client failed (${r.code}): ${r.stderr}`);
    return r.stdout;
  };
  const served = async (path: string): Promise<void> => {
    const [r] = JSON.parse(await h2({ mode: "requests", requests: [{ path }] })) as StreamResult[];
    expect(r!.status, r!.error).to.equal(200);
    expect(r!.body).to.equal(`${HOST} GET ${path}\n`);
  };

  describe("per-stream --request-timeout (1 s here)", () => {
    it("answers 408 to a stream whose body trickles past the bound; a stream sent after on the same session is answered", async () => {
      const [slow, after] = JSON.parse(
        await h2({
          mode: "bodies",
          requests: [
            // 10 bytes, one every 400 ms: 4 s in all, well past the bound.
            { path: "/trickle", method: "POST", chunks: 10, everyMs: 400 },
            { path: "/after-trickle", method: "POST", chunks: 3, everyMs: 10, startMs: 300 },
          ],
        }),
      ) as StreamResult[];
      expect(slow!.status, JSON.stringify(slow)).to.equal(408);
      expect(slow!.body).to.equal("tproxy: request body not received within 1000 ms\n");
      expect(after!.status, JSON.stringify(after)).to.equal(200);
      expect(after!.body).to.equal(`${HOST} POST /after-trickle\n`);
      // Counted and noted as a stream's end, not a connection's.
      await proxy.waitForLine(/HTTP\/2 stream ended: request body too slow \(bound 1000 ms\)/);
      // The stream's request line shows the 408 the client got.
      await proxy.waitForLine(/\/trickle -> 408 .* h2$/);
    });

    it("passes a body that completes within the bound (the control), even sent slowly", async () => {
      const [r] = JSON.parse(await h2({ mode: "bodies", requests: [{ path: "/in-time", method: "POST", chunks: 4, everyMs: 100 }] })) as StreamResult[];
      expect(r!.status, JSON.stringify(r)).to.equal(200);
      expect(r!.body).to.equal(`${HOST} POST /in-time\n`);
    });
  });

  describe("CONTINUATION floods", () => {
    it("ends a session whose header block goes on in many small CONTINUATION frames, and serves another client", async () => {
      const out = JSON.parse(await h2({ mode: "continuation", host: STORAGE_IP, frames: 100_000 })) as { sent: number; goaway: number | null; closed: boolean };
      // Ended by the proxy (GOAWAY, then closed) before the client sent everything.
      expect(out.closed, JSON.stringify(out)).to.equal(true);
      expect(out.sent, JSON.stringify(out)).to.be.below(100_000);
      await served("/after-continuation-flood");
    });

    it("closes a session whose header block never ends, though its bytes keep coming, and serves another client", async () => {
      const out = JSON.parse(await h2({ mode: "continuation-stall", host: STORAGE_IP })) as { closed: boolean; bytes: number; ms: number };
      // Closed by the proxy (by the idle bound of a session without a stream: bytes do not reset it) while the
      // client was still trickling (it gives up after 15 s).
      expect(out.closed, JSON.stringify(out)).to.equal(true);
      expect(out.bytes, JSON.stringify(out)).to.be.below(75);
      await served("/after-continuation-stall");
    });

    it("answers a request whose header block is split over HEADERS and two CONTINUATION frames (the control)", async () => {
      const out = JSON.parse(await h2({ mode: "continuation-split", requests: [{ path: "/split-header-block" }] })) as { status: number; body: string; goaway: number | null };
      expect(out.status, JSON.stringify(out)).to.equal(200);
      expect(out.body).to.equal(`${HOST} GET /split-header-block\n`);
      expect(out.goaway).to.equal(null);
    });
  });

  describe("SETTINGS and PING floods whose acks the client never reads", () => {
    for (const kind of ["ping", "settings"] as const) {
      it(`ends a session flooded with ${kind.toUpperCase()} frames while a stream is open, and serves another client`, async () => {
        const out = JSON.parse(await h2({ mode: "ack-flood", kind, host: STORAGE_IP, frames: 2_000_000, requests: [{ path: "/slow/30000" }] })) as { sent: number; closed: boolean; ms: number };
        // The open stream keeps the idle bound away: only the flood bound can end this session within the
        // client's 20 s.
        expect(out.closed, JSON.stringify(out)).to.equal(true);
        expect(out.sent, JSON.stringify(out)).to.be.below(2_000_000);
        await served(`/after-${kind}-flood`);
      });
    }

    it("serves requests on a session that sent a handful of PINGs and SETTINGS first (the control)", async () => {
      const out = JSON.parse(await h2({ mode: "pings-then-request", requests: [{ path: "/after-pings" }] })) as { pings: number; results: StreamResult[] };
      expect(out.pings).to.equal(5);
      expect(out.results[0]!.status, out.results[0]!.error).to.equal(200);
      expect(out.results[0]!.body).to.equal(`${HOST} GET /after-pings\n`);
    });
  });
});
