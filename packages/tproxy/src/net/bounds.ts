// Time and count bounds on client connections, so that one pod cannot hold the proxy's memory or
// sockets: a connection must finish its TLS handshake (and the first-bytes sniff), each request head,
// and each request body within a bound, may sit idle between requests only so long, and one source
// address may hold only so many connections at once. An answer the client stops taking (a pod that never
// reads) is cut off after a bound, as nginx's send_timeout does: until then it holds buffers on both legs,
// charged to the proxy's memory (memory-limit.test.ts: 750-910 KiB per unread HTTP/1.1 answer).
//
// Node's own headersTimeout/requestTimeout are checked only for servers that listen (the check starts
// on "listening"); the server that runs the pipeline is fed connections by hand and never listens,
// so the bounds are kept here, for every connection whichever server parses it, by one sweep timer.
import type http from "node:http";
import http2 from "node:http2";
import type net from "node:net";
import type { Duplex, Writable } from "node:stream";
import type { Logger } from "pino";
import type { ProxyMetrics } from "../observe/metrics.ts";
import { ClientCounts } from "./client-counts.ts";

export interface ConnectionBounds {
  /** From accept until the first bytes are sniffed and, for TLS, the handshake is done, in ms (0: off). Default 10000. */
  readonly handshakeTimeoutMs: number;
  /** From the first byte of a request until its head is complete, in ms (0: off). Default 10000. */
  readonly headerTimeoutMs: number;
  /** Between requests on a kept-alive connection (and before the first one), in ms (0: off). Default 30000. */
  readonly idleTimeoutMs: number;
  /** From the first byte of a request until its whole body has arrived, in ms (0: off). Default 300000. */
  readonly requestTimeoutMs: number;
  /**
   * How long an answer may wait for its client to take any of it (bytes queued toward the client, none of
   * them taken), in ms (0: off): the connection is reset, or for HTTP/2 the stream alone. Default 60000.
   */
  readonly sendTimeoutMs: number;
  /** Connections one source address may hold open at once, over all serving threads (0: no cap). Default 512. */
  readonly maxClientConnections: number;
  /** Connections the proxy holds open at once from all sources (0: no cap). `tproxy run`: what its memory limit holds (--max-connections auto). */
  readonly maxConnections: number;
}

export const DEFAULT_BOUNDS: ConnectionBounds = Object.freeze({
  handshakeTimeoutMs: 10_000,
  headerTimeoutMs: 10_000,
  idleTimeoutMs: 30_000,
  requestTimeoutMs: 300_000,
  sendTimeoutMs: 60_000,
  maxClientConnections: 512,
  maxConnections: 0,
});

/** How often a rate-limited notice may be logged: one line, then one summary per window. */
const NOTICE_WINDOW_MS = 10_000;

const http2Constants = http2.constants;

type Phase = "handshake" | "idle" | "head" | "request" | "tunnel" | "session";

/** Bytes queued toward a client, since when none of them were taken, and the drains counted then. */
interface Stall {
  pending: number;
  since: number;
  drains: number;
}

/** What the send bound knows of one writer toward a client: a connection's socket, or an HTTP/2 stream. */
interface Progress {
  stall: Stall | undefined;
  /** 'drain' events of `watched`: each says the whole queue was taken. */
  drains: number;
  watched: Writable | undefined;
}

/**
 * How long the client of `w` has taken none of the bytes queued toward it (0: it took some since the last
 * sweep, or nothing waits). Node's queue of a socket or stream shrinks only as writes complete, that is as
 * the client's side takes them (TCP window, HTTP/2 flow control). Progress is a queue that shrank, or one that
 * drained (emptied, then filled again by a relay that waited for the drain: its length alone could look
 * unchanged). A queue that did neither, or grew (more queued, nothing taken), is a stall.
 */
