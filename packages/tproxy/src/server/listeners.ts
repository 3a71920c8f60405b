// Accepting connections: the transparent listener (connections REDIRECTed by the node) and the
// standard listener (explicit proxy: CONNECT and absolute-form requests). Both look at a connection's
// first bytes, terminate TLS in-process with a leaf certificate for the claimed name, and hand the
// stream to the in-process HTTP server that runs the request pipeline.
import http from "node:http";
import type http2 from "node:http2";
import net from "node:net";
import { TLSSocket } from "node:tls";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import type { LeafCertificates } from "../certs/leaf-cache.ts";
import { ConnectionGuard, DEFAULT_BOUNDS, type ConnectionBounds } from "../net/bounds.ts";
import type { ClientCounts } from "../net/client-counts.ts";
import { originalDestination } from "../net/original-dst.ts";
import { sniff, type Sniffed } from "../net/sniff.ts";
import type { ProxyMetrics } from "../observe/metrics.ts";
import { HostNameError, parseAuthority } from "../policy/host-name.ts";
import type { ConnectionInfo } from "./target.ts";

export interface HandOffDeps {
  /** The in-process server (never listening) that runs the request pipeline. */
  inner: http.Server;
  /**
   * The in-process HTTP/2 server (never listening) for TLS clients that choose h2 in ALPN; its streams run the
   * same pipeline (Interceptor.attach). Absent: only http/1.1 is offered.
   */
  inner2?: http2.Http2Server;
  leafs: LeafCertificates;
  /** Keyed by the stream the HTTP server reads, or by the HTTP/2 session (its `socket` is a proxy object). */
  connections: WeakMap<Duplex | http2.Http2Session, ConnectionInfo>;
  log: Logger;
  metrics: ProxyMetrics;
  /** Time and count bounds on client connections (default DEFAULT_BOUNDS). */
  bounds?: ConnectionBounds;
  /** Ports a CONNECT tunnel may name (standard mode, `--allow-port`); default 80 and 443. */
  connectPorts?: ReadonlySet<number>;
  /** Connections per source address, counted over all serving threads (default: this proxy's own). */
  clientCounts?: ClientCounts;
}

const guards = new WeakMap<HandOffDeps, ConnectionGuard>();

/** The one guard of a set of listeners (they share their deps), made on first use. */
export function guardOf(deps: HandOffDeps): ConnectionGuard {
  let guard = guards.get(deps);
  if (!guard) {
    guard = new ConnectionGuard(deps.bounds ?? DEFAULT_BOUNDS, deps.log, deps.metrics, deps.clientCounts);
    guard.watch(deps.inner);
    guards.set(deps, guard);
  }
  return guard;
}

function clientOf(socket: net.Socket): { address: string; port: number } {
  return { address: (socket.remoteAddress ?? "unknown").replace(/^::ffff:/, ""), port: socket.remotePort ?? 0 };
}

/** Reads until the first bytes say TLS, HTTP or neither, then puts them back on the socket (the guard bounds the wait). */
function readFirstBytes(socket: Duplex, done: (result: Sniffed) => void): void {
  let buffered: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer): void => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    const result = sniff(buffered);
    if (result.kind !== "need-more") finish(result);
  };
  const onEnd = (): void => finish({ kind: "unknown", reason: "closed before sending a request" });
  function finish(result: Sniffed): void {
    socket.removeListener("data", onData);
    socket.removeListener("end", onEnd);
    socket.pause();
    if (buffered.length > 0) socket.unshift(buffered);
    done(result);
  }
  socket.on("data", onData);
  socket.once("end", onEnd);
}

