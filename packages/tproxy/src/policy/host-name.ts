// Validates a host as a client claims it (Host header, absolute-form URL, CONNECT authority, TLS server name) and
// returns the one spelling the filter sees and the proxy resolves. A name that one reader takes for a DNS name and
// another for an IPv4 address would let a request be judged as one thing and sent to another, so only these pass:
//
//  - DNS names: lower-cased, one trailing dot removed ("Example.COM." → "example.com"); labels of [a-z0-9_-], not
//    starting with "-", 1–63 characters; at most 253 characters. Non-ASCII must arrive as punycode (xn--).
//  - IPv4 literals in canonical dotted-decimal only (four decimal numbers 0–255, no leading zeros). Refused:
//    "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.0.0.01", and any name whose last label is all digits
//    or 0x-hex ("example.123", "a.0x1f"): the WHATWG URL parser and inet_aton() read such hosts as IPv4 numbers.
//    "1.2.3.4." (an address with a trailing dot) is refused too: it is neither a name nor a canonical address.
//  - IPv6 literals (bare or in brackets; in an authority only in brackets), returned in RFC 5952 form. Zone
//    indexes are refused ("%" is refused everywhere).
//  - TLS server names (source "sni") must be DNS names: RFC 6066 §3 forbids IP literals in server_name.
// Control characters, space, "/", "%", "@", "\" and non-ASCII are refused from every source.
//
// Ports (parseCanonicalPort): decimal digits only, 1–65535, no sign, no leading zero ("080" is refused: one port,
// one spelling). An authority with an empty port ("example.com:") is refused.
import { isIP } from "node:net";
import { TproxyError } from "../errors.ts";

export type HostSource = "host-header" | "absolute-url" | "connect" | "sni";

export type HostErrorReason =
  | "empty"
  | "forbidden-character"
  | "numeric-host"
  | "ip-literal-sni"
  | "trailing-dot-address"
  | "malformed-name"
  | "malformed-address"
  | "malformed-port"
  | "malformed-authority";

/** A claimed host or port is not acceptable. Answer 400 (a TLS server name: refuse the handshake). */
export class HostNameError extends TproxyError {
  readonly status = 400;
  readonly reason: HostErrorReason;
  constructor(reason: HostErrorReason, message: string) {
    super("ERR_HOST_NAME", message);
    this.reason = reason;
  }
}

export type CanonicalHost = { kind: "name"; host: string } | { kind: "ip"; host: string; family: 4 | 6 };

const SOURCE_NAME: Record<HostSource, string> = {
  "host-header": "Host header",
  "absolute-url": "request URL host",
  connect: "CONNECT authority",
  sni: "TLS server name",
};

const LABEL = /^[a-z0-9_][a-z0-9_-]{0,62}$/;
const FORBIDDEN: Record<string, string> = { " ": "a space", "/": '"/"', "%": '"%"', "@": '"@"', "\\": '"\\"' };

function describeForbidden(raw: string): string | undefined {
  for (const ch of raw) {
    const c = ch.codePointAt(0) as number;
    if (c < 0x20 || c === 0x7f) return `control character U+${c.toString(16).toUpperCase().padStart(4, "0")}`;
    if (c > 0x7e) return `non-ASCII character U+${c.toString(16).toUpperCase().padStart(4, "0")} (send names as punycode)`;
    const named = FORBIDDEN[ch];
    if (named !== undefined) return named;
  }
  return undefined;
}

function show(raw: string): string {
  return JSON.stringify(raw);
}

function canonicalIPv6(text: string): string {
  return new URL(`http://[${text}]/`).hostname.slice(1, -1);
}