function stalledMs(p: Progress, w: Writable, now: number): number {
  const pending = w.writableLength;
  if (pending === 0) {
    p.stall = undefined;
    return 0;
  }
  if (p.watched !== w) {
    // Only writers that ever had bytes waiting at a sweep get the listener; it goes with the writer.
    p.watched = w;
    w.on("drain", () => void (p.drains += 1));
  }
  const s = p.stall;
  if (s === undefined || s.drains !== p.drains || pending < s.pending) {
    p.stall = { pending, since: now, drains: p.drains };
    return 0;
  }
  s.pending = pending;
  return now - s.since;
}

interface Tracked {
  readonly client: string;
  readonly raw: net.Socket;
  /** The stream the HTTP parser reads (the TLS socket once TLS is terminated); its bytesRead counts request bytes. */
  top: net.Socket;
  phase: Phase;
  since: number;
  /** top.bytesRead when the connection went idle: more means the next request has begun. */
  base: number;
  req: http.IncomingMessage | undefined;
  res: http.ServerResponse | undefined;
  /** An HTTP/2 connection: its streams now open (idle means none for idleTimeoutMs), each with its request bound. */
  streams: Map<http2.Http2Stream, StreamBound> | undefined;
  /** Bytes queued toward the client (HTTP/1.1, tunnels) and whether it takes them. */
  send: Progress;
  /**
   * An HTTP/2 stream of it was cut off for --send-timeout: its client withholds windows or does not read the
   * socket at all, so the session is reset when it closes, not ended (bytes still queued toward it are dropped
   * rather than left in the kernel, which would keep retrying them).
   */
  resetOnClose: boolean;
}

/** One open HTTP/2 stream: when it opened, and whether its request (headers and whole body) is in. */
interface StreamBound {
  readonly since: number;
  /** In, or ended for not being in: no longer swept for the request bound. */
  complete: boolean;
  /** Bytes of its answer queued toward the client and whether it takes them. */
  send: Progress;
}

/** The compatibility API's request and response of a stream, when the server made them. */
interface CompatPair {
  readonly req: http2.Http2ServerRequest;
  readonly res: http2.Http2ServerResponse;
}

/** Logs a burst of like events as one line and then at most one summary line per window. */
class Notices {
  readonly #log: Logger;
  #windowEnds = 0;
  #timer: NodeJS.Timeout | undefined;
  readonly #counts = new Map<string, Map<string, number>>();

  constructor(log: Logger) {
    this.#log = log;
  }

  /** `stream`: an HTTP/2 stream was ended, not its connection. */
  note(what: string, client: string, detail: string, stream = false): void {
    const now = Date.now();
    if (now >= this.#windowEnds && !this.#timer) {
      this.#windowEnds = now + NOTICE_WINDOW_MS;
      this.#log.warn({ client }, `${stream ? "HTTP/2 stream ended" : "connection closed"}: ${what} (${detail}); further such lines are summarised every ${NOTICE_WINDOW_MS / 1000} s`);
      return;
    }
    // The summary line counts connections; a stream's end says its connection was kept.
    if (stream) what = `${what} (HTTP/2 streams ended, their connections kept)`;
    let byClient = this.#counts.get(what);
    if (!byClient) this.#counts.set(what, (byClient = new Map()));
    byClient.set(client, (byClient.get(client) ?? 0) + 1);
    this.#timer ??= setTimeout(() => this.#flush(), Math.max(0, this.#windowEnds - now)).unref();
  }

