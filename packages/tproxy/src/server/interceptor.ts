// The request pipeline, on http-mitm-proxy: its server-side request handling builds the per-request
// context and runs the onRequest handlers; tproxy's handler judges the request with the filter and, when
// it passes, forwards it itself (streaming both ways with backpressure, to the address the claimed name
// resolves to, upstream certificate verified). WebSocket upgrades go through the library's WebSocket
// relay once the filter has allowed them.
//
// What is overridden and why: http-mitm-proxy's own listen() writes a CA and per-host keys to disk,
// generates RSA keys in JavaScript per host, and reaches its HTTPS servers through an extra loopback
// connection; tproxy never calls listen(): it accepts connections itself (transparent and standard
// listeners), terminates TLS in-process with cached leaf certificates, and hands the decrypted stream
// straight to an in-process HTTP server.
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import type { Duplex } from "node:stream";
import type { Readable, Writable } from "node:stream";
import { Proxy } from "http-mitm-proxy";
import type { IContext } from "http-mitm-proxy";
import { WebSocketServer } from "ws";
import type { Logger } from "pino";
import { FilterOverloadedError, FilterTimeoutError } from "../errors.ts";
import type { FilterHost, FilterVersion, HookResult } from "../filter/host.ts";
import type { Answer, FlowData, HookName } from "../filter/protocol.ts";
import type { Headers } from "../filter/types.ts";
import type { RequestLog } from "../observe/log.ts";
import type { ProxyMetrics } from "../observe/metrics.ts";
import { resolveTarget, TargetError, type ConnectionInfo, type Target } from "./target.ts";

/** Answer to sidecar-init's readiness probe (see PROBE_ADDRESS). */
export const PROBE_HEADER = "x-tproxy-probe";
export const PROBE_BODY = "tproxy: intercepting\n";

export interface InterceptorOptions {
  onFilterError: "deny" | "allow";
  /** Plain-HTTP requests redirected from this address (port 80) are answered by the proxy: the readiness probe. */
  probeAddress: string;
  /** Where the one-line-per-request log goes. */
  requests: RequestLog;
  httpAgent: http.Agent;
  httpsAgent: https.Agent;
}

type Decision = "allowed" | "denied";

interface RequestState {
  conn: ConnectionInfo;
  flow: FlowData;
  version: FilterVersion | undefined;
  started: number;
  decision: Decision;
  reason: string | undefined;
  bytes: number;
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

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade"]);

function forwardableHeaders(headers: Headers | IncomingHttpHeaders): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  const connectionTokens = String(headers.connection ?? "").toLowerCase().split(",").map((t) => t.trim());
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || HOP_BY_HOP.has(k) || connectionTokens.includes(k)) continue;
    out[k] = v;
  }
  return out;
}

function describeUpstreamError(err: NodeJS.ErrnoException, target: Target): { status: number; message: string } {
  const code = err.code ?? "";
  const where = `${target.host}:${target.port}`;
  if (/CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_TLS_CERT_ALTNAME_INVALID|HOSTNAME_MISMATCH/.test(code)) {
    return { status: 502, message: `tproxy: upstream certificate of ${where} is not trusted (${code}: ${err.message})` };
  }
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return { status: 502, message: `tproxy: cannot resolve ${target.host} (${code})` };
  if (code === "ETIMEDOUT" || code === "ESOCKETTIMEDOUT") return { status: 504, message: `tproxy: upstream ${where} timed out` };
  return { status: 502, message: `tproxy: upstream ${where} failed (${code || err.message})` };
}

export class Interceptor extends Proxy {
  readonly #filters: FilterHost;
  readonly #log: Logger;
  readonly #metrics: ProxyMetrics;
  readonly #opts: InterceptorOptions;
  readonly #connections: WeakMap<Duplex, ConnectionInfo>;
  readonly #wss = new WebSocketServer({ noServer: true });
  /** Request target and Host as the client sent them (the library rewrites absolute-form URLs in place). */
  readonly #raw = new WeakMap<IncomingMessage, { url: string; host: string | undefined }>();
  /** Requests in flight, for draining on shutdown. */
  inFlight = 0;
  draining = false;

