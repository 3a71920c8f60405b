// One serving proxy: CA and leaf certificates, the filter versions in force, the transparent and standard
// listeners and the request pipeline. Each serving thread runs one (serve-thread.ts); the supervisor
// (supervisor.ts) gives it filter versions, serves the admin endpoints and watches it.
import http from "node:http";
import https from "node:https";
import { readFile } from "node:fs/promises";
import { createSecureContext, getCACertificates } from "node:tls";
import type { Server as NetServer } from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import type { Logging } from "./observe/log.ts";
import type { RunConfig } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { caFromPem } from "./certs/ca.ts";
import { LeafCertificates, type CertificateShare } from "./certs/leaf-cache.ts";
import { FilterHost, type FilterVersion, type HookWatch } from "./filter/host.ts";
import type { CompiledFilter } from "./filter/compile.ts";
import type { PodIdentity } from "./filter/types.ts";
import { ProxyMetrics } from "./observe/metrics.ts";
import { ClientCounts } from "./net/client-counts.ts";
import { listen } from "./net/listen.ts";
import { Interceptor } from "./server/interceptor.ts";
import { createHttp2Server } from "./server/http2.ts";
import type { Http2Session } from "node:http2";
import { AddressPolicy } from "./policy/address-policy.ts";
import { attachConnect, createTransparentServer, type HandOffDeps } from "./server/listeners.ts";
import type { ConnectionInfo } from "./server/target.ts";

/** What a serving thread tells its supervisor when its state changes. */
export interface ServingState {
  ready: boolean;
  filter: string | null;
}

export interface ServeOptions {
  /**
   * The supervisor's side: filters are given by it (initialFilter, then prepareFilter/commitFilter), the
   * deadlines of filter code are published for its watchdog, and state changes are reported to it.
   */
  supervised: { watch: HookWatch; initialFilter: CompiledFilter | undefined; onState(state: ServingState): void };
  /** Bind the listeners with SO_REUSEPORT, beside other serving threads on the same ports. */
  reusePort?: boolean;
  /** 48 bytes of TLS session-ticket keys shared by the serving threads (default: random). */
  ticketKeys?: Buffer;
  /** The CA to sign with (PEM), as the supervisor read and checked it; a thread started later gets the one in force. */
  ca: { certPem: string; keyPem: string };
  /** The leaf key shared by the serving threads (PKCS#8 PEM; default: a new one). */
  leafKeyPem?: string;
  /** Where minted certificates are announced to the other serving threads. */
  certificateShare?: CertificateShare;
  /** Connections per source address, counted in memory every serving thread shares. */
  clientCounts?: SharedArrayBuffer;
  /** Which pod of this node has a client address (`flow.client.pod`); default: none known. */
  pods?: { lookup(address: string): PodIdentity | undefined };
}

export interface ProxyAddresses {
  transparent: number;
  standard: number | undefined;
}

async function upstreamTrust(config: RunConfig): Promise<string[]> {
  // Node's bundled roots plus the machine's (/etc/ssl/certs in the image), plus --upstream-ca.
  const roots = [...new Set([...getCACertificates("bundled"), ...getCACertificates("system")])];
  if (config.upstreamCa !== undefined) {
    const extra = await readFile(config.upstreamCa, "utf8").catch((err: Error) => {
      throw new ConfigError(`--upstream-ca ${config.upstreamCa}: ${err.message}`);
    });
    if (!extra.includes("BEGIN CERTIFICATE")) throw new ConfigError(`--upstream-ca ${config.upstreamCa}: no PEM certificate in the file`);
    roots.push(extra);
  }
  return roots;
}

// Agents pass socket options through to net.connect (not in their type): no Nagle delay upstream.
const NO_DELAY = { noDelay: true } as object;
/** How long a drain waits after closing the listeners before it closes idle connections (see stop()). */
const DRAIN_GRACE_MS = 500;

export class TproxyServer {
  readonly config: RunConfig;
  readonly metrics: ProxyMetrics;
  readonly #options: ServeOptions;
  readonly #log: Logger;
  readonly #logging: Logging;
  #filters: FilterHost | undefined;
  #leafs: LeafCertificates | undefined;
  #interceptor: Interceptor | undefined;
  #transparent: NetServer | undefined;
  #standard: http.Server | undefined;
  #inner: http.Server | undefined;
  /** Open HTTP/2 sessions: on stop they get GOAWAY (their open streams finish), then are closed. */
  readonly #sessions = new Set<Http2Session>();
  #agents: { http: http.Agent; https: https.Agent } | undefined;
  #ready = false;

