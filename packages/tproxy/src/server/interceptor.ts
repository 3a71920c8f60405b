// The request pipeline. Every request, whatever its form (origin-form, absolute-form, WebSocket upgrade) and
// connection (plain, TLS; transparent, standard), goes through decide() (decide.ts), which answers it or names the
// one target to forward it to; the relays below connect to exactly that target (named targets through a lookup
// that applies the address policy after DNS) and send exactly the path and Host that the filter judged.
//
// The proxy owns its servers: it accepts connections itself (listeners.ts), terminates TLS in-process with cached
// leaf certificates, hands the decrypted stream to an in-process HTTP server, and relays requests and WebSocket
// upgrades itself with node:http/node:https (streaming both ways with backpressure, upstream certificates
// verified). No library builds a URL of its own from the request.
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import http2, { type Http2Server, type Http2ServerRequest, type Http2ServerResponse, type Http2Session, type ClientHttp2Session } from "node:http2";
import type { SecureContext, TLSSocket } from "node:tls";
import type { Duplex, Readable, Writable } from "node:stream";
import type { Logger } from "pino";
import type { FilterHost, FilterVersion } from "../filter/host.ts";
import { judge, runHook, wouldDenyReason, type FailureReason, type HookRun, type HookRunner, type JudgeOptions, type Judgement } from "../filter/judge.ts";
import type { Answer, FlowData, HookName } from "../filter/protocol.ts";
import type { PodIdentity } from "../filter/types.ts";
import type { Headers } from "../filter/types.ts";
import type { RequestLog } from "../observe/log.ts";
import type { ProxyMetrics } from "../observe/metrics.ts";
import { createGuardedLookup, DestinationDeniedError, type AddressJudge, type LookupFunction } from "../policy/guarded-lookup.ts";
import { BodyTap, DEFAULT_MAX_BODY_BYTES, refusalAnswer, type BodyRefusal, type Held } from "./body.ts";
import { decide, type Decision, type DecideDeps, type FilterOutcome, type RequestHead } from "./decide.ts";
import type { ConnectionInfo, Target, TargetRules } from "./target.ts";
import { Http2Upstreams, type UpstreamLeg } from "./upstream-h2.ts";
import { grpcAnswerHeaders, grpcStatusOf, isGrpc } from "./grpc.ts";

export { PROBE_BODY, PROBE_HEADER } from "./decide.ts";

/** A client's request: HTTP/1.1 (the http server) or one HTTP/2 stream (the http2 server's compatibility API). */
type ClientRequest = IncomingMessage | Http2ServerRequest;
type ClientResponse = ServerResponse | Http2ServerResponse;

function isHttp2(req: ClientRequest): req is Http2ServerRequest {
  return req.httpVersionMajor === 2;
}

export interface InterceptorOptions {
  onFilterError: "deny" | "allow";
  /** Plain-HTTP requests redirected from this address (port 80) are answered by the proxy: the readiness probe. */
  probeAddress: string;
  /** Where the one-line-per-request log goes. */
  requests: RequestLog;
  httpAgent: http.Agent;
  httpsAgent: https.Agent;
  /** Port rules for targets (allowed ports in standard mode). */
  rules: TargetRules;
  /** Judges every upstream address: IP-literal targets in decide(), named ones after DNS. */
  policy: AddressJudge;
  /** TLS settings for upstream connections made without the agent (WebSocket upgrades). */
  upstreamTls: { secureContext: SecureContext; rejectUnauthorized: boolean };
  /** `--filter-audit`: every answer of the filter is logged as would-deny and the request goes on. */
  filterAudit?: boolean;
  /** Most bytes a hook's whole-body read buffers (`--max-body`). Default 1 MiB. */
  maxBodyBytes?: number;
  /** Longest wait for an upstream's response body that a hook reads, in ms (0: none). Default 0. */
  bodyWaitMs?: number;
  /** Which pod of this node has a client address (identity/pods.ts); absent: `flow.client.pod` is always undefined. */
  pods?: { lookup(address: string): PodIdentity | undefined };
  /** Whether HTTP/2 streams go upstream over HTTP/2 when the server chooses it in ALPN (else always HTTP/1.1). */
  upstreamHttp2?: boolean;
}

/** An upstream's answer, whichever protocol carried it. */
interface UpstreamAnswer {
  status: number;
  /** HTTP/1.1's reason phrase (HTTP/2 has none). */
  message: string | undefined;
  headers: IncomingHttpHeaders;
  body: Readable;
  /** The answer's headers ended the stream (HTTP/2 "trailers-only", as a gRPC server's error is). */
  ended: boolean;
  /** The trailers, once the body has ended. */
  trailers(): IncomingHttpHeaders | undefined;
}

