// The filter contract: what a filter script imports (`import type { Filter } from "@tproxy/tproxy/filter"`).
// Kept apart from the code that loads, reloads and runs filters.

/** Header map with lower-case names. A repeated header is an array. Writable where the hook allows. */
export type Headers = Record<string, string | string[] | undefined>;

/**
 * A pod of this node, as podwatch saw it last (through the Kubernetes API). Frozen: a filter reads it,
 * it cannot change it.
 */
export interface PodIdentity {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly labels: Readonly<Record<string, string>>;
  /** The pod's annotations, but kubectl.kubernetes.io/last-applied-configuration (a copy of the whole object). */
  readonly annotations: Readonly<Record<string, string>>;
  /** `spec.serviceAccountName` ("default" when the pod names none). */
  readonly serviceAccount: string;
  /** The node the pod runs on (this proxy's node). */
  readonly node: string;
}

/** Who made the request: the pod's address as the node sees it. */
export interface FlowClient {
  readonly address: string;
  readonly port: number;
  /**
   * The pod of this node that has `address`, from podwatch (`tproxy run --pod-identity-file`, which the
   * chart sets). Undefined when no pod of this node has the address (the node itself, host-network pods,
   * pods of other nodes) and whenever the map is missing or older than 30 s: a filter that allows by pod
   * should deny when it is undefined. As trustworthy as the connection's source address (a pod sending
   * with another's address never completes the TCP handshake: the answer goes to the other pod).
   */
  readonly pod?: PodIdentity;
}

/**
 * Reading a message's body, in the hook that sees the message (the request's in `request`, the response's in
 * `response`). A hook that never reads leaves the body streamed through untouched. The bytes are the body as
 * sent: still compressed when the message has a `content-encoding`. Waiting for them does not count against
 * the hook's time budget (--filter-timeout); the wait is bounded by --request-timeout for a request body.
 */
export interface BodyReader {
  /**
   * The whole body, buffered (up to `--max-body` bytes, default 1 MiB); it is then sent on as read. A body
   * larger than that is never judged by a prefix: the read rejects and the message is refused whatever the
   * hook then does (413 to the client for a request, 502 for a response), unless the hook itself answers.
   */
  body(): Promise<Uint8Array>;
  /** body(), decoded as UTF-8 (e.g. `JSON.parse(await flow.request.text())`). */
  text(): Promise<string>;
  /**
   * The first `bytes` bytes (fewer only when the body is shorter), e.g. to tell a file type by its magic
   * number; the rest is streamed on unread. `bytes` may be at most `--max-body`.
   */
  peek(bytes: number): Promise<Uint8Array>;
}

/** The request as the client sent it. Only `headers` may be changed (in the `request` hook). */
export interface FlowRequest extends BodyReader {
  /** "GET", "POST", ... */
  readonly method: string;
  /** "http" or "https" (the connection to the proxy was TLS). */
  readonly scheme: "http" | "https";
  /**
   * The name the request claims: the Host header (which must match the TLS SNI, when both are present).
   * When the request names nothing (IP literal, no SNI), the original destination address.
   */
  readonly host: string;
  readonly port: number;
  /** Path and query, e.g. "/bucket/object?alt=media". */
  readonly path: string;
  /** scheme://host[:port]path, the port omitted when it is the scheme's default. */
  readonly url: string;
  /** Request headers; changes made in the `request` hook are sent upstream. */
  headers: Headers;
}

/** The upstream's answer, seen by the `response` hook. Only `headers` may be changed. */
export interface FlowResponse extends BodyReader {
  readonly status: number;
  /** Response headers; changes made in the `response` hook reach the client. */
  headers: Headers;
}

/** One request/response exchange passing through the proxy. */
export interface Flow {
  /** Unique per request; also in the proxy's log line. */
  readonly id: string;
  readonly client: FlowClient;
  /** Where the client's connection was headed before the node redirected it (transparent mode). */
  readonly destination: { readonly address: string; readonly port: number } | undefined;
  /** The TLS server name the client sent, if any. */
  readonly sni: string | undefined;
  readonly request: FlowRequest;
  /** Present in the `response` hook. */
  readonly response: FlowResponse | undefined;
  /**
   * Answers the client without going upstream (in `request`), or replaces the upstream's answer (in
   * `response`). A request answered by the filter is logged as denied. Calling it again replaces the answer.
   */
  respond(status: number, body?: string | Uint8Array, headers?: Record<string, string>): void;
  /**
   * Audit mode for this request: an answer given with `respond`, in this hook or in a later hook of the same
   * request, before or after this call, is not sent; the request goes on as if it had not been given (upstream, or
   * the upstream's answer to the client, with the hook's header changes), and the proxy's log line says
   * `would-deny (audit: <reason>; would answer <status>)`, counted as `tproxy_requests_total{decision="would-deny"}`.
   * Without a `respond` it changes nothing: the request is allowed as usual. `tproxy run --filter-audit` does the
   * same for every request (reason "filter-audit").
   */
  audit(reason?: string): void;
  /** A line in the proxy's log (its format, text or JSON), with this request's id and the filter's version hash. */
  log(...args: unknown[]): void;
}

/** A hook may finish synchronously or return a promise. */
export type Hook = (flow: Flow) => void | Promise<void>;

/** The flow a `response` hook gets: the upstream's answer is there. */
export interface ResponseFlow extends Flow {
  readonly response: FlowResponse;
}

/** A `response` hook: `flow.response` is always present in it. */
export type ResponseHook = (flow: ResponseFlow) => void | Promise<void>;

/**
 * A filter script's default export: at least one of the hooks (a module with neither is refused when it
 * loads, like one that does not compile). With no `request` hook every request passes to `response`.
 *
 * ```ts
 * import type { Filter } from "@tproxy/tproxy/filter";
 * export default {
 *   request(flow) {
 *     if (!flow.request.url.startsWith("https://storage.googleapis.com/our-bucket/")) {
 *       flow.respond(418, "Access Denied by Administrator");
 *     }
 *   },
 * } satisfies Filter;
 * ```
 */
export interface Filter {
  /** Runs before the request goes upstream: call `flow.respond` to answer (deny), or edit headers. */
  request?: Hook;
  /** Runs when the upstream's status and headers arrive: edit headers, or `flow.respond` to replace the answer. */
  response?: ResponseHook;
}