  constructor(config: RunConfig, logging: Logging, options: ServeOptions) {
    this.config = config;
    this.#options = options;
    this.metrics = new ProxyMetrics();
    this.#logging = logging;
    this.#log = logging.log;
  }

  async start(): Promise<ProxyAddresses> {
    const config = this.config;
    const ca = caFromPem(this.#options.ca.certPem, this.#options.ca.keyPem);
    const leafs = new LeafCertificates(ca, { ticketKeys: this.#options.ticketKeys, leafKeyPem: this.#options.leafKeyPem, share: this.#options.certificateShare });
    this.#leafs = leafs;
    // One TLS context for every upstream connection: given only `ca`, Node would parse the whole
    // root store again for each new connection.
    const upstreamContext = createSecureContext({ ca: await upstreamTrust(config) });
    // Every upstream connection is judged: never the node's loopback, link-local or own addresses, the proxy's
    // listeners, or the blocked ranges, unless --allow-upstream-cidr says so.
    const policy = new AddressPolicy({
      blockedCidrs: config.blockCidrs,
      allowedCidrs: config.allowUpstreamCidrs,
      listenerPorts: [config.transparentPort, config.metricsPort, ...(config.standardPort === undefined ? [] : [config.standardPort])],
    });
    this.#agents = {
      http: new http.Agent({ keepAlive: true, maxFreeSockets: 256, ...NO_DELAY }),
      https: new https.Agent({ keepAlive: true, maxFreeSockets: 256, ...NO_DELAY, secureContext: upstreamContext, rejectUnauthorized: !config.insecureUpstream }),
    };
    if (config.insecureUpstream) this.#log.warn("--insecure-upstream: upstream certificates are NOT verified");
    if (config.filterAudit) this.#log.warn("--filter-audit: the filter's answers are only logged (would-deny); every request it answers goes on");

    const supervised = this.#options.supervised;
    // A filter's own lines (flow.log, console.*) are proxy log lines, naming the request and the filter version.
    const filters = new FilterHost({ timeoutMs: config.filterTimeoutMs, watch: supervised.watch, log: (l) => this.#log[l.level]({ source: "filter", id: l.id, filter: l.filter }, l.message) });
    this.#filters = filters;
    if (supervised.initialFilter) {
      try {
        this.commitFilter(this.prepareFilter(supervised.initialFilter));
      } catch (err) {
        this.#log.error({ err: (err as Error).message }, "the filter in force did not load in this thread; its requests are denied");
      }
    }

    const connections = new WeakMap<Duplex | Http2Session, ConnectionInfo>();
    const interceptor = new Interceptor(filters, this.#log, this.metrics, connections, {
      onFilterError: config.onFilterError,
      filterAudit: config.filterAudit,
      probeAddress: config.probeAddress,
      requests: this.#logging.requests,
      httpAgent: this.#agents.http,
      httpsAgent: this.#agents.https,
      rules: { allowedPorts: new Set(config.allowPorts) },
      policy,
      upstreamTls: { secureContext: upstreamContext, rejectUnauthorized: !config.insecureUpstream },
      maxBodyBytes: config.maxBodyBytes,
      // An upstream's body that a response hook waits for is bounded like a client's request body.
      bodyWaitMs: config.requestTimeoutMs,
      ...(this.#options.pods ? { pods: this.#options.pods } : {}),
      // HTTP/2 clients' streams go upstream over HTTP/2 where the server chooses it (gRPC servers speak nothing else).
      upstreamHttp2: config.http2,
    });
    this.#interceptor = interceptor;

    const inner = this.#pipelineServer(interceptor);
    this.#inner = inner;
    // HTTP/2 from clients (TLS, ALPN h2, with --http2): every stream runs the same pipeline.
    let inner2: ReturnType<typeof createHttp2Server> | undefined;
    if (config.http2) {
      inner2 = createHttp2Server(this.#log);
      interceptor.attach(inner2);
      inner2.on("session", (session: Http2Session) => {
        this.#sessions.add(session);
        session.once("close", () => this.#sessions.delete(session));
      });
    }
    const deps: HandOffDeps = { inner, ...(inner2 ? { inner2 } : {}), leafs, connections, log: this.#log, metrics: this.metrics, bounds: config, connectPorts: new Set(config.allowPorts), clientCounts: new ClientCounts(this.#options.clientCounts) };

    this.#transparent = createTransparentServer(deps);
    const shared = { reusePort: this.#options.reusePort ?? false };
    const transparent = await listen(this.#transparent, config.transparentPort, config.listenAddress, shared);
    let standard: number | undefined;
    if (config.standardPort !== undefined) {
      this.#standard = this.#pipelineServer(interceptor);
      attachConnect(this.#standard, deps);
      standard = await listen(this.#standard, config.standardPort, config.listenAddress, shared);
    }
    this.#ready = true;
    this.#report();
    // "tproxy listening" is the supervisor's line, once every thread listens.
    this.#log.info({ transparent, standard, hash: filters.current?.hash ?? null }, "serving thread listening");
    return { transparent, standard };
  }

  /** An HTTP server running the request pipeline (the in-process one, or the standard listener). */
  #pipelineServer(interceptor: Interceptor): http.Server {
    const server = http.createServer({ requestTimeout: 0, keepAliveTimeout: 30_000 });
    server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => this.#clientError(err, socket));
    interceptor.attach(server);
    return server;
  }

  /** Signs with another CA from now on (the supervisor saw the mounted CA change). Throws CertificateError. */
  reloadCa(certPem: string, keyPem: string): void {
    if (!this.#leafs) throw new Error("reloadCa before start");
    this.#leafs.setCa(caFromPem(certPem, keyPem));
    this.metrics.certCacheEntries.set(0);
  }

  /** Evaluates a filter version given by the supervisor, without putting it in force. Throws FilterLoadError. */
  prepareFilter(compiled: CompiledFilter): FilterVersion {
    if (!this.#filters) throw new Error("prepareFilter before start");
    return this.#filters.prepare(compiled);
  }

  /** Puts a prepared version in force for new requests. */
  commitFilter(version: FilterVersion): void {
    this.#filters?.commit(version);
    this.metrics.setFilter(version.hash);
    this.#report();
  }

  /** Tells the supervisor (if any) whether this proxy is ready and which filter it runs. */
  #report(): void {
    const filter = this.#filters?.current?.hash ?? null;
    this.#options.supervised.onState({ ready: this.#ready && !this.#interceptor?.draining && filter !== null, filter });
  }

  // A request the HTTP parser cannot read gets 400 on its own connection; the proxy carries on.
  #clientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    this.#log.info({ err: err.message, code: err.code }, "malformed request; connection closed");
    if (socket.writable && err.code !== "ECONNRESET") {
      socket.end("HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\ntproxy: malformed request\n");
    } else {
      socket.destroy();
    }
  }

  /** Stops accepting, lets requests in flight finish (up to the drain timeout), then closes everything. */
  async stop(): Promise<void> {
    const interceptor = this.#interceptor;
    if (interceptor) interceptor.draining = true;
    this.#report();
    this.#transparent?.close();
    this.#standard?.close();
    // A connection accepted just before the listener closed has its request still on the way, and an
    // HTTP server counts it idle until the request arrives: closing idle connections at once would reset
    // it. Those that are idle after this grace are idle for good (kept-alive ones get "connection: close").
    await new Promise((r) => setTimeout(r, Math.min(DRAIN_GRACE_MS, this.config.drainTimeoutMs)));
    this.#inner?.closeIdleConnections();
    this.#standard?.closeIdleConnections();
    for (const session of this.#sessions) session.close();
    const deadline = Date.now() + this.config.drainTimeoutMs;
    while (interceptor && interceptor.inFlight > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      this.#inner?.closeIdleConnections();
      this.#standard?.closeIdleConnections();
    }
    this.#log.info({ unfinished: interceptor?.inFlight ?? 0 }, "tproxy stopped");
    this.#inner?.closeAllConnections();
    this.#standard?.closeAllConnections();
    for (const session of this.#sessions) session.destroy();
    interceptor?.closeUpstreams();
    this.#agents?.http.destroy();
    this.#agents?.https.destroy();
    await this.#filters?.close();
    this.#logging.flush();
  }
}