interface RequestState {
  id: string;
  conn: ConnectionInfo;
  /** Whether the request is an HTTP/2 stream (answers carry no connection headers). */
  h2: boolean;
  method: string;
  /** What the log line names: the target's URL once known, else the request target as sent. */
  url: string;
  flow: FlowData | undefined;
  version: FilterVersion | undefined;
  started: number;
  decision: "allowed" | "denied" | "would-deny";
  reason: string | undefined;
  /** The reason the request hook gave to `flow.audit`: it also covers the response hook. */
  audit: string | undefined;
  bytes: number;
  /** The client's request, whose body a request hook may read (none for an upgrade). */
  req: ClientRequest | undefined;
  /** Made when a hook first reads its message's body (server/body.ts). */
  requestTap: BodyTap | undefined;
  responseTap: BodyTap | undefined;
  /** What the request hook read of the body, to be sent upstream before the rest. */
  requestHeld: Held | undefined;
  /** A gRPC call's content-type: the proxy's own answers to it are gRPC statuses (grpc.ts). */
  grpc: string | undefined;
  /** The proxy's answer to a gRPC call: the HTTP status it stands for, and the gRPC status sent. */
  grpcAnswer: { status: number; code: number } | undefined;
  /** The server's grpc-status: from its trailers, or from the headers of a trailers-only answer. */
  grpcStatus: number | undefined;
}

/**
 * Streams `from` into `to` with backpressure; an error or early close on either side destroys both.
 * (stream.pipeline does the same but builds an AbortController and a DOMException per call: a few
 * percent of the proxy's CPU at thousands of requests per second.)
 */
function relay(from: Readable, to: Writable): void {
  const stop = (): void => {
    if (!from.readableEnded) from.destroy();
    if (!to.writableFinished) to.destroy();
  };
  from.once("error", stop);
  to.once("error", stop);
  to.once("close", () => {
    if (!from.readableEnded) from.destroy();
  });
  from.pipe(to);
}

function clientText(conn: ConnectionInfo): string {
  const c = conn.client;
  return c.address.includes(":") ? `[${c.address}]:${c.port}` : `${c.address}:${c.port}`;
}

// Request ids: unique per process, cheap (no random bytes per request).
const ID_PREFIX = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
let idCounter = 0;

// Also every header that HTTP/2 forbids on a stream (RFC 9113 8.2.2; Node throws on them), so that an HTTP/1.1
// upstream's answer can be written on an HTTP/2 stream.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade", "http2-settings"]);

function forwardableHeaders(headers: Headers | IncomingHttpHeaders): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  // Headers named by Connection are hop-by-hop too (most requests name none, or only keep-alive/close).
  const connection = headers.connection;
  const named = connection === undefined ? undefined : new Set(String(connection).toLowerCase().split(",").map((t) => t.trim()));
  // Own keys only: a filter's headers object comes from its own context, whose prototype it may have changed.
  for (const k of Object.keys(headers)) {
    const v = headers[k];
    // Pseudo-headers (":authority", ":path", ...) belong to an HTTP/2 stream, never to what is forwarded.
    if (v === undefined || HOP_BY_HOP.has(k) || named?.has(k) || k.charCodeAt(0) === 58) continue;
    out[k] = v;
  }
  return out;
}

function describeUpstreamError(err: NodeJS.ErrnoException, target: Target): { status: number; message: string } {
  if (err instanceof DestinationDeniedError) return { status: 403, message: `tproxy: ${err.message}` };
  const code = err.code ?? "";
  const where = `${target.host}:${target.port}`;
  if (/CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_TLS_CERT_ALTNAME_INVALID|HOSTNAME_MISMATCH/.test(code)) {
    return { status: 502, message: `tproxy: upstream certificate of ${where} is not trusted (${code}: ${err.message})` };
  }
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return { status: 502, message: `tproxy: cannot resolve ${target.host} (${code})` };
  if (code === "ETIMEDOUT" || code === "ESOCKETTIMEDOUT") return { status: 504, message: `tproxy: upstream ${where} timed out` };
  return { status: 502, message: `tproxy: upstream ${where} failed (${code || err.message})` };
}

/** A raw HTTP/1.1 answer on a socket that is not (or no longer) driven by the HTTP server; closes afterwards. */
function rawAnswer(status: number, headers: Record<string, string>, body: Buffer): string {
  let head = `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\n`;
  for (const [k, v] of Object.entries(headers)) {
    if (k === "content-length" || k === "connection") continue;
    try {
      http.validateHeaderName(k);
      http.validateHeaderValue(k, v);
    } catch {
      continue;
    }
    head += `${k}: ${v}\r\n`;
  }
  return `${head}content-length: ${body.length}\r\nconnection: close\r\n\r\n`;
}

export class Interceptor {
  readonly #filters: FilterHost;
  readonly #log: Logger;
  readonly #metrics: ProxyMetrics;
  readonly #opts: InterceptorOptions;
  readonly #connections: WeakMap<Duplex | Http2Session, ConnectionInfo>;
  /** One guarded lookup per upstream port (the policy judges address and port together). */
  readonly #lookups = new Map<number, LookupFunction>();
  readonly #run: HookRunner;
  readonly #judgeOptions: JudgeOptions;
  /** HTTP/2 sessions to upstreams, for streams from HTTP/2 clients (absent: those go over HTTP/1.1). */
  readonly #upstreams: Http2Upstreams | undefined;
  /** Requests in flight, for draining on shutdown. */
  inFlight = 0;
  draining = false;

