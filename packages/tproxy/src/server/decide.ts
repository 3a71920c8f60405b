// The one decision every request goes through, whatever its form (origin-form, absolute-form, WebSocket upgrade)
// and whatever the connection (plain or TLS, transparent or standard): either "answer this" or "forward to
// exactly this target". The relays (HTTP forward, upgrade relay) connect to that target and nothing else.
//
// Steps, the first that answers ends it:
//  1. the request's one target (target.ts): names validated (SNI too), port from the connection, path normalised;
//  2. the readiness probe (answered by the proxy itself);
//  3. the filter's request hook (so a filter's own answer, e.g. the tutorial's 418, is what a pod sees for what
//     the filter denies);
//  4. an IP-literal target the filter let through is judged by the address policy (a named one is judged after
//     DNS, by the lookup that the relay connects with: policy/guarded-lookup.ts); whatever the filter said.
import type { IncomingHttpHeaders } from "node:http";
import { PROBE_HEADER, PROBE_VALUE } from "@tproxy/iptables";
import type { Answer } from "../filter/protocol.ts";
import type { Headers } from "../filter/types.ts";
import type { AddressJudge } from "../policy/guarded-lookup.ts";
import { resolveTarget, TargetError, type ConnectionInfo, type Target, type TargetRules } from "./target.ts";

/** Answer to sidecar-init's readiness probe (see DecideDeps.probeAddress). */
export { PROBE_HEADER };
export const PROBE_BODY = "tproxy: intercepting\n";

export interface RequestHead {
  method: string;
  /** The request target exactly as the client sent it. */
  url: string;
  headers: IncomingHttpHeaders;
  /** Arrived as an HTTP upgrade (the server's "upgrade" event). */
  upgrade: boolean;
  /**
   * An HTTP/2 stream: its `:authority` and `:scheme` (`url` is its `:path`; `headers` hold no pseudo-headers).
   * The authority is the stream's claim, as Host is for HTTP/1.1, and must agree with the SNI the same way.
   */
  h2?: { authority: string | undefined; scheme: string | undefined };
}

/** What the filter made of a request: pass (with the headers to send) or answer. */
export type FilterOutcome = { kind: "pass"; headers: Headers } | { kind: "answer"; answer: Answer; reason: string };

export interface DecideDeps {
  rules: TargetRules;
  policy: AddressJudge;
  /** Plain-HTTP requests redirected from this address (port 80) are answered by the proxy: the readiness probe. */
  probeAddress: string;
  /** Runs the filter on a request whose target is known; `headers` already carry the target's Host. */
  filter(target: Target, headers: Headers): Promise<FilterOutcome>;
}

export type Decision =
  | { kind: "answer"; answer: Answer; reason: string; decision: "allowed" | "denied"; target: Target | undefined }
  | { kind: "forward"; target: Target; headers: Headers };

function text(status: number, body: string, extra: Record<string, string> = {}): Answer {
  return { status, body, headers: { "content-type": "text/plain; charset=utf-8", ...extra } };
}

export async function decide(head: RequestHead, conn: ConnectionInfo, deps: DecideDeps): Promise<Decision> {
  if (head.upgrade && String(head.headers.upgrade).toLowerCase() !== "websocket") {
    return { kind: "answer", answer: text(400, "tproxy: only WebSocket upgrades are proxied\n"), reason: "bad-upgrade", decision: "denied", target: undefined };
  }
  let hostClaim = head.headers.host;
  if (head.h2) {
    const refused = checkHttp2(head, conn);
    if (refused) return { kind: "answer", answer: text(refused.status, `tproxy: ${refused.message}\n`), reason: refused.reason, decision: "denied", target: undefined };
    hostClaim = head.h2.authority ?? hostClaim;
  }
  let target: Target;
  try {
    target = resolveTarget(head.url, hostClaim, conn, deps.rules);
  } catch (err) {
    if (!(err instanceof TargetError)) throw err;
    return { kind: "answer", answer: text(err.status, `tproxy: ${err.message}\n`), reason: err.reason, decision: "denied", target: undefined };
  }

  if (conn.mode === "transparent" && !conn.tls && !head.upgrade && conn.destination?.address === deps.probeAddress && conn.destination.port === 80) {
    return { kind: "answer", answer: text(200, PROBE_BODY, { [PROBE_HEADER]: PROBE_VALUE }), reason: "probe", decision: "allowed", target };
  }

  // The upstream gets the Host the filter judged (an absolute-form request's Host header is ignored, RFC 9112).
  const headers: Headers = head.headers.host === target.authority ? head.headers : { ...head.headers, host: target.authority };
  const outcome = await deps.filter(target, headers);
  if (outcome.kind === "answer") return { kind: "answer", answer: outcome.answer, reason: outcome.reason, decision: "denied", target };
  if (!target.named) {
    const v = deps.policy.classify(target.host, target.port);
    if (!v.allowed) return { kind: "answer", answer: text(403, `tproxy: ${v.message}\n`), reason: `address: ${v.reason}`, decision: "denied", target };
  }
  const out = outcome.headers.host === target.authority ? outcome.headers : { ...outcome.headers, host: target.authority };
  return { kind: "forward", target, headers: out };
}

/**
 * What HTTP/2 allows that the pipeline does not, or that would let a stream name a second target: CONNECT
 * (WebSockets over HTTP/2 are extended CONNECT, RFC 8441: not proxied), a `:path` that is not origin-form (an
 * absolute URL would name its own authority), a `:scheme` other than the connection's, a Host that names
 * another authority than `:authority` (RFC 9113 8.3.1).
 */
function checkHttp2(head: RequestHead, conn: ConnectionInfo): { status: number; reason: string; message: string } | undefined {
  const h2 = head.h2!;
  if (head.method === "CONNECT") return { status: 501, reason: "bad-request", message: "CONNECT over HTTP/2 (and WebSockets over HTTP/2) is not proxied; use HTTP/1.1" };
  if (!head.url.startsWith("/")) return { status: 400, reason: "bad-path", message: `HTTP/2 :path ${JSON.stringify(head.url)} is not an origin-form path` };
  const scheme = conn.tls ? "https" : "http";
  if (h2.scheme !== scheme) return { status: 400, reason: "bad-request", message: `HTTP/2 :scheme ${JSON.stringify(h2.scheme ?? "")} does not fit this ${scheme} connection` };
  const host = head.headers.host;
  if (h2.authority !== undefined && host !== undefined && host !== h2.authority) {
    return { status: 400, reason: "bad-host", message: `Host ${JSON.stringify(host)} and :authority ${JSON.stringify(h2.authority)} name different authorities` };
  }
  return undefined;
}
