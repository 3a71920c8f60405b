// Works out the one target of a request: the scheme, host, port and path the filter judges, the proxy connects to
// and the log names. Nothing else is ever connected to for that request.
//
//  - Names: the Host header, the authority of an absolute-form URL and the TLS server name (SNI) are validated
//    and spelled one way (policy/host-name.ts); a name that one reader takes for an address is refused (400).
//    The request is judged on the name it claims; SNI and Host must agree (421). A request that names nothing
//    (IP-literal Host or none, no SNI) is judged on, and sent to, its original destination.
//  - Port: from the connection. Transparent: the original destination's port; a Host or URL naming another port
//    is refused with 421 Misdirected Request (the connection was made to one port: the proxy will not answer
//    for another). Standard (explicit proxy): the absolute-form URL's or the CONNECT authority's port, which must
//    be an allowed port (default 80 and 443, like Squid's Safe_ports/SSL_ports), else 403.
//  - Path: normalised once (policy/request-path.ts); the filter sees and the upstream gets exactly that path.
import { isIP } from "node:net";
import { canonicalHost, HostNameError, parseAuthority, type CanonicalHost } from "../policy/host-name.ts";
import { normalizeRequestTarget, RequestPathError } from "../policy/request-path.ts";

export interface ConnectionInfo {
  mode: "transparent" | "standard";
  tls: boolean;
  client: { address: string; port: number };
  /** Transparent: where the connection was headed before REDIRECT. Standard: the CONNECT authority. */
  destination: { address: string; port: number } | undefined;
  /** TLS server name the client sent (as received; validated by resolveTarget). */
  sni: string | undefined;
}

export interface Target {
  scheme: "http" | "https";
  /** Host as used in the URL and the filter (canonical lower-case name, or IP address). */
  host: string;
  port: number;
  /** Normalised origin-form path and query. */
  path: string;
  url: string;
  /** Whether `host` is a DNS name (connect by resolving it) rather than an address. */
  named: boolean;
  /** The Host header the upstream gets: host, with the port when it is not the scheme's default. */
  authority: string;
}

/** Why a request has no acceptable target; the reason goes into the request's log line. */
export type TargetReason = "bad-host" | "bad-sni" | "bad-path" | "bad-request" | "misdirected" | "port-not-allowed";