  constructor(filters: FilterHost, log: Logger, metrics: ProxyMetrics, connections: WeakMap<Duplex | Http2Session, ConnectionInfo>, opts: InterceptorOptions) {
    this.#filters = filters;
    this.#run = (version, hook, flow) => filters.run(version, hook, flow);
    this.#judgeOptions = { filterAudit: opts.filterAudit ?? false, onFilterError: opts.onFilterError };
    this.#log = log;
    this.#metrics = metrics;
    this.#connections = connections;
    this.#opts = opts;
    this.#upstreams = opts.upstreamHttp2
      ? new Http2Upstreams({ ...opts.upstreamTls, lookupFor: (port) => this.#lookupFor(port), log })
      : undefined;
  }

  /** Closes the upstream HTTP/2 sessions (their streams in flight finish first). */
  closeUpstreams(): void {
    this.#upstreams?.closeAll();
  }

  /**
   * Attaches the pipeline to an (unlistened or listening) HTTP server, or to the HTTP/2 server, whose every
   * stream is one request here (HTTP/2 has no upgrades).
   */
  attach(server: http.Server | Http2Server): void {
    server.on("request", (req: ClientRequest, res: ClientResponse) => {
      this.#handle(req, res).catch((err: unknown) => this.#internalError(err, res));
    });
    if (!(server instanceof http.Server)) {
      // Node's compatibility API gives an HTTP/2 CONNECT stream its own event: decide() refuses it.
      server.on("connect", (req: Http2ServerRequest, res: Http2ServerResponse) => {
        this.#handle(req, res).catch((err: unknown) => this.#internalError(err, res));
      });
      return;
    }
    server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.#handleUpgrade(req, socket, head).catch((err: unknown) => this.#internalError(err, socket));
    });
  }

