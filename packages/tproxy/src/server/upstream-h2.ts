// The upstream leg of HTTP/2 streams: a stream from an h2 client goes to its target over HTTP/2 when the
// server chooses h2 in ALPN, else over HTTP/1.1 as before (servers that speak only HTTP/2, such as most gRPC
// servers, need the first; every other server keeps working through the second).
//
// One session per target (host and port exactly as judged; the TLS name checked is that host): a session is
// never used for another name, so the upstream side has no connection coalescing either. A server that chose
// http/1.1 is remembered for a while, so later streams go straight to the kept-alive HTTP/1.1 pool; the socket
// that found it out carries the request that asked.
import http2 from "node:http2";
import tls, { type SecureContext, type TLSSocket } from "node:tls";
import type { Logger } from "pino";
import type { LookupFunction } from "../policy/guarded-lookup.ts";
import type { Target } from "./target.ts";

/** Bounds on what an upstream server can make a session hold (the same figures as for clients: http2.ts). */
const UPSTREAM_SETTINGS = Object.freeze({
  /** Bytes of one response's header list [Node: 64 KiB]. */
  maxHeaderListSize: 65_536,
  /** MiB of buffered frames and header tables [Node: 10]. */
  maxSessionMemory: 10,
});

/** How long a server that chose HTTP/1.1 is not asked again. */
const HTTP1_REMEMBERED_MS = 10 * 60_000;
/** A session with no stream for this long is closed (the HTTP/1.1 pool's sockets live as long as the server keeps them). */
const SESSION_IDLE_MS = 60_000;
/**
 * Sessions kept at once, as the HTTP/1.1 pool keeps at most 256 idle sockets: beyond it the least recently used
 * one is closed (its streams in flight finish), so that streams to many names cannot pile up sessions.
 */
const MAX_SESSIONS = 256;

export type UpstreamLeg = { kind: "h2"; session: http2.ClientHttp2Session } | { kind: "h1"; socket: TLSSocket | undefined };

export interface Http2UpstreamOptions {
  secureContext: SecureContext;
  rejectUnauthorized: boolean;
  /** The guarded lookup for a port: the address policy applies to every name resolved for a session. */
  lookupFor(port: number): LookupFunction;
  log: Logger;
  /** Sessions kept at once (default MAX_SESSIONS). */
  maxSessions?: number;
}

export class Http2Upstreams {
  readonly #opts: Http2UpstreamOptions;
  readonly #sessions = new Map<string, http2.ClientHttp2Session>();
  /** Connections being opened, so that streams arriving together share one. */
  readonly #opening = new Map<string, Promise<UpstreamLeg>>();
  /** Targets whose server chose HTTP/1.1, until when. */
  readonly #http1 = new Map<string, number>();

  constructor(opts: Http2UpstreamOptions) {
    this.#opts = opts;
  }

  /**
   * The leg for a stream to `target` (https): a session (reused, or new when the server chooses h2), or HTTP/1.1:
   * with the fresh socket that learnt it (for this one request), or none (use the pool). Rejects with the
   * connection's error (lookup refused by the policy, certificate, refused...). `avoid`: a session that just
   * refused a stream, not to be used again.
   */
  leg(target: Target, avoid?: http2.ClientHttp2Session): Promise<UpstreamLeg> | UpstreamLeg {
    const key = `${target.host}\0${target.port}`;
    let session = this.#sessions.get(key);
    if (session !== undefined && session === avoid) {
      // The session refused a stream (its GOAWAY may not have arrived yet): the retry gets a new one.
      this.#sessions.delete(key);
      session.close();
      session = undefined;
    }
    if (session !== undefined && !session.closed && !session.destroyed) {
      // Most recently used last (a Map keeps insertion order): the first one is the one to close.
      this.#sessions.delete(key);
      this.#sessions.set(key, session);
      return { kind: "h2", session };
    }
    const until = this.#http1.get(key);
    if (until !== undefined) {
      if (until > Date.now()) return { kind: "h1", socket: undefined };
      this.#http1.delete(key);
    }
    let opening = this.#opening.get(key);
    if (opening === undefined) {
      opening = this.#open(key, target).finally(() => this.#opening.delete(key));
      this.#opening.set(key, opening);
      return opening;
    }
    // A stream that waited on another's connection: an HTTP/1.1 socket serves one request, the rest use the pool.
    return opening.then((leg) => (leg.kind === "h2" ? leg : { kind: "h1", socket: undefined }));
  }

  #open(key: string, target: Target): Promise<UpstreamLeg> {
    return new Promise<UpstreamLeg>((resolve, reject) => {
      const socket = tls.connect({
        host: target.host,
        port: target.port,
        ...(target.named ? { servername: target.host, lookup: this.#opts.lookupFor(target.port) } : {}),
        ALPNProtocols: ["h2", "http/1.1"],
        secureContext: this.#opts.secureContext,
        rejectUnauthorized: this.#opts.rejectUnauthorized,
      });
      socket.setNoDelay(true);
      socket.once("error", reject);
      socket.once("secureConnect", () => {
        socket.removeListener("error", reject);
        if (socket.alpnProtocol !== "h2") {
          this.#http1.set(key, Date.now() + HTTP1_REMEMBERED_MS);
          resolve({ kind: "h1", socket });
          return;
        }
        resolve({ kind: "h2", session: this.#session(key, target, socket) });
      });
    });
  }

  #session(key: string, target: Target, socket: TLSSocket): http2.ClientHttp2Session {
    const session = http2.connect(`https://${target.authority}`, {
      createConnection: () => socket,
      settings: { enablePush: false, maxHeaderListSize: UPSTREAM_SETTINGS.maxHeaderListSize },
      maxSessionMemory: UPSTREAM_SETTINGS.maxSessionMemory,
    });
    this.#sessions.set(key, session);
    if (this.#sessions.size > (this.#opts.maxSessions ?? MAX_SESSIONS)) {
      const [oldestKey, oldest] = this.#sessions.entries().next().value!;
      this.#sessions.delete(oldestKey);
      oldest.close();
    }
    const forget = (): void => {
      if (this.#sessions.get(key) === session) this.#sessions.delete(key);
    };
    // A GOAWAY lets streams in flight finish; new ones get a new session.
    session.once("goaway", forget);
    session.once("close", forget);
    session.on("error", (err: Error) => {
      forget();
      this.#opts.log.debug({ upstream: target.authority, err: err.message }, "upstream HTTP/2 session failed");
    });
    session.setTimeout(SESSION_IDLE_MS, () => {
      forget();
      session.close();
    });
    // The session must not keep the process alive on its own (a draining proxy closes them: closeAll).
    socket.unref();
    return session;
  }

  /** Ends every session (streams in flight finish first). */
  closeAll(): void {
    for (const session of this.#sessions.values()) session.close();
    this.#sessions.clear();
  }
}