/** Terminates TLS or passes plain HTTP to the inner server; closes anything else. */
export function handOff(socket: net.Socket, info: Omit<ConnectionInfo, "tls" | "sni">, fallbackName: string, deps: HandOffDeps): void {
  const guard = guardOf(deps);
  guard.handshaking(socket);
  readFirstBytes(socket, (result) => {
    if (result.kind === "unknown") {
      deps.metrics.rejectedConnections.inc({ reason: "unknown-protocol" });
      deps.log.warn({ client: `${info.client.address}:${info.client.port}`, destination: info.destination }, `connection closed: ${result.reason}`);
      socket.destroy();
      return;
    }
    if (result.kind === "h2c") {
      // Cleartext HTTP/2 cannot be judged like the rest (no SNI, and nothing stops a stream from naming any
      // authority), so it is refused in HTTP/2's own terms: GOAWAY with HTTP_1_1_REQUIRED and the reason, which
      // an HTTP/2 client can read (an HTTP/1.1 400 it could not).
      deps.metrics.rejectedConnections.inc({ reason: "h2c" });
      deps.log.info({ client: `${info.client.address}:${info.client.port}`, destination: info.destination }, "connection closed: cleartext HTTP/2 (prior knowledge) is not served; HTTP/1.1 or HTTPS are");
      socket.end(h2cRefusal());
      return;
    }
    if (result.kind === "http") {
      deps.connections.set(socket, { ...info, tls: false, sni: undefined });
      guard.parsing(socket, socket, "head");
      deps.inner.emit("connection", socket);
      socket.resume();
      return;
    }
    const name = result.sni ?? fallbackName;
    const { hits, shared } = deps.leafs;
    let context;
    try {
      context = deps.leafs.contextFor(name);
    } catch (err) {
      deps.log.error({ name, err: (err as Error).message }, "cannot mint a certificate");
      socket.destroy();
      return;
    }
    deps.metrics.certCacheLookups.inc({ result: deps.leafs.hits > hits ? "hit" : deps.leafs.shared > shared ? "shared" : "mint" });
    deps.metrics.certCacheEntries.set(deps.leafs.size);
    // h2 first (as browsers, curl and gRPC clients prefer it); a client that offers no ALPN gets HTTP/1.1.
    const inner2 = deps.inner2;
    const tls = new TLSSocket(socket, { isServer: true, secureContext: context, ALPNProtocols: inner2 ? ["h2", "http/1.1"] : ["http/1.1"] });
    tls.once("error", (err) => {
      deps.metrics.rejectedConnections.inc({ reason: "tls-handshake" });
      deps.log.info({ client: `${info.client.address}:${info.client.port}`, sni: result.sni, err: err.message }, "TLS handshake with client failed (does the pod trust the tproxy CA?)");
      tls.destroy();
    });
    const conn: ConnectionInfo = { ...info, tls: true, sni: result.sni };
    if (inner2 === undefined) {
      tls.once("secure", () => {
        tls.removeAllListeners("error").on("error", () => tls.destroy());
        guard.parsing(socket, tls, "idle");
      });
      deps.connections.set(tls, conn);
      deps.inner.emit("connection", tls);
      return;
    }
    // Which server parses the connection is known only once the handshake has chosen the protocol.
    deps.connections.set(tls, conn);
    tls.once("secure", () => {
      tls.removeAllListeners("error").on("error", () => tls.destroy());
      if (tls.alpnProtocol === "h2") {
        // An HTTP/2 session over a socket that is still "secureConnecting" waits for its 'secureConnect', which a
        // server-side socket never emits; tls.Server clears the flag itself before 'secureConnection'.
        (tls as TLSSocket & { secureConnecting: boolean }).secureConnecting = false;
        const session = emitSession(inner2, tls, conn, deps.connections);
        if (!session) {
          tls.destroy();
          return;
        }
        guard.session(socket, tls, session);
        // A client that closes its side has sent its last stream: the session ends once its streams are answered
        // (a CONNECT tunnel's socket, from the HTTP server, is half-open and would otherwise wait for the idle bound).
        tls.once("end", () => session.close());
      } else {
        guard.parsing(socket, tls, "idle");
        deps.inner.emit("connection", tls);
      }
    });
  });
}

const H2C_REASON = "tproxy: cleartext HTTP/2 is not served; use HTTP/1.1, or HTTP/2 over TLS";

/** An HTTP/2 server's first frames for a client that spoke cleartext HTTP/2: SETTINGS, then GOAWAY(HTTP_1_1_REQUIRED). */
function h2cRefusal(): Buffer {
  const frame = (type: number, payload: Buffer): Buffer => {
    const head = Buffer.alloc(9);
    head.writeUIntBE(payload.length, 0, 3);
    head[3] = type;
    return Buffer.concat([head, payload]);
  };
  const goaway = Buffer.alloc(8);
  goaway.writeUInt32BE(0, 0); // last stream: none was processed
  goaway.writeUInt32BE(0xd, 4); // HTTP_1_1_REQUIRED (RFC 9113 7)
  return Buffer.concat([frame(0x4, Buffer.alloc(0)), frame(0x7, Buffer.concat([goaway, Buffer.from(H2C_REASON)]))]);
}