  // A bug must cost one connection, never the process.
  #internalError(err: unknown, target: ClientResponse | Duplex): void {
    this.#log.error({ err: err instanceof Error ? err.stack : String(err) }, "internal error; connection closed");
    target.destroy();
  }

  /** The info listeners.ts recorded for a request's connection (for an HTTP/2 stream: for its session). */
  connectionInfo(req: ClientRequest): ConnectionInfo {
    const key: Duplex | Http2Session | undefined = isHttp2(req) ? req.stream.session : req.socket;
    return (
      (key && this.#connections.get(key)) ?? {
        mode: "transparent",
        tls: false,
        client: { address: "unknown", port: 0 },
        destination: undefined,
        sni: undefined,
      }
    );
  }

  #newState(conn: ConnectionInfo, req: ClientRequest): RequestState {
    return {
      id: `${ID_PREFIX}-${(++idCounter).toString(36)}`,
      conn,
      h2: isHttp2(req),
      method: req.method ?? "GET",
      url: req.url ?? "",
      flow: undefined,
      version: undefined,
      started: performance.now(),
      decision: "allowed",
      reason: undefined,
      audit: undefined,
      bytes: 0,
      req: undefined,
      requestTap: undefined,
      responseTap: undefined,
      requestHeld: undefined,
      grpc: isGrpc(req.headers["content-type"]) ? (req.headers["content-type"] as string) : undefined,
      grpcAnswer: undefined,
      grpcStatus: undefined,
    };
  }

  /** decide() for one request; its filter step pins a filter version on the state (released by the caller). */
  #decide(state: RequestState, req: ClientRequest, upgrade: boolean): Promise<Decision> {
    const deps: DecideDeps = {
      rules: this.#opts.rules,
      policy: this.#opts.policy,
      probeAddress: this.#opts.probeAddress,
      filter: (target, headers) => this.#filter(state, target, headers),
    };
    if (isHttp2(req)) return decide(http2Head(req), state.conn, deps);
    return decide({ method: state.method, url: req.url ?? "/", headers: req.headers, upgrade }, state.conn, deps);
  }

  async #filter(state: RequestState, target: Target, headers: Headers): Promise<FilterOutcome> {
    state.url = target.url;
    const conn = state.conn;
    // Not copied: nothing here writes to them, and the filter's flow gets its own copy (filter/host.ts).
    state.flow = {
      id: state.id,
      // Looked up per request, not per connection: a label changed meanwhile counts from the next request.
      client: withPod(conn.client, this.#opts.pods?.lookup(conn.client.address)),
      destination: conn.destination,
      // A valid server name is the target's host (they must agree); an invalid one never gets this far.
      sni: conn.sni === undefined ? undefined : target.host,
      request: { method: state.method, scheme: target.scheme, host: target.host, port: target.port, path: target.path, url: target.url, headers },
    };
    const req = state.req;
    if (req !== undefined) {
      // The client's body bounds its own wait (--request-timeout closes the connection: net/bounds.ts).
      state.flow.request.body = (want) => (state.requestTap ??= new BodyTap(req, { which: "request", maxBytes: this.#maxBody })).read(want);
    }
    state.version = this.#filters.acquire();
    if (!state.version) {
      return { kind: "answer", answer: { status: 503, body: "tproxy: no filter is loaded (see the proxy's log for why); request denied\n", headers: {} }, reason: "no-filter" };
    }
    const ran = await runHook(this.#run, state.version, "request", state.flow);
    state.requestHeld = state.requestTap?.release();
    const j = this.#judge(state, "request", ran, state.requestTap?.refusal);
    state.audit = j.audit;
    switch (j.kind) {
      case "answer": return { kind: "answer", answer: j.answer, reason: "filter" };
      case "body": return { kind: "answer", answer: this.#bodyRefusalAnswer(state, "request", j.refusal), reason: `body: ${j.refusal.kind}` };
      case "failed": return { kind: "answer", answer: this.#filterErrorAnswer(j.failure), reason: j.failure };
      case "pass": return { kind: "pass", headers: j.headers ?? headers };
    }
  }

  async #handle(req: ClientRequest, res: ClientResponse): Promise<void> {
    // A stream refused as it opened (net/bounds.ts: the connection limits count streams) is not a request.
    if (isHttp2(req) && req.stream.closed) return;
    const state = this.#newState(this.connectionInfo(req), req);
    state.req = req;
    this.inFlight += 1;
    res.once("close", () => {
      this.inFlight -= 1;
      if (state.version) this.#filters.release(state.version);
      this.#finish(state, res);
      // The state can outlive the response (closures of the upstream exchange name it); what it reaches,
      // the client's request with its headers and the flow, must not: kept, they outlive the young
      // generation and fill the old one (npm run bench: about 70 MiB more resident at 16 keep-alive
      // connections, and the major collections that go with it).
      state.req = undefined;
      state.flow = undefined;
      state.requestTap = undefined;
      state.responseTap = undefined;
      state.requestHeld = undefined;
    });
    if (this.draining && !state.h2) res.setHeader("connection", "close");

    const d = await this.#decide(state, req, false);
    if (d.kind === "answer") {
      if (d.target) state.url = d.target.url;
      state.decision = d.decision;
      state.reason = d.reason;
      this.#answer(res, d.answer, state);
      return;
    }
    this.#forward(state, req, res, d.target, d.headers);
  }

  /** Judges a hook's run (filter/judge.ts); a failure is counted and logged, a would-deny recorded. */
  #judge(state: RequestState, hook: HookName, ran: HookRun, refusal: BodyRefusal | undefined): Judgement {
    if (ran.failure !== undefined) {
      this.#metrics.filterErrors.inc({ kind: ran.failure === "filter-timeout" ? "timeout" : "throw" });
      state.reason = ran.failure;
      this.#log.warn({ id: state.id, url: state.url, hook, err: ran.error!.message }, `filter ${hook} hook failed`);
    }
    const j = judge(ran, refusal, state.audit, this.#judgeOptions);
    if (j.kind === "pass" && j.wouldDeny) {
      state.decision = "would-deny";
      state.reason = wouldDenyReason(j.wouldDeny);
    }
    return j;
  }

  get #maxBody(): number {
    return this.#opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  }

  #bodyRefusalAnswer(state: RequestState, which: "request" | "response", refusal: BodyRefusal): Answer {
    state.reason = `body: ${refusal.kind}`;
    this.#log.warn({ id: state.id, url: state.url, hook: which, err: refusal.message }, `the ${which} hook read a body that could not be had; ${which} refused`);
    return refusalAnswer(which, refusal, this.#maxBody);
  }

  #filterErrorAnswer(failure: FailureReason): Answer {
    const why = failure === "filter-timeout" ? `the filter did not decide within ${this.#filters.timeoutMs} ms` : "the filter failed on this request";
    return { status: 403, body: `tproxy: ${why}; request denied (see the proxy's log)\n`, headers: {} };
  }

  #lookupFor(port: number): LookupFunction {
    let lookup = this.#lookups.get(port);
    if (lookup === undefined) {
      lookup = createGuardedLookup({ policy: this.#opts.policy, port });
      this.#lookups.set(port, lookup);
    }
    return lookup;
  }

  /** Connection options for exactly `target`: its address (named: through the guarded lookup), port and path. */
  #upstreamOptions(target: Target, method: string, headers: http.OutgoingHttpHeaders): https.RequestOptions {
    const options: https.RequestOptions = { host: target.host, port: target.port, method, path: target.path, headers, setHost: false };
    if (target.named) {
      options.lookup = this.#lookupFor(target.port);
      if (target.scheme === "https") options.servername = target.host;
    }
    return options;
  }

  #upstreamError(state: RequestState, target: Target, err: NodeJS.ErrnoException): { status: number; message: string } {
    if (err instanceof DestinationDeniedError) {
      state.decision = "denied";
      state.reason = `address: ${err.reason}`;
    } else {
      state.reason = `upstream: ${err.code ?? err.message}`;
      this.#log.warn({ id: state.id, url: target.url, err: err.message, code: err.code }, "upstream request failed");
    }
    return describeUpstreamError(err, target);
  }

  #forward(state: RequestState, req: ClientRequest, res: ClientResponse, target: Target, headers: Headers): void {
    if (this.#upstreams === undefined || !state.h2 || target.scheme !== "https") {
      this.#forwardHttp1(state, req, res, target, headers);
      return;
    }
    this.#overLeg(state, req, res, target, headers);
  }

  /** An h2 client's stream over the target's upstream leg: its HTTP/2 session, or HTTP/1.1 (upstream-h2.ts). */
  #overLeg(state: RequestState, req: ClientRequest, res: ClientResponse, target: Target, headers: Headers, refusedBy?: ClientHttp2Session): void {
    const retried = refusedBy !== undefined;
    const go = (leg: UpstreamLeg): void => {
      if (res.destroyed) {
        // The client went away while the connection was being made.
        if (leg.kind === "h1") leg.socket?.destroy();
      } else if (leg.kind === "h2") this.#forwardHttp2(state, req, res, target, headers, leg.session, retried);
      else this.#forwardHttp1(state, req, res, target, headers, false, leg.socket);
    };
    try {
      const leg = this.#upstreams!.leg(target, refusedBy);
      if (leg instanceof Promise) leg.then(go, (err: NodeJS.ErrnoException) => this.#failedUpstream(state, res, target, err));
      else go(leg);
    } catch (err) {
      this.#failedUpstream(state, res, target, err as NodeJS.ErrnoException);
    }
  }

  /** An upstream exchange that failed: its status and reason, or a reset when the answer has begun. */
  #failedUpstream(state: RequestState, res: ClientResponse, target: Target, err: NodeJS.ErrnoException): void {
    const { status, message } = this.#upstreamError(state, target, err);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    this.#answer(res, { status, body: message + "\n", headers: {} }, state);
  }

  /**
   * One stream to `target` on an upstream HTTP/2 session: the pseudo-headers name exactly the judged target
   * (`:authority` its authority, whatever Host the filter's headers carry).
   */
  #forwardHttp2(state: RequestState, req: ClientRequest, res: ClientResponse, target: Target, headers: Headers, session: ClientHttp2Session, retried = false): void {
    const out: http2.OutgoingHttpHeaders = forwardableHeaders(headers);
    delete out.host;
    // gRPC servers may require "te: trailers", the one TE value HTTP/2 allows (RFC 9113 8.2.2).
    const te = req.headers.te;
    if (typeof te === "string" && /(^|,)\s*trailers\s*(;|,|$)/i.test(te)) out.te = "trailers";
    const held = state.requestHeld;
    state.requestHeld = undefined;
    if (held?.ended && (held.size > 0 || req.headers["content-length"] !== undefined)) out["content-length"] = String(held.size);
    out[":method"] = state.method;
    out[":scheme"] = "https";
    out[":authority"] = target.authority;
    out[":path"] = target.path;
    const endStream = held === undefined ? !hasBody(req) : held.ended && held.size === 0;
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request(out, { endStream });
    } catch (err) {
      this.#failedUpstream(state, res, target, err as NodeJS.ErrnoException);
      return;
    }
    let answered = false;
    res.once("close", () => {
      if (!answered && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
    });
    stream.once("response", (h: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader, flags: number) => {
      answered = true;
      const status = Number(h[":status"] ?? 502);
      const headers: IncomingHttpHeaders = {};
      for (const k of Object.keys(h)) if (k.charCodeAt(0) !== 58) headers[k] = h[k];
      let trailers: IncomingHttpHeaders | undefined;
      stream.once("trailers", (t: IncomingHttpHeaders) => {
        trailers = t;
      });
      const answer: UpstreamAnswer = { status, message: undefined, headers, body: stream, ended: (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0, trailers: () => trailers };
      this.#respondFromUpstream(state, res, answer).catch((err: unknown) => {
        stream.destroy();
        this.#internalError(err, res);
      });
    });
    let failed = false;
    const fail = (err: NodeJS.ErrnoException): void => {
      if (failed) return;
      failed = true;
      if (answered) {
        res.destroy();
        return;
      }
      // A stream the server refused was not processed (RFC 9113 8.7): the race of a new stream with the
      // server's GOAWAY (nginx sends one every 1000 requests). A bodiless one is sent again, once, on a new
      // session (the refusing one may not have told its GOAWAY yet); one whose body was streamed cannot be.
      if (!retried && endStream && stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM && !res.destroyed) {
        this.#log.debug({ id: state.id, url: target.url }, "upstream refused the stream; sending it again");
        this.#overLeg(state, req, res, target, headers, session);
        return;
      }
      this.#failedUpstream(state, res, target, err);
    };
    stream.on("error", fail);
    // Reset by the server (or its session gone) before any answer, without an error event.
    stream.once("close", () => {
      if (!answered) fail(Object.assign(new Error(`stream closed (code ${stream.rstCode ?? "none"})`), { code: "ERR_HTTP2_STREAM_CLOSED" }));
    });
    if (endStream) return;
    this.#sendBody(req, res, stream, held);
  }

  /** What the request hook held, then the rest of the client's body, into the upstream request. */
  #sendBody(req: ClientRequest, res: ClientResponse, upstream: Writable, held: Held | undefined): void {
    if (held) {
      for (const chunk of held.chunks) upstream.write(chunk);
      if (held.ended) {
        // The stream is done (and may be destroyed already): only the client's connection tells whether
        // anyone still waits for the answer.
        if (res.destroyed) upstream.destroy();
        else upstream.end();
        return;
      }
    }
    if (req.destroyed) {
      upstream.destroy();
      return;
    }
    if (!hasBody(req)) {
      // Nothing to stream (RFC 9112 6.3: no Content-Length, no Transfer-Encoding): the request is complete,
      // and a pipe per request would cost about a tenth of the proxy's allocations (npm run bench).
      upstream.end();
      return;
    }
    if (isHttp2(req)) {
      // A stream the client resets mid-body ends its request object as if the body were whole: the upstream
      // request is cut off instead, or it would take the part that came for the whole (a chunked one ends).
      req.once("aborted", () => upstream.destroy());
    }
    relay(req, upstream);
  }

  /**
   * One request to `target` over HTTP/1.1: through the kept-alive pools, or on `socket` (a fresh TLS
   * connection whose server chose http/1.1 in ALPN), or on a connection of its own (`retry`).
   */
  #forwardHttp1(state: RequestState, req: ClientRequest, res: ClientResponse, target: Target, headers: Headers, retry = false, socket?: TLSSocket): void {
    const out = forwardableHeaders(headers);
    // What the request hook read goes first; read whole, it is sent with its own length (a chunked
    // upload becomes a sized one), whatever the headers claimed.
    const held = retry ? undefined : state.requestHeld;
    state.requestHeld = undefined;
    if (held?.ended && (held.size > 0 || req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined)) {
      out["content-length"] = String(held.size);
    }
    const options = this.#upstreamOptions(target, state.method, out);
    if (retry) this.#ownConnection(options, target);
    else if (socket !== undefined) {
      // No agent at all: Node uses createConnection only then (agent: false would make a connection anew).
      options.createConnection = () => socket;
    } else options.agent = target.scheme === "https" ? this.#opts.httpsAgent : this.#opts.httpAgent;
    const upstream = (target.scheme === "https" ? https : http).request(options);
    let answered = false;
    upstream.on("response", (upRes) => {
      answered = true;
      const answer: UpstreamAnswer = { status: upRes.statusCode ?? 502, message: upRes.statusMessage, headers: upRes.headers, body: upRes, ended: false, trailers: () => upRes.trailers };
      this.#respondFromUpstream(state, res, answer).catch((err: unknown) => {
        upRes.destroy();
        this.#internalError(err, res);
      });
    });
    upstream.on("error", (err: NodeJS.ErrnoException) => {
      // A kept-alive connection the server closed just as it was reused: nothing of the request was
      // processed, and a bodiless safe request can be sent again, once, on a connection of its own
      // (another pooled one may have been closed by the same server at the same moment).
      if (!retry && !answered && upstream.reusedSocket && isStaleConnection(err) && canResend(state.method, req)) {
        this.#log.debug({ id: state.id, url: target.url, code: err.code }, "kept-alive upstream connection was closed; retrying on a new one");
        this.#forwardHttp1(state, req, res, target, headers, true);
        return;
      }
      this.#failedUpstream(state, res, target, err);
    });
    if (retry) {
      // The request had no body and was read whole (the stream is destroyed once read): only the
      // client's connection tells whether anyone still waits for the answer.
      if (res.destroyed) upstream.destroy();
      else upstream.end();
      return;
    }
    this.#sendBody(req, res, upstream, held);
  }

  /** Options for a connection outside the pools, with the TLS settings the https agent would give. */
  #ownConnection(options: https.RequestOptions, target: Target): void {
    options.agent = false;
    if (target.scheme === "https") {
      // tls.connect options that https.RequestOptions does not list.
      Object.assign(options, { secureContext: this.#opts.upstreamTls.secureContext });
      options.rejectUnauthorized = this.#opts.upstreamTls.rejectUnauthorized;
    }
  }

  async #respondFromUpstream(state: RequestState, res: ClientResponse, up: UpstreamAnswer): Promise<void> {
    const upRes = up.body;
    const flow = state.flow;
    if (flow === undefined || res.destroyed) {
      // The client went away (its state is let go on close) while the upstream was answering.
      upRes.destroy();
      return;
    }
    flow.response = {
      status: up.status,
      headers: up.headers,
      body: (want) => (state.responseTap ??= new BodyTap(upRes, { which: "response", maxBytes: this.#maxBody, waitMs: this.#opts.bodyWaitMs ?? 0 })).read(want),
    };
    const ran = await runHook(this.#run, state.version!, "response", flow);
    const held = state.responseTap?.release();
    const j = this.#judge(state, "response", ran, state.responseTap?.refusal);
    if (j.kind !== "pass") {
      upRes.destroy();
      state.decision = "denied";
      switch (j.kind) {
        case "body": return this.#answer(res, this.#bodyRefusalAnswer(state, "response", j.refusal), state);
        case "failed":
          flow.response = undefined;
          return this.#answer(res, this.#filterErrorAnswer(j.failure), state);
        case "answer":
          state.reason = "filter";
          return this.#answer(res, j.answer, state);
      }
    }
    if (res.destroyed) {
      // The client went away while the upstream (or the response hook) was answering.
      upRes.destroy();
      return;
    }
    const headers = j.headers ?? up.headers;
    const out = forwardableHeaders(headers);
    if (state.h2) {
      const h2res = res as Http2ServerResponse;
      if (up.ended) {
        // A trailers-only answer stays one: its status (gRPC's grpc-status) is in the one HEADERS frame, which
        // ends the stream; sent as headers then empty trailers, a gRPC client would find no status.
        upRes.resume();
        state.grpcStatus = grpcStatusOf(up.headers["grpc-status"]);
        h2res.stream.respond({ ...out, ":status": up.status }, { endStream: true });
        return;
      }
      // HTTP/2 has no reason phrase (Node warns when given one).
      h2res.writeHead(up.status, out);
    } else {
      if (this.draining) out.connection = "close";
      (res as ServerResponse).writeHead(up.status, up.message, out);
    }
    // Trailers (gRPC's status) go on as they came, once the body has ended and before the answer ends.
    const addTrailers = (): void => {
      const trailers = up.trailers();
      if (trailers === undefined || Object.keys(trailers).length === 0) return;
      state.grpcStatus = grpcStatusOf(trailers["grpc-status"]);
      res.addTrailers(forwardableHeaders(trailers) as Record<string, string>);
    };
    if (held) {
      for (const chunk of held.chunks) {
        state.bytes += chunk.length;
        (res as Writable).write(chunk);
      }
      if (held.ended) {
        addTrailers();
        res.end();
        return;
      }
    }
    // Before relay's own "end" listener, which ends the answer.
    upRes.once("end", addTrailers);
    upRes.on("data", (chunk: Buffer) => {
      state.bytes += chunk.length;
    });
    relay(upRes, res);
  }

  #answer(res: ClientResponse, answer: Answer, state: RequestState): void {
    const body = typeof answer.body === "string" ? Buffer.from(answer.body) : Buffer.from(answer.body);
    state.bytes = body.length;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (state.grpc !== undefined && !isGrpc(headerOf(answer.headers, "content-type"))) {
      this.#answerGrpc(res, answer, body, state, state.grpc);
      return;
    }
    const headers: http.OutgoingHttpHeaders = { "content-type": "text/plain; charset=utf-8", ...answer.headers, "content-length": body.length };
    if (this.draining && !state.h2) headers.connection = "close";
    // A filter's answer may name connection headers; an HTTP/2 stream must not carry them.
    if (state.h2) (res as Http2ServerResponse).writeHead(answer.status, forwardableHeaders(headers as Headers));
    else (res as ServerResponse).writeHead(answer.status, headers);
    res.end(body);
  }

  /** The proxy's answer to a gRPC call, as a trailers-only gRPC answer (grpc.ts) that its client can read. */
  #answerGrpc(res: ClientResponse, answer: Answer, body: Buffer, state: RequestState, contentType: string): void {
    const lower: http.OutgoingHttpHeaders = {};
    for (const k of Object.keys(answer.headers)) lower[k.toLowerCase()] = answer.headers[k];
    const { headers, code } = grpcAnswerHeaders(answer.status, lower, body.toString("utf8"), contentType);
    state.grpcAnswer = { status: answer.status, code };
    state.bytes = 0;
    if (state.h2) {
      // One HEADERS frame that ends the stream (the compatibility API would send empty trailers after it).
      (res as Http2ServerResponse).stream.respond({ ...forwardableHeaders(headers as Headers), ":status": 200 }, { endStream: true });
      return;
    }
    if (this.draining) headers.connection = "close";
    headers["content-length"] = 0;
    (res as ServerResponse).writeHead(200, headers);
    res.end();
  }

  #finish(state: RequestState, res: ClientResponse): void {
    const grpc = state.grpcAnswer;
    if (grpc !== undefined) {
      // Logged and counted as the HTTP status the answer stands for (the wire says 200 and grpc-status).
      this.#record(state, grpc.status, grpc.status);
      return;
    }
    const status = res.headersSent ? res.statusCode : 0;
    this.#record(state, res.writableFinished ? status : `${status}(incomplete)`, status);
  }

  #record(state: RequestState, shown: number | string, status: number): void {
    const seconds = (performance.now() - state.started) / 1000;
    const decision = state.decision;
    this.#metrics.requests.inc({ decision, status: String(status) });
    this.#metrics.duration.observe({ decision }, seconds);
    this.#opts.requests({
      id: state.id,
      client: clientText(state.conn),
      method: state.method,
      url: state.url,
      status: shown,
      bytes: state.bytes,
      ms: Math.round(seconds * 10000) / 10,
      decision,
      reason: state.reason,
      filter: state.version?.hash,
      ...(state.h2 ? { protocol: "h2" as const } : {}),
      ...(state.grpcAnswer !== undefined ? { grpc: state.grpcAnswer.code } : state.grpcStatus !== undefined ? { grpc: state.grpcStatus } : {}),
    });
  }

  /** An answer on an upgrade's socket (the HTTP server no longer drives it), then close. */
  #answerSocket(socket: Duplex, state: RequestState, answer: Answer): void {
    const body = typeof answer.body === "string" ? Buffer.from(answer.body) : Buffer.from(answer.body);
    state.bytes = body.length;
    if (socket.writable) socket.end(Buffer.concat([Buffer.from(rawAnswer(answer.status, { "content-type": "text/plain; charset=utf-8", ...answer.headers }, body), "latin1"), body]));
    else socket.destroy();
    this.#record(state, answer.status, answer.status);
  }

  async #handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on("error", () => socket.destroy());
    const state = this.#newState(this.connectionInfo(req), req);
    let d: Decision;
    try {
      d = await this.#decide(state, req, true);
    } finally {
      // No response hook runs for an upgrade: the version is released once the request is judged.
      if (state.version) this.#filters.release(state.version);
    }
    if (d.kind === "answer") {
      if (d.target) state.url = d.target.url;
      state.decision = d.decision;
      state.reason = d.reason;
      this.#answerSocket(socket, state, d.answer);
      return;
    }
    this.#relayUpgrade(state, req, socket, head, d.target, d.headers);
  }

  /** Sends the upgrade request to exactly `target`; on 101 splices the two sockets, otherwise passes the answer back. */
  #relayUpgrade(state: RequestState, req: IncomingMessage, socket: Duplex, head: Buffer, target: Target, headers: Headers): void {
    const out = forwardableHeaders(headers);
    out.connection = "Upgrade";
    out.upgrade = req.headers.upgrade;
    const options = this.#upstreamOptions(target, state.method, out);
    this.#ownConnection(options, target);
    const upstream = (target.scheme === "https" ? https : http).request(options);
    let done = false;
    socket.once("close", () => {
      if (!done) upstream.destroy();
    });
    upstream.on("upgrade", (upRes: IncomingMessage, upSocket: Duplex, upHead: Buffer) => {
      done = true;
      upSocket.on("error", () => upSocket.destroy());
      if (socket.destroyed) {
        upSocket.destroy();
        return;
      }
      let response = `HTTP/1.1 ${upRes.statusCode ?? 101} ${upRes.statusMessage ?? ""}\r\n`;
      for (let i = 0; i < upRes.rawHeaders.length; i += 2) response += `${upRes.rawHeaders[i]}: ${upRes.rawHeaders[i + 1]}\r\n`;
      socket.write(`${response}\r\n`);
      if (upHead.length > 0) socket.write(upHead);
      if (head.length > 0) upSocket.write(head);
      upSocket.on("data", (chunk: Buffer) => {
        state.bytes += chunk.length;
      });
      relay(upSocket, socket);
      relay(socket, upSocket);
      state.reason = "websocket";
      this.#record(state, upRes.statusCode ?? 101, upRes.statusCode ?? 101);
    });
    upstream.on("response", (upRes: IncomingMessage) => {
      // The upstream refused the upgrade: its answer goes back as it came, then the connection closes.
      done = true;
      let response = `HTTP/1.1 ${upRes.statusCode ?? 502} ${upRes.statusMessage ?? ""}\r\n`;
      for (let i = 0; i < upRes.rawHeaders.length; i += 2) {
        const name = (upRes.rawHeaders[i] as string).toLowerCase();
        if (name !== "connection" && name !== "transfer-encoding" && name !== "keep-alive") response += `${upRes.rawHeaders[i]}: ${upRes.rawHeaders[i + 1]}\r\n`;
      }
      socket.write(`${response}connection: close\r\n\r\n`);
      upRes.on("data", (chunk: Buffer) => {
        state.bytes += chunk.length;
      });
      relay(upRes, socket);
      this.#record(state, upRes.statusCode ?? 502, upRes.statusCode ?? 502);
    });
    upstream.on("error", (err: NodeJS.ErrnoException) => {
      if (done) return;
      done = true;
      const { status, message } = this.#upstreamError(state, target, err);
      this.#answerSocket(socket, state, { status, body: message + "\n", headers: {} });
    });
    upstream.end();
  }
}

