// The upstream HTTP/2 sessions (server/upstream-h2.ts), against real TLS servers on loopback: one session per
// judged target and never another name's (no coalescing, though the address and certificate would allow it),
// HTTP/1.1 remembered for servers that choose it, streams arriving together sharing one connection, the session
// cap closing the least recently used, and the upstream certificate checked against the target's name.
import { expect } from "chai";
import http2 from "node:http2";
import https from "node:https";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import pino from "pino";
import { TestCa } from "../../../test/support/pki.ts";
import type { LookupFunction } from "../src/policy/guarded-lookup.ts";
import type { Target } from "../src/server/target.ts";
import { Http2Upstreams, type UpstreamLeg } from "../src/server/upstream-h2.ts";

const target = (host: string, port: number): Target => ({ scheme: "https", host, port, path: "/", url: `https://${host}:${port}/`, named: true, authority: `${host}:${port}` });
// Every name is on loopback here; the proxy's own lookup applies the address policy instead.
const loopback: LookupFunction = (_host, options, cb) => (options.all ? cb(null, [{ address: "127.0.0.1", family: 4 }]) : cb(null, "127.0.0.1", 4));

describe("upstream HTTP/2 sessions (loopback TLS servers)", function () {
  this.timeout(20_000);
  const dir = mkdtempSync(join(tmpdir(), "tproxy-up-h2-"));
  let h2: http2.Http2SecureServer;
  let h1: https.Server;
  let h2Port: number;
  let h1Port: number;
  const sessionsSeen: http2.ServerHttp2Session[] = [];
  let ca: TestCa;
  const made: Http2Upstreams[] = [];
  const upstreams = (maxSessions?: number): Http2Upstreams => {
    const u = new Http2Upstreams({ secureContext: tls.createSecureContext({ ca: readFileSync(ca.certPath) }), rejectUnauthorized: true, lookupFor: () => loopback, log: pino({ level: "silent" }), ...(maxSessions ? { maxSessions } : {}) });
    made.push(u);
    return u;
  };
  const leg = async (u: Http2Upstreams, host: string, port = h2Port): Promise<UpstreamLeg> => await u.leg(target(host, port));

  before(async () => {
    ca = new TestCa(dir, "up");
    const cert = ca.issue("multi", ["a.test", "b.test", "c.test", "d.test"]);
    const creds = { cert: readFileSync(cert.certPath), key: readFileSync(cert.keyPath) };
    h2 = http2.createSecureServer(creds, (_req, res) => res.end("ok"));
    h2.on("session", (s: http2.ServerHttp2Session) => sessionsSeen.push(s));
    h1 = https.createServer(creds, (_req, res) => res.end("ok"));
    await new Promise<void>((r) => h2.listen(0, "127.0.0.1", r));
    await new Promise<void>((r) => h1.listen(0, "127.0.0.1", r));
    h2Port = (h2.address() as AddressInfo).port;
    h1Port = (h1.address() as AddressInfo).port;
  });
  after(() => {
    for (const u of made) u.closeAll();
    h2.close();
    h1.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("keeps one session per target and never carries another name on it (no coalescing)", async () => {
    const u = upstreams();
    const a1 = await leg(u, "a.test");
    const a2 = await leg(u, "a.test");
    const b = await leg(u, "b.test");
    expect(a1.kind).to.equal("h2");
    expect(a2).to.deep.equal(a1);
    expect(b.kind).to.equal("h2");
    // Same address, same certificate (it names both): still a session of its own.
    expect((b as { session: unknown }).session).to.not.equal((a1 as { session: unknown }).session);
  });

  it("lets streams that arrive together share the one connection being made", async () => {
    const u = upstreams();
    const before = sessionsSeen.length;
    const legs = await Promise.all([leg(u, "c.test"), leg(u, "c.test"), leg(u, "c.test")]);
    const sessions = new Set(legs.map((l) => (l as { session: http2.ClientHttp2Session }).session));
    expect(sessions.size).to.equal(1);
    // One answered stream, so that the server has certainly seen the connection.
    await new Promise<void>((resolve, reject) => [...sessions][0]!.request({ ":path": "/" }).on("response", () => resolve()).on("error", reject).end());
    expect(sessionsSeen.length - before).to.equal(1);
  });

  it("remembers a server that chose HTTP/1.1: the first stream gets the fresh socket, later ones the pool", async () => {
    const u = upstreams();
    const first = await leg(u, "a.test", h1Port);
    expect(first.kind).to.equal("h1");
    expect((first as { socket: tls.TLSSocket }).socket.alpnProtocol).to.equal("http/1.1");
    (first as { socket: tls.TLSSocket }).socket.destroy();
    expect(await leg(u, "a.test", h1Port)).to.deep.equal({ kind: "h1", socket: undefined });
  });

  it("closes the least recently used session beyond the cap", async () => {
    const u = upstreams(2);
    const a = (await leg(u, "a.test")) as { session: http2.ClientHttp2Session };
    const b = (await leg(u, "b.test")) as { session: http2.ClientHttp2Session };
    await leg(u, "a.test"); // a is now the most recently used
    const c = (await leg(u, "c.test")) as { session: http2.ClientHttp2Session };
    expect([a.session.closed, b.session.closed, c.session.closed]).to.deep.equal([false, true, false]);
    // b is made anew when asked again.
    const b2 = (await leg(u, "b.test")) as { session: http2.ClientHttp2Session };
    expect(b2.session).to.not.equal(b.session);
    expect(a.session.closed).to.equal(true);
  });

  it("checks the server's certificate against the target's name", async () => {
    const u = upstreams();
    let err: NodeJS.ErrnoException | undefined;
    try {
      await leg(u, "other.test");
    } catch (e) {
      err = e as NodeJS.ErrnoException;
    }
    expect(err?.code).to.equal("ERR_TLS_CERT_ALTNAME_INVALID");
  });
});