  #flush(): void {
    this.#timer = undefined;
    this.#windowEnds = Date.now() + NOTICE_WINDOW_MS;
    for (const [what, byClient] of this.#counts) {
      const top = [...byClient].sort((a, b) => b[1] - a[1]);
      const total = top.reduce((n, [, c]) => n + c, 0);
      this.#log.warn({ closed: total, clients: top.length, top: top.slice(0, 5).map(([c, n]) => `${c}=${n}`).join(" ") }, `connections closed in the last ${NOTICE_WINDOW_MS / 1000} s: ${what}`);
    }
    this.#counts.clear();
  }

  close(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/** Tracks every client connection of one proxy process and closes those that overstay a bound. */
export class ConnectionGuard {
  readonly bounds: ConnectionBounds;
  readonly #metrics: ProxyMetrics;
  readonly #notices: Notices;
  readonly #all = new Set<Tracked>();
  readonly #byStream = new WeakMap<Duplex, Tracked>();
  readonly #perClient: ClientCounts;
  readonly #watched = new WeakSet<http.Server | http2.Http2Server>();
  /** Each HTTP/2 stream's compatibility request and response, to answer a stream that overstays its bound. */
  readonly #compat = new WeakMap<http2.Http2Stream, CompatPair>();
  readonly #sweepMs: number;
  #timer: NodeJS.Timeout | undefined;

  /** `counts`: where connections per source are counted; shared by the serving threads of a process. */
  constructor(bounds: ConnectionBounds, log: Logger, metrics: ProxyMetrics, counts: ClientCounts = new ClientCounts()) {
    this.bounds = bounds;
    this.#perClient = counts;
    this.#metrics = metrics;
    this.#notices = new Notices(log);
    // A deadline is noticed within a quarter of the shortest bound (at most 1 s late).
    const enabled = [bounds.handshakeTimeoutMs, bounds.headerTimeoutMs, bounds.idleTimeoutMs, bounds.requestTimeoutMs, bounds.sendTimeoutMs].filter((t) => t > 0);
    this.#sweepMs = Math.min(1000, Math.max(10, Math.floor(Math.min(4000, ...enabled) / 4)));
  }

  /**
   * Counts a newly accepted connection against its source address. Returns false, having reset the
   * connection, when that source already holds the maximum.
   */
  admit(raw: net.Socket, client: string, phase: "handshake" | "idle"): boolean {
    // First the proxy's own bound (what its memory limit holds), then the pod's share of it.
    const total = this.bounds.maxConnections;
    if (!this.#perClient.acquireTotal(total)) {
      this.#metrics.rejectedConnections.inc({ reason: "proxy-limit" });
      this.#notices.note("proxy connection limit (--max-connections)", client, `${total} open in all, limit ${total}`);
      raw.resetAndDestroy();
      return false;
    }
    const max = this.bounds.maxClientConnections;
    if (this.#perClient.acquire(client, max) === false) {
      this.#perClient.releaseTotal();
      this.#metrics.rejectedConnections.inc({ reason: "client-limit" });
      this.#notices.note("per-client connection limit", client, `${max} open, limit ${max}`);
      raw.resetAndDestroy();
      return false;
    }
    const t: Tracked = { client, raw, top: raw, phase, since: Date.now(), base: raw.bytesRead, req: undefined, res: undefined, streams: undefined, send: { stall: undefined, drains: 0, watched: undefined }, resetOnClose: false };
    this.#all.add(t);
    this.#byStream.set(raw, t);
    raw.once("close", () => {
      this.#all.delete(t);
      this.#perClient.release(client);
      this.#perClient.releaseTotal();
      if (this.#all.size === 0) this.#stopSweep();
    });
    this.#startSweep();
    return true;
  }

  /** The connection (a CONNECT tunnel's, too) now has to show its first bytes and finish any TLS handshake. */
  handshaking(raw: net.Socket): void {
    const t = this.#byStream.get(raw);
    if (t) this.#enter(t, "handshake");
  }

  /** The HTTP parser now reads `top` (the raw socket, or the TLS socket over it). */
  parsing(raw: net.Socket, top: net.Socket, waiting: "idle" | "head"): void {
    const t = this.#byStream.get(raw);
    if (!t) return;
    t.top = top;
    this.#byStream.set(top, t);
    this.#enter(t, waiting);
  }

  /**
   * The connection now carries an HTTP/2 session. Its frames are bounded by the session's own settings
   * (server/http2.ts: concurrent streams, header list size, session memory, invalid frames, rejected streams,
   * resets) and by nghttp2's (CONTINUATION frames per header block, queued SETTINGS and PING acks). Kept here:
   *
   * - the session is closed once it has had no open stream for idleTimeoutMs (bytes do not reset this: pings,
   *   settings or a header block that never completes do not keep a session without streams);
   * - each stream's request, its headers and whole body, must be in within requestTimeoutMs of the stream's
   *   open, as an HTTP/1.1 request's must; an overdue stream alone is ended (408, or RST_STREAM CANCEL once
   *   its answer has begun), the session's other streams go on.
   *
   * headerTimeoutMs has no HTTP/2 bound of its own: Node makes a stream only once its header block is whole
   * (it never surfaces a partial one), and nghttp2 bounds a block in size (maxHeaderListSize) and in frames
   * (a few CONTINUATIONs, then the session ends); while a block is open the client can send nothing else on
   * the session. A block that never completes is bounded by the idle bound on a session without streams; on
   * a session with an open stream it holds that one block (at most maxHeaderListSize) until the stream ends.
   */
  session(raw: net.Socket, top: net.Socket, session: http2.Http2Session): void {
    const t = this.#byStream.get(raw);
    if (!t) return;
    t.top = top;
    this.#byStream.set(top, t);
    this.#enter(t, "session");
    const open = new Map<http2.Http2Stream, StreamBound>();
    t.streams = open;
    const server = (session as http2.ServerHttp2Session).server as http2.Http2Server | undefined;
    if (server && !this.#watched.has(server)) {
      this.#watched.add(server);
      // Made (and emitted) before the session's own 'stream' listeners below run; let go with the stream.
      const record = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): void => void this.#compat.set(req.stream, { req, res });
      // Not 'connect': a listener there changes where the compatibility API sends CONNECT streams.
      server.on("request", record);
    }
    // Before the server's own listener, which hands the stream to the pipeline: a refused stream never reaches it.
    session.prependListener("stream", (stream: http2.Http2Stream) => {
      // A stream beyond the session's first holds what a connection with one request holds (an upstream
      // connection, buffers: memory-limit.test.ts), so it is counted against the same caps. Otherwise one pod
      // could hold 100 requests in flight per connection where HTTP/1.1 holds one, past --max-connections.
      const counted = open.size > 0;
      if (counted && !this.#admitStream(t.client)) {
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      open.set(stream, { since: Date.now(), complete: false, send: { stall: undefined, drains: 0, watched: undefined } });
      stream.once("close", () => {
        open.delete(stream);
        if (counted) {
          this.#perClient.release(t.client);
          this.#perClient.releaseTotal();
        }
        if (open.size === 0) t.since = Date.now();
      });
    });
  }

  /** Counts one more HTTP/2 stream in flight against the proxy's and the client's caps; false: refused. */
  #admitStream(client: string): boolean {
    const total = this.bounds.maxConnections;
    if (!this.#perClient.acquireTotal(total)) {
      this.#metrics.rejectedConnections.inc({ reason: "stream-proxy-limit" });
      this.#notices.note("HTTP/2 stream refused: proxy connection limit (--max-connections, streams in flight counted)", client, `limit ${total}`);
      return false;
    }
    const max = this.bounds.maxClientConnections;
    if (this.#perClient.acquire(client, max) === false) {
      this.#perClient.releaseTotal();
      this.#metrics.rejectedConnections.inc({ reason: "stream-client-limit" });
      this.#notices.note("HTTP/2 stream refused: per-client connection limit (streams in flight counted)", client, `limit ${max}`);
      return false;
    }
    return true;
  }

  /** Follows the requests of a server that parses tracked connections. */
  watch(server: http.Server): void {
    if (this.#watched.has(server)) return;
    this.#watched.add(server);
    // These bounds are kept here; the server's own would only apply when it listens, and differently.
    server.headersTimeout = 0;
    server.requestTimeout = 0;
    // Keep-Alive: timeout=N tells clients when an idle connection will be closed.
    server.keepAliveTimeout = this.bounds.idleTimeoutMs;
    server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
      const t = this.#byStream.get(req.socket);
      if (!t) return;
      // The request began with its first byte: keep that start when the sweep saw it, else now.
      const since = t.phase === "head" ? t.since : Date.now();
      t.phase = "request";
      t.since = since;
      t.req = req;
      t.res = res;
    });
    server.on("upgrade", (req: http.IncomingMessage) => {
      const t = this.#byStream.get(req.socket);
      if (t) this.#enter(t, "tunnel");
    });
  }

  #enter(t: Tracked, phase: Phase): void {
    t.phase = phase;
    t.since = Date.now();
    t.base = t.top.bytesRead;
    t.req = undefined;
    t.res = undefined;
  }

  #startSweep(): void {
    this.#timer ??= setInterval(() => this.#sweep(), this.#sweepMs).unref();
  }

  #stopSweep(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #sweep(): void {
    const now = Date.now();
    const b = this.bounds;
    for (const t of this.#all) {
      if (t.phase === "request" && t.res && (t.res.writableFinished || t.res.destroyed) && t.req?.complete !== false) {
        // Answered, and the body (perhaps answered before it arrived) is in: the connection waits for its next request.
        this.#enter(t, "idle");
        continue;
      }
      if (t.phase === "idle" && t.top.bytesRead > t.base) {
        t.phase = "head";
        t.since = now;
        continue;
      }
      // Whatever the phase (an answer, a tunnel's bytes, a pipelined answer): bytes the client takes none of.
      // An HTTP/2 session's socket is the session's; its streams are swept one by one below.
      if (b.sendTimeoutMs > 0 && t.phase !== "session" && stalledMs(t.send, t.top, now) >= b.sendTimeoutMs) {
        this.#close(t, "send-timeout", "answer not taken by the client", b.sendTimeoutMs);
        continue;
      }
      const age = now - t.since;
      switch (t.phase) {
        case "handshake":
          if (b.handshakeTimeoutMs > 0 && age >= b.handshakeTimeoutMs) this.#close(t, "handshake-timeout", "TLS handshake or first bytes too slow", b.handshakeTimeoutMs);
          break;
        case "idle":
          if (b.idleTimeoutMs > 0 && age >= b.idleTimeoutMs) this.#close(t, undefined, "idle", b.idleTimeoutMs);
          break;
        case "head":
          if (b.headerTimeoutMs > 0 && age >= b.headerTimeoutMs) this.#close(t, "header-timeout", "request head too slow", b.headerTimeoutMs);
          break;
        case "request":
          // Only the client's part is bounded here: once the body is in, the upstream and the filter take their time.
          if (b.requestTimeoutMs > 0 && age >= b.requestTimeoutMs && t.req && !t.req.complete) this.#close(t, "request-timeout", "request body too slow", b.requestTimeoutMs);
          break;
        case "session":
          if (t.streams?.size === 0 && b.idleTimeoutMs > 0 && age >= b.idleTimeoutMs) this.#close(t, undefined, "idle", b.idleTimeoutMs);
          else if (t.streams && (b.requestTimeoutMs > 0 || b.sendTimeoutMs > 0)) this.#sweepStreams(t, t.streams, now);
          break;
        case "tunnel":
          break;
      }
    }
  }

  /**
   * Ends each stream of a session whose request is still not in after requestTimeoutMs, and each whose client
   * has taken none of its answer for sendTimeoutMs (RST_STREAM CANCEL: a client that withholds the stream's
   * flow-control window, or the whole session's bytes).
   */
  #sweepStreams(t: Tracked, open: Map<http2.Http2Stream, StreamBound>, now: number): void {
    const ms = this.bounds.requestTimeoutMs;
    const sendMs = this.bounds.sendTimeoutMs;
    for (const [stream, s] of open) {
      if (sendMs > 0 && !stream.destroyed && stalledMs(s.send, stream, now) >= sendMs) {
        this.#metrics.rejectedConnections.inc({ reason: "send-timeout" });
        this.#notices.note("answer not taken by the client", t.client, `bound ${sendMs} ms`, true);
        t.resetOnClose = true;
        this.#cancelStream(stream);
        continue;
      }
      if (ms === 0 || s.complete || now - s.since < ms) continue;
      // In once the client has sent END_STREAM (remoteClose), whether or not the pipeline has read it all yet;
      // a body the pipeline does not read (a slow upstream) stays incomplete, as an HTTP/1.1 request's does.
      if (stream.readableEnded || stream.state.remoteClose === 1) {
        s.complete = true;
        continue;
      }
      // Kept until it closes (after its 408 is sent), so that the session does not look idle meanwhile.
      s.complete = true;
      this.#metrics.rejectedConnections.inc({ reason: "request-timeout" });
      this.#notices.note("request body too slow", t.client, `bound ${ms} ms`, true);
      this.#endStream(stream as http2.ServerHttp2Stream, ms);
    }
  }

  /**
   * Ends one overdue stream. The request is destroyed first, with an error, so that the pipeline destroys its
   * upstream request rather than ending it: the stream's close would otherwise end the request as if its body
   * were whole, and the upstream would get a cut body as a complete one.
   */
  #endStream(stream: http2.ServerHttp2Stream, ms: number): void {
    const pair = this.#compat.get(stream);
    if (pair && !pair.req.destroyed) {
      // Readable.destroy emits the error, which nobody may be listening for yet (the filter is still deciding).
      if (pair.req.listenerCount("error") > 0) pair.req.destroy(new Error(`request body not received within ${ms} ms`));
      else pair.req.destroy();
    }
    if (stream.destroyed || stream.closed) return;
    if (!stream.headersSent) {
      const body = `tproxy: request body not received within ${ms} ms\n`;
      if (pair) {
        // Through the response the pipeline holds, so that its request line shows the 408.
        pair.res.writeHead(408, { "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(body) });
        pair.res.end(body);
      } else {
        stream.respond({ ":status": 408, "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(body) });
        stream.end(body);
      }
      return;
    }
    stream.close(http2Constants.NGHTTP2_CANCEL);
  }

  /**
   * Resets a stream whose answer its client does not take. Its compatibility request is destroyed first, so
   * that the pipeline cuts its upstream request off rather than waiting on it. The stream is destroyed here,
   * not only closed: a close waits until its RST_STREAM is sent, which never comes when the client does not
   * read the session's socket either. The RST_STREAM CANCEL goes out whenever the socket takes it.
   */
  #cancelStream(stream: http2.Http2Stream): void {
    const pair = this.#compat.get(stream);
    if (pair && !pair.req.destroyed) pair.req.destroy();
    if (!stream.closed) stream.close(http2Constants.NGHTTP2_CANCEL);
    stream.destroy();
  }

  #close(t: Tracked, reason: string | undefined, what: string, ms: number): void {
    this.#all.delete(t);
    if (reason) {
      this.#metrics.rejectedConnections.inc({ reason });
      this.#notices.note(what, t.client, `bound ${ms} ms`);
    }
    // A reset, not a close: the bytes queued toward a client that does not read would otherwise stay in the
    // kernel's send queue (charged to the proxy) while it retries them, and the client would never learn.
    if (reason === "send-timeout" || t.resetOnClose) {
      try {
        t.raw.resetAndDestroy();
      } catch {
        // not a TCP socket (a test's pipe): destroyed below
      }
    }
    t.top.destroy();
    t.raw.destroy();
  }

  close(): void {
    this.#stopSweep();
    this.#notices.close();
  }
}