/** Errors of a kept-alive connection that the server had closed: reset, or closed before any answer. */
function isStaleConnection(err: NodeJS.ErrnoException): boolean {
  return err.code === "ECONNRESET" || err.code === "EPIPE";
}

/** Safe methods (RFC 9110 9.2.1) without a body: sending one again cannot repeat an effect. */
function canResend(method: string, req: ClientRequest): boolean {
  return (method === "GET" || method === "HEAD" || method === "OPTIONS") && !hasBody(req);
}

/**
 * Whether the request's framing announces a body (a Content-Length other than 0, or a Transfer-Encoding; on
 * HTTP/2: its HEADERS frame did not end the stream).
 */
function hasBody(req: ClientRequest): boolean {
  if (isHttp2(req)) return !req.stream.endAfterHeaders;
  const length = req.headers["content-length"];
  return req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0");
}

/** A header of a filter's answer, whatever the case of its name. */
function headerOf(headers: Record<string, string>, name: string): string | undefined {
  for (const k of Object.keys(headers)) if (k.toLowerCase() === name) return headers[k];
  return undefined;
}

function withPod(client: { address: string; port: number }, pod: PodIdentity | undefined): FlowData["client"] {
  return pod === undefined ? client : { address: client.address, port: client.port, pod };
}

/**
 * An HTTP/2 stream's request as decide() reads it: the headers without pseudo-headers (the filter sees what an
 * HTTP/1.1 request would carry), the authority from `:authority` (it must agree with the SNI as Host does).
 */
function http2Head(req: Http2ServerRequest): RequestHead {
  const headers: IncomingHttpHeaders = {};
  const raw = req.headers;
  for (const k of Object.keys(raw)) if (k.charCodeAt(0) !== 58) headers[k] = raw[k];
  return { method: req.method, url: raw[":path"] ?? "", headers, upgrade: false, h2: { authority: raw[":authority"], scheme: raw[":scheme"] } };
}