/** Returns the canonical host, or throws HostNameError (status 400). `raw` is the host alone, without a port. */
export function canonicalHost(raw: string, source: HostSource): CanonicalHost {
  const where = SOURCE_NAME[source];
  const fail = (reason: HostErrorReason, why: string): never => {
    throw new HostNameError(reason, `${where} ${show(raw)} ${why}`);
  };
  if (raw === "") return fail("empty", "is empty");
  const bad = describeForbidden(raw);
  if (bad !== undefined) return fail("forbidden-character", `contains ${bad}`);
  const s = raw.toLowerCase();

  const bracketed = s.startsWith("[") && s.endsWith("]");
  const inner = bracketed ? s.slice(1, -1) : s;
  if (isIP(inner) === 6) {
    if (source === "sni") return fail("ip-literal-sni", "is an IP address; a TLS server name must be a DNS name (RFC 6066)");
    return { kind: "ip", host: canonicalIPv6(inner), family: 6 };
  }
  if (bracketed || s.includes("[") || s.includes("]") || s.includes(":")) return fail("malformed-address", "is not a valid IPv6 address or host name");

  const trailingDot = s.endsWith(".");
  const body = trailingDot ? s.slice(0, -1) : s;
  if (isIP(body) === 4) {
    if (trailingDot) return fail("trailing-dot-address", `is an IPv4 address with a trailing dot; write ${body}`);
    if (source === "sni") return fail("ip-literal-sni", "is an IP address; a TLS server name must be a DNS name (RFC 6066)");
    return { kind: "ip", host: body, family: 4 };
  }
  const labels = body.split(".");
  const last = labels[labels.length - 1] as string;
  if (/^[0-9]+$/.test(last) || /^0x[0-9a-f]*$/.test(last)) {
    return fail("numeric-host", "would be read as an IPv4 address by some resolvers; write an IPv4 address as four decimal numbers (a.b.c.d) or use a name whose last label is not a number");
  }
  if (body.length > 253) return fail("malformed-name", "is longer than 253 characters");
  for (const label of labels) {
    if (!LABEL.test(label)) {
      return fail("malformed-name", label === "" ? "has an empty label" : `has an invalid label ${show(label)} (letters, digits, "_" and "-", at most 63, not starting with "-")`);
    }
  }
  return { kind: "name", host: body };
}

/** A port in one spelling: decimal digits, 1–65535, no sign, no leading zero. Throws HostNameError. */
export function parseCanonicalPort(text: string, what = "port"): number {
  if (!/^[1-9][0-9]{0,4}$/.test(text) || Number(text) > 65535) {
    throw new HostNameError("malformed-port", `${what} ${show(text)} is not a port (1-65535, decimal digits, no leading zero)`);
  }
  return Number(text);
}

/**
 * Splits and validates "host", "host:port", "[v6]" or "[v6]:port" (a Host header, CONNECT authority, or the
 * authority of an absolute-form URL as the client wrote it — not URL.hostname, which has already turned "127.1"
 * into "127.0.0.1" and decoded "%2e"). An IPv6 literal must be bracketed. CONNECT requires a port (RFC 9110 §9.3.6).
 */
export function parseAuthority(value: string, source: Exclude<HostSource, "sni">): { host: CanonicalHost; port: number | undefined } {
  const where = SOURCE_NAME[source];
  const fail = (reason: HostErrorReason, why: string): never => {
    throw new HostNameError(reason, `${where} ${show(value)} ${why}`);
  };
  if (value.includes("@")) return fail("forbidden-character", 'contains "@" (user information is not accepted)');
  let hostPart: string;
  let portPart: string | undefined;
  if (value.startsWith("[")) {
    const end = value.indexOf("]");
    if (end < 0) return fail("malformed-authority", 'has "[" without "]"');
    hostPart = value.slice(0, end + 1);
    const rest = value.slice(end + 1);
    if (rest !== "" && !rest.startsWith(":")) return fail("malformed-authority", 'has something other than ":port" after "]"');
    portPart = rest === "" ? undefined : rest.slice(1);
  } else {
    const colon = value.indexOf(":");
    if (colon >= 0 && value.indexOf(":", colon + 1) >= 0) return fail("malformed-authority", "has more than one \":\" (put an IPv6 address in brackets)");
    hostPart = colon < 0 ? value : value.slice(0, colon);
    portPart = colon < 0 ? undefined : value.slice(colon + 1);
  }
  if (source === "connect" && portPart === undefined) return fail("malformed-authority", "has no port (CONNECT needs host:port)");
  const port = portPart === undefined ? undefined : parseCanonicalPort(portPart, `${where} ${show(value)} port`);
  return { host: canonicalHost(hostPart, source), port };
}