/** The connection info of the session being made (the HTTP/2 server's "session" event is synchronous). */
let pendingSession: { conn: ConnectionInfo; connections: HandOffDeps["connections"]; session?: http2.Http2Session } | undefined;
const recording = new WeakSet<http2.Http2Server>();

/** Hands a TLS socket that chose h2 to the HTTP/2 server, recording its info for the session it makes. */
function emitSession(server: http2.Http2Server, tls: TLSSocket, conn: ConnectionInfo, connections: HandOffDeps["connections"]): http2.Http2Session | undefined {
  if (!recording.has(server)) {
    recording.add(server);
    server.prependListener("session", (session: http2.Http2Session) => {
      if (!pendingSession) return;
      pendingSession.connections.set(session, pendingSession.conn);
      pendingSession.session = session;
    });
  }
  const pending: NonNullable<typeof pendingSession> = { conn, connections };
  pendingSession = pending;
  try {
    server.emit("connection", tls);
    return pending.session;
  } finally {
    pendingSession = undefined;
  }
}

/** The transparent listener: every connection was REDIRECTed here by the node's nat rules. */
export function createTransparentServer(deps: HandOffDeps): net.Server {
  const guard = guardOf(deps);
  return net.createServer({ noDelay: true, keepAlive: true }, (socket) => {
    // First, before any work or memory is spent on it: may this source open another connection?
    if (!guard.admit(socket, clientOf(socket).address, "handshake")) return;
    deps.metrics.openConnections.inc({ mode: "transparent" });
    socket.once("close", () => deps.metrics.openConnections.dec({ mode: "transparent" }));
    socket.on("error", (err) => deps.log.debug({ err: err.message }, "client socket error"));
    let destination;
    try {
      destination = originalDestination(socket);
    } catch (err) {
      deps.log.error({ err: (err as Error).message }, "cannot read the original destination; connection closed");
      socket.destroy();
      return;
    }
    const fallback = destination?.address ?? (socket.localAddress ?? "localhost").replace(/^::ffff:/, "");
    handOff(socket, { mode: "transparent", client: clientOf(socket), destination }, fallback, deps);
  });
}

const DEFAULT_CONNECT_PORTS: ReadonlySet<number> = new Set([80, 443]);

/** Adds CONNECT handling to the standard (explicit proxy) server; its plain requests use the pipeline directly. */
export function attachConnect(server: http.Server, deps: HandOffDeps): void {
  const guard = guardOf(deps);
  guard.watch(server);
  // Before the HTTP server's own "connection" listener, so that a refused connection is never parsed.
  server.prependListener("connection", (socket: net.Socket) => {
    if (!guard.admit(socket, clientOf(socket).address, "idle")) return;
    deps.metrics.openConnections.inc({ mode: "standard" });
    socket.once("close", () => deps.metrics.openConnections.dec({ mode: "standard" }));
    deps.connections.set(socket, { mode: "standard", tls: false, client: clientOf(socket), destination: undefined, sni: undefined });
  });
  server.on("connect", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    socket.on("error", (err) => deps.log.debug({ err: err.message }, "client socket error"));
    const authority = req.url ?? "";
    const refuse = (status: number, reason: string, message: string): void => {
      deps.log.info({ client: clientOf(socket).address, authority: JSON.stringify(authority), reason }, `CONNECT refused: ${message}`);
      deps.metrics.requests.inc({ decision: "denied", status: String(status) });
      const body = `tproxy: ${message}\n`;
      socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    };
    let destination: { address: string; port: number };
    try {
      // The same host rules as Host and SNI (policy/host-name.ts): one spelling per name, no number forms.
      const parsed = parseAuthority(authority, "connect");
      if (parsed.port === undefined) return refuse(400, "bad-request", "CONNECT needs host:port");
      destination = { address: parsed.host.host, port: parsed.port };
    } catch (err) {
      return refuse(400, "bad-host", err instanceof HostNameError ? err.message : `malformed CONNECT authority ${JSON.stringify(authority)}`);
    }
    // Like Squid's SSL_ports: a tunnel only to an allowed port, refused before it is established.
    const allowed = deps.connectPorts ?? DEFAULT_CONNECT_PORTS;
    if (!allowed.has(destination.port)) {
      return refuse(403, "port-not-allowed", `port ${destination.port} is not an allowed port (${[...allowed].join(", ")}; see --allow-port)`);
    }
    socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
    if (head.length > 0) socket.unshift(head);
    handOff(socket, { mode: "standard", client: clientOf(socket), destination }, destination.address, deps);
  });
}