export class TargetError extends Error {
  readonly status: number;
  readonly reason: TargetReason;
  constructor(status: number, message: string, reason: TargetReason = "bad-request") {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

export interface TargetRules {
  /** Ports a standard-mode request (or a connection without an original destination) may reach. Default 80, 443. */
  allowedPorts: ReadonlySet<number>;
}

export const DEFAULT_TARGET_RULES: TargetRules = Object.freeze({ allowedPorts: new Set([80, 443]) });

function formatHost(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host;
}

function authorityOf(scheme: "http" | "https", host: string, port: number): string {
  return port === (scheme === "https" ? 443 : 80) ? formatHost(host) : `${formatHost(host)}:${port}`;
}

export function formatUrl(scheme: "http" | "https", host: string, port: number, path: string): string {
  return `${scheme}://${authorityOf(scheme, host, port)}${path}`;
}

const ABSOLUTE = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)(.*)$/i;

function hostError(err: unknown, reason: TargetReason): never {
  if (err instanceof HostNameError) throw new TargetError(400, err.message, reason);
  throw err;
}

/**
 * Computes the target of a request (origin-form or absolute-form request target, Host header) on a connection.
 * Throws TargetError with the status to answer and the reason to log.
 */
export function resolveTarget(rawUrl: string, hostHeader: string | undefined, conn: ConnectionInfo, rules: TargetRules = DEFAULT_TARGET_RULES): Target {
  const scheme = conn.tls ? "https" : "http";
  const defaultPort = conn.tls ? 443 : 80;

  let sni: string | undefined;
  if (conn.sni !== undefined) {
    try {
      sni = canonicalHost(conn.sni, "sni").host;
    } catch (err) {
      hostError(err, "bad-sni");
    }
  }

  let rawPath = rawUrl;
  let claimed: { host: CanonicalHost; port: number | undefined } | undefined;
  const abs = ABSOLUTE.exec(rawUrl);
  if (abs !== null) {
    // absolute-form: the URL's authority is the claim (RFC 9112 §3.2.2: Host is then ignored), read as written.
    const urlScheme = (abs[1] as string).toLowerCase();
    if (urlScheme !== scheme) {
      throw new TargetError(400, `scheme "${urlScheme}" in the request URL does not fit this ${conn.tls ? "TLS" : "plain-HTTP"} connection (use CONNECT for https)`, "bad-request");
    }
    try {
      claimed = parseAuthority(abs[2] as string, "absolute-url");
    } catch (err) {
      hostError(err, "bad-host");
    }
    rawPath = abs[3] === "" ? "/" : (abs[3] as string);
  } else if (hostHeader !== undefined && hostHeader !== "") {
    try {
      claimed = parseAuthority(hostHeader, "host-header");
    } catch (err) {
      hostError(err, "bad-host");
    }
  }
  if (rawPath === "*") throw new TargetError(400, "asterisk-form requests are not proxied", "bad-request");
  let path: string;
  try {
    path = normalizeRequestTarget(rawPath).path;
  } catch (err) {
    if (err instanceof RequestPathError) throw new TargetError(400, err.message, "bad-path");
    throw err;
  }

  // The port comes from the connection.
  const dst = conn.destination;
  let port: number;
  if (dst !== undefined) {
    port = dst.port;
    if (claimed?.port !== undefined && claimed.port !== port) {
      throw new TargetError(421, `the request names port ${claimed.port} but its connection goes to port ${port}; the proxy forwards only to the connection's port`, "misdirected");
    }
  } else {
    port = claimed?.port ?? defaultPort;
  }
  if ((conn.mode === "standard" || dst === undefined) && !rules.allowedPorts.has(port)) {
    throw new TargetError(403, `port ${port} is not an allowed port (allowed: ${[...rules.allowedPorts].join(", ")}; see --allow-port)`, "port-not-allowed");
  }

  // A standard-mode tunnel's CONNECT authority may itself be a name.
  let dstHost: CanonicalHost | undefined;
  if (dst !== undefined) {
    try {
      dstHost = canonicalHost(dst.address, conn.mode === "standard" ? "connect" : "host-header");
    } catch (err) {
      hostError(err, "bad-host");
    }
  }

  let host: string;
  let named: boolean;
  if (claimed?.host.kind === "name") {
    host = claimed.host.host;
    named = true;
    if (sni !== undefined && sni !== host) throw new TargetError(421, `Host "${host}" does not match the TLS server name "${sni}"`, "misdirected");
    if (dstHost?.kind === "name" && dstHost.host !== host) throw new TargetError(421, `Host "${host}" does not match the CONNECT authority "${dstHost.host}"`, "misdirected");
  } else if (sni !== undefined) {
    // No name in Host: the TLS server name names the target.
    host = sni;
    named = true;
    if (dstHost?.kind === "name" && dstHost.host !== host) throw new TargetError(421, `TLS server name "${sni}" does not match the CONNECT authority "${dstHost.host}"`, "misdirected");
  } else if (dstHost !== undefined) {
    // Names nothing: judged on, and sent to, the original destination (or the CONNECT authority).
    host = dstHost.host;
    named = dstHost.kind === "name";
  } else if (claimed !== undefined) {
    host = claimed.host.host;
    named = false;
  } else {
    throw new TargetError(400, "request names no host (no Host header, no TLS server name, not redirected)", "bad-host");
  }
  return { scheme, host, port, path, url: formatUrl(scheme, host, port, path), named, authority: authorityOf(scheme, host, port) };
}