  constructor(filters: FilterHost, log: Logger, metrics: ProxyMetrics, connections: WeakMap<Duplex, ConnectionInfo>, opts: InterceptorOptions) {
    super();
    this.#filters = filters;
    this.#log = log;
    this.#metrics = metrics;
    this.#connections = connections;
    this.#opts = opts;
    // What the library reads from itself when it forwards WebSocket connections.
    this.options = {};
    this.httpAgent = opts.httpAgent;
    this.httpsAgent = opts.httpsAgent;
    this.keepAlive = true;
    this.timeout = 0;
    this.onRequest((ctx, _callback) => {
      this.#handle(ctx).catch((err: unknown) => this.#internalError(err, ctx.proxyToClientResponse));
    });
  }

  /** Attaches the pipeline to an (unlistened or listening) HTTP server. */
  attach(server: http.Server): void {
    server.on("request", (req: IncomingMessage, res: ServerResponse) => {
      const conn = this.#connections.get(req.socket);
      this.#raw.set(req, { url: req.url ?? "/", host: req.headers.host });
      // The library answers 400 by itself when it finds no host; a request that names nothing is judged
      // on its original destination instead, so it gets a placeholder that the handler removes again.
      req.headers.host ??= "host.invalid";
      this._onHttpServerRequest(conn?.tls ?? false, req, res);
    });
    server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.#handleUpgrade(req, socket, head).catch((err: unknown) => this.#internalError(err, socket));
    });
  }

  // A bug must cost one connection, never the process.
  #internalError(err: unknown, target: ServerResponse | Duplex): void {
    this.#log.error({ err: err instanceof Error ? err.stack : String(err) }, "internal error; connection closed");
    target.destroy();
  }

  // Replaces the library's error funnel (which prints to the console and answers 504 for everything).
  override _onError(kind: string, ctx: IContext | null, err: Error): void {
    this.#log.debug({ kind, err: err.message }, "proxy error");
    const res = ctx?.proxyToClientResponse;
    if (res && !res.headersSent) this.#answer(res, { status: 502, body: `tproxy: ${kind}: ${err.message}\n`, headers: {} });
    else res?.destroy();
  }

  connectionInfo(socket: Duplex): ConnectionInfo {
    return (
      this.#connections.get(socket) ?? {
        mode: "transparent",
        tls: false,
        client: { address: "unknown", port: 0 },
        destination: undefined,
        sni: undefined,
      }
    );
  }

  #newState(conn: ConnectionInfo, req: IncomingMessage, target: Target): RequestState {
    return {
      conn,
      version: undefined,
      started: performance.now(),
      decision: "allowed",
      reason: undefined,
      bytes: 0,
      flow: {
        id: `${ID_PREFIX}-${(++idCounter).toString(36)}`,
        client: conn.client,
        destination: conn.destination,
        sni: conn.sni,
        // Not copied: nothing here writes to them, and the filter thread gets its own copy by postMessage.
        request: { method: req.method ?? "GET", scheme: target.scheme, host: target.host, port: target.port, path: target.path, url: target.url, headers: req.headers },
      },
    };
  }

  async #handle(ctx: IContext): Promise<void> {
    const req = ctx.clientToProxyRequest;
    const res = ctx.proxyToClientResponse;
    const conn = this.connectionInfo(req.socket);
    this.inFlight += 1;
    let state: RequestState | undefined;
    res.once("close", () => {
      this.inFlight -= 1;
      if (state?.version) this.#filters.release(state.version);
      this.#finish(state, req, res);
    });
    if (this.draining) res.setHeader("connection", "close");

    let target: Target;
    try {
      const raw = this.#raw.get(req);
      if (raw && raw.host === undefined) delete req.headers.host;
      target = resolveTarget(raw?.url ?? req.url ?? "/", raw ? raw.host : req.headers.host, conn);
    } catch (err) {
      const e = err instanceof TargetError ? err : new TargetError(400, String(err));
      state = this.#newState(conn, req, { scheme: conn.tls ? "https" : "http", host: "-", port: 0, path: req.url ?? "", url: req.url ?? "", named: false });
      this.#deny(state, res, { status: e.status, body: `tproxy: ${e.message}\n`, headers: {} }, e.status === 421 ? "sni-mismatch" : "bad-request");
      return;
    }
    state = this.#newState(conn, req, target);

    if (this.#isProbe(conn, target)) {
      state.reason = "probe";
      this.#answer(res, { status: 200, body: PROBE_BODY, headers: { [PROBE_HEADER]: "ok", "content-type": "text/plain" } }, state);
      return;
    }

    state.version = this.#filters.acquire();
    if (!state.version) {
      this.#deny(state, res, { status: 503, body: "tproxy: no filter is loaded (see the proxy's log for why); request denied\n", headers: {} }, "no-filter");
      return;
    }
    const verdict = await this.#runHook(state, "request");
    if (verdict === "deny") return this.#deny(state, res, this.#filterErrorAnswer(state), state.reason);
    if (verdict !== "pass" && verdict.answer) return this.#deny(state, res, verdict.answer, "filter");
    const headers = verdict === "pass" ? state.flow.request.headers : verdict.headers;
    this.#forward(state, req, res, target, headers);
  }

  #isProbe(conn: ConnectionInfo, target: Target): boolean {
    return conn.mode === "transparent" && !conn.tls && conn.destination?.address === this.#opts.probeAddress && conn.destination.port === 80 && target.scheme === "http";
  }

  /** Runs a hook if the pinned version has it. "pass": no hook; "deny": the hook failed and failures deny. */
  async #runHook(state: RequestState, hook: HookName): Promise<HookResult | "pass" | "deny"> {
    const version = state.version!;
    if (!version.hooks.has(hook)) return "pass";
    try {
      return await this.#filters.run(version, hook, state.flow);
    } catch (err) {
      if (err instanceof FilterOverloadedError) {
        // The hook never ran: nothing judged this request, so it is refused whatever --on-filter-error says.
        this.#metrics.filterErrors.inc({ kind: "overloaded" });
        state.reason = "filter-overloaded";
        this.#log.warn({ id: state.flow.id, url: state.flow.request.url, hook, err: err.message }, `filter ${hook} hook did not run`);
        state.flow.response = undefined;
        return "deny";
      }
      const timeout = err instanceof FilterTimeoutError;
      this.#metrics.filterErrors.inc({ kind: timeout ? "timeout" : "throw" });
      state.reason = timeout ? "filter-timeout" : "filter-error";
      this.#log.warn({ id: state.flow.id, url: state.flow.request.url, hook, err: (err as Error).message }, `filter ${hook} hook failed`);
      if (this.#opts.onFilterError === "allow") return "pass";
      state.flow.response = undefined;
      return "deny";
    }
  }

  #filterErrorAnswer(state: RequestState): Answer {
    if (state.reason === "filter-overloaded") {
      return { status: 503, body: "tproxy: the filter is overloaded; request not judged, try again\n", headers: { "retry-after": "1" } };
    }
    const why = state.reason === "filter-timeout" ? `the filter did not decide within ${this.#filters.timeoutMs} ms` : "the filter failed on this request";
    return { status: 403, body: `tproxy: ${why}; request denied (see the proxy's log)\n`, headers: {} };
  }

  #forward(state: RequestState, req: IncomingMessage, res: ServerResponse, target: Target, headers: Headers): void {
    const https_ = target.scheme === "https";
    const options: https.RequestOptions = {
      host: target.host,
      port: target.port,
      method: req.method,
      path: target.path,
      headers: forwardableHeaders(headers),
      agent: https_ ? this.#opts.httpsAgent : this.#opts.httpAgent,
    };
    if (https_ && target.named) options.servername = target.host;
    const upstream = (https_ ? https : http).request(options);
    upstream.on("response", (upRes) => {
      this.#respondFromUpstream(state, res, upRes).catch((err: unknown) => {
        upRes.destroy();
        this.#internalError(err, res);
      });
    });
    upstream.on("error", (err: NodeJS.ErrnoException) => {
      state.reason = `upstream: ${err.code ?? err.message}`;
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const { status, message } = describeUpstreamError(err, target);
      this.#log.warn({ id: state.flow.id, url: target.url, err: err.message, code: err.code }, "upstream request failed");
      this.#answer(res, { status, body: message + "\n", headers: {} }, state);
    });
    if (req.destroyed) {
      upstream.destroy();
      return;
    }
    relay(req, upstream);
  }

  async #respondFromUpstream(state: RequestState, res: ServerResponse, upRes: IncomingMessage): Promise<void> {
    state.flow.response = { status: upRes.statusCode ?? 502, headers: upRes.headers };
    const verdict = await this.#runHook(state, "response");
    if (verdict === "deny" || (verdict !== "pass" && verdict.answer)) {
      upRes.destroy();
      if (verdict === "deny") return this.#deny(state, res, this.#filterErrorAnswer(state), state.reason);
      return this.#deny(state, res, verdict.answer!, "filter");
    }
    if (res.destroyed) {
      // The client went away while the upstream (or the response hook) was answering.
      upRes.destroy();
      return;
    }
    const headers = verdict === "pass" ? upRes.headers : verdict.headers;
    const out = forwardableHeaders(headers);
    if (this.draining) out.connection = "close";
    res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, out);
    upRes.on("data", (chunk: Buffer) => {
      state.bytes += chunk.length;
    });
    relay(upRes, res);
  }

  #deny(state: RequestState, res: ServerResponse, answer: Answer, reason: string | undefined): void {
    state.decision = "denied";
    state.reason = reason;
    this.#answer(res, answer, state);
  }

  #answer(res: ServerResponse, answer: Answer, state?: RequestState): void {
    const body = typeof answer.body === "string" ? Buffer.from(answer.body) : answer.body;
    if (state) state.bytes = body.length;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const headers: http.OutgoingHttpHeaders = { "content-type": "text/plain; charset=utf-8", ...answer.headers, "content-length": body.length };
    if (this.draining) headers.connection = "close";
    res.writeHead(answer.status, headers);
    res.end(body);
  }

  #finish(state: RequestState | undefined, req: IncomingMessage, res: ServerResponse): void {
    if (!state) return;
    const seconds = (performance.now() - state.started) / 1000;
    const status = res.headersSent ? res.statusCode : 0;
    const decision = state.decision;
    this.#metrics.requests.inc({ decision, status: String(status) });
    this.#metrics.duration.observe({ decision }, seconds);
    this.#opts.requests({
      id: state.flow.id,
      client: clientText(state.conn),
      method: req.method,
      url: state.flow.request.url,
      status: res.writableFinished ? status : `${status}(incomplete)`,
      bytes: state.bytes,
      ms: Math.round(seconds * 10000) / 10,
      decision,
      reason: state.reason,
      filter: state.version?.hash,
    });
  }

  async #handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const conn = this.connectionInfo(req.socket);
    socket.on("error", () => socket.destroy());
    const reject = (status: number, body: string, reason: string): void => {
      this.#opts.requests({ id: "-", client: clientText(conn), method: req.method, url: req.url ?? "", status, bytes: body.length, ms: 0, decision: "denied", reason, filter: undefined });
      this.#metrics.requests.inc({ decision: "denied", status: String(status) });
      socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    };
    if (String(req.headers.upgrade).toLowerCase() !== "websocket") return reject(400, "tproxy: only WebSocket upgrades are proxied\n", "bad-request");
    let target: Target;
    try {
      target = resolveTarget(req.url ?? "/", req.headers.host, conn);
    } catch (err) {
      return reject(err instanceof TargetError ? err.status : 400, `tproxy: ${(err as Error).message}\n`, "bad-request");
    }
    const state = this.#newState(conn, req, target);
    state.version = this.#filters.acquire();
    if (!state.version) return reject(503, "tproxy: no filter is loaded; request denied\n", "no-filter");
    try {
      const verdict = await this.#runHook(state, "request");
      if (verdict === "deny") {
        const answer = this.#filterErrorAnswer(state);
        return reject(answer.status, answer.body as string, state.reason ?? "filter-error");
      }
      if (verdict !== "pass" && verdict.answer) {
        const body = typeof verdict.answer.body === "string" ? verdict.answer.body : Buffer.from(verdict.answer.body).toString();
        return reject(verdict.answer.status, body, "filter");
      }
      if (verdict !== "pass") {
        for (const [k, v] of Object.entries(verdict.headers)) if (!k.startsWith("sec-websocket") && v !== undefined) req.headers[k] = v;
      }
    } finally {
      this.#filters.release(state.version);
    }
    // The library relays to the URL it builds from Host: pin Host to the judged target.
    req.headers.host = target.port === (target.scheme === "https" ? 443 : 80) ? target.host : `${target.host}:${target.port}`;
    this.#opts.requests({ id: state.flow.id, client: clientText(conn), method: req.method, url: target.url, status: 101, bytes: 0, ms: 0, decision: "allowed", reason: "websocket", filter: state.version.hash });
    this.#wss.handleUpgrade(req, socket, head, (ws) => {
      this._onWebSocketServerConnect(conn.tls, ws, req);
    });
  }
}
