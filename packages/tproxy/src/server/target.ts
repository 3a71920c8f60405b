// Decides what a request claims to reach and where the proxy will connect for it.
// Decisions are made on the name the request claims (Host, which must agree with SNI); the proxy then
// connects to what that name resolves to, so a client cannot reach address A by claiming name B.
// A request that names nothing (IP literal or no Host, no SNI) is judged on, and forwarded to, its
// original destination.
import { isIP } from "node:net";

export interface ConnectionInfo {
  mode: "transparent" | "standard";
  tls: boolean;
  client: { address: string; port: number };
  /** Transparent: where the connection was headed before REDIRECT. Standard: the CONNECT authority. */
  destination: { address: string; port: number } | undefined;
  /** TLS server name the client sent. */
  sni: string | undefined;
}

export interface Target {
  scheme: "http" | "https";
  /** Host as used in the URL and the filter (lower-case name, or IP address). */
  host: string;
  port: number;
  path: string;
  url: string;
  /** Whether `host` is a DNS name (connect by resolving it) rather than an address. */
  named: boolean;
}

export class TargetError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

const NAME = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*\.?$/;

/** Splits "host", "host:port", "[v6]" or "[v6]:port". */
export function splitHostPort(value: string): { host: string; port: number | undefined } {
  const v = value.trim().toLowerCase();
  if (v.startsWith("[")) {
    const end = v.indexOf("]");
    if (end < 0) throw new TargetError(400, `malformed Host "${value}"`);
    const host = v.slice(1, end);
    const rest = v.slice(end + 1);
    if (rest === "") return { host, port: undefined };
    if (!rest.startsWith(":")) throw new TargetError(400, `malformed Host "${value}"`);
    return { host, port: parsePort(rest.slice(1), value) };
  }
  const colon = v.indexOf(":");
  if (colon >= 0 && v.indexOf(":", colon + 1) >= 0) return { host: v, port: undefined }; // bare IPv6
  if (colon < 0) return { host: v, port: undefined };
  return { host: v.slice(0, colon), port: parsePort(v.slice(colon + 1), value) };
}

function parsePort(text: string, whole: string): number {
  const port = Number(text);
  if (!/^\d{1,5}$/.test(text) || port < 1 || port > 65535) throw new TargetError(400, `malformed port in "${whole}"`);
  return port;
}

function formatHost(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host;
}

export function formatUrl(scheme: "http" | "https", host: string, port: number, path: string): string {
  const defaultPort = scheme === "https" ? 443 : 80;
  return `${scheme}://${formatHost(host)}${port === defaultPort ? "" : `:${port}`}${path}`;
}

/** Computes the target of a request (origin-form or absolute-form URL, Host header) on a connection. */
export function resolveTarget(rawUrl: string, hostHeader: string | undefined, conn: ConnectionInfo): Target {
  const scheme = conn.tls ? "https" : "http";
  let path = rawUrl;
  let claimed: { host: string; port: number | undefined } | undefined;

  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(rawUrl)) {
    // absolute-form: the explicit-proxy way of naming the target
    let u: URL;
    try {
      u = new URL(rawUrl);
    } catch {
      throw new TargetError(400, `malformed request URL "${rawUrl}"`);
    }
    if (u.protocol !== "http:") throw new TargetError(400, `unsupported scheme in "${rawUrl}" (use CONNECT for https)`);
    claimed = { host: u.hostname.replace(/^\[|\]$/g, "").toLowerCase(), port: u.port ? Number(u.port) : 80 };
    path = `${u.pathname}${u.search}`;
  } else if (hostHeader !== undefined && hostHeader !== "") {
    claimed = splitHostPort(hostHeader);
  }
  if (!path.startsWith("/")) {
    if (path === "*") throw new TargetError(400, "asterisk-form requests are not proxied");
    throw new TargetError(400, `malformed request target "${rawUrl}"`);
  }

  const dst = conn.destination;
  const defaultPort = scheme === "https" ? 443 : 80;
  if (claimed && isIP(claimed.host) === 0) {
    if (!NAME.test(claimed.host)) throw new TargetError(400, `malformed host name "${claimed.host}"`);
    const host = claimed.host.replace(/\.$/, "");
    if (conn.sni !== undefined && conn.sni.replace(/\.$/, "") !== host) {
      throw new TargetError(421, `Host "${host}" does not match the TLS server name "${conn.sni}"`);
    }
    const port = claimed.port ?? dst?.port ?? defaultPort;
    return { scheme, host, port, path, url: formatUrl(scheme, host, port, path), named: true };
  }
  // No name in Host: a TLS server name still names the target.
  if (conn.sni !== undefined && isIP(conn.sni) === 0) {
    const host = conn.sni.replace(/\.$/, "");
    const port = dst?.port ?? defaultPort;
    return { scheme, host, port, path, url: formatUrl(scheme, host, port, path), named: true };
  }
  // Names nothing: judged on, and sent to, the original destination.
  const address = dst?.address ?? claimed?.host;
  if (address === undefined) throw new TargetError(400, "request names no host (no Host header, no TLS server name, not redirected)");
  const port = dst?.port ?? claimed?.port ?? defaultPort;
  return { scheme, host: address, port, path, url: formatUrl(scheme, address, port, path), named: false };
}
