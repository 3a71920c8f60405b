// Normalises an origin-form request target ("/path?query") once, before the filter sees it; the proxy forwards
// exactly the string the filter judged, so a filter allowing "/public/" cannot be passed by "/public/../secret".
//
// What is done, in order (the path is the part before the first "?"; the query is everything from it):
//  1. Refused (RequestPathError, 400): a target not starting with "/"; "#" anywhere (a fragment is never sent);
//     control characters (U+0000–U+001F, U+007F) or a space anywhere; non-ASCII characters in the path (clients
//     percent-encode them); a "%" in the path not followed by two hex digits; "%00" in the path.
//  2. Percent-encoded unreserved characters (A–Z a–z 0–9 - . _ ~) are decoded, other escapes are kept with their
//     hex digits upper-cased (RFC 3986 §6.2.2.1–2): "%2e%2E" → "..", "%7e" → "~", "%2f" → "%2F".
//  3. Runs of "/" are merged into one ("//" → "/"). This comes before step 4 because a server that merges
//     slashes reads "/a//../b" as "/b", while RFC 3986 remove_dot_segments alone would give "/a/b".
//  4. Dot segments are removed (RFC 3986 §5.2.4): "/a/./b/../c" → "/a/c"; ".." never climbs above "/".
//  5. Refused (400) if another reading of the result still has a "." or ".." segment — reading "%2F", "%5C" and
//     "\" as "/", "%25" as "%" (a second decoding, after which "%2E" is "."), and dropping ";params" from a segment
//     (Tomcat/Jetty read "/..;/" as "/../"). "%2F", "%5C" and "\" themselves are kept, not decoded: a path
//     such as "/a%2Fb" reaches the upstream as it was sent.
//  6. The query is kept byte for byte.
// The result is `{ path, changed }`: `path` is the whole normalised target (path and query), `changed` whether it
// differs from the input.
import { TproxyError } from "../errors.ts";

export type PathErrorReason = "not-origin-form" | "fragment" | "forbidden-character" | "bad-escape" | "encoded-nul" | "ambiguous-dot-segment";

/** The request target cannot be forwarded as a single unambiguous path. Answer 400. */
export class RequestPathError extends TproxyError {
  readonly status = 400;
  readonly reason: PathErrorReason;
  constructor(reason: PathErrorReason, message: string) {
    super("ERR_REQUEST_PATH", message);
    this.reason = reason;
  }
}

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

function codePoint(ch: string): string {
  return `U+${(ch.codePointAt(0) as number).toString(16).toUpperCase().padStart(4, "0")}`;
}

export function removeDotSegments(path: string): string {
  const segments = path.split("/").slice(1);
  const out: string[] = [];
  segments.forEach((seg, i) => {
    const last = i === segments.length - 1;
    if (seg === "." || seg === "..") {
      if (seg === "..") out.pop();
      if (last) out.push("");
    } else {
      out.push(seg);
    }
  });
  return `/${out.join("/")}`;
}

/** Normalises an origin-form request target (see the top of this file). Throws RequestPathError (400). */
export function normalizeRequestTarget(target: string): { path: string; changed: boolean } {
  const fail = (reason: PathErrorReason, why: string): never => {
    throw new RequestPathError(reason, `request target ${JSON.stringify(target.length > 200 ? `${target.slice(0, 200)}…` : target)} ${why}`);
  };
  if (!target.startsWith("/")) return fail("not-origin-form", 'does not start with "/"');
  if (target.includes("#")) return fail("fragment", 'contains "#"');
  const ctl = /[\u0000-\u0020\u007f]/.exec(target);
  if (ctl !== null) return fail("forbidden-character", `contains ${ctl[0] === " " ? "a space" : `control character ${codePoint(ctl[0])}`}`);

  const q = target.indexOf("?");
  const rawPath = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? "" : target.slice(q);

  const nonAscii = /[^\u0000-\u007e]/u.exec(rawPath);
  if (nonAscii !== null) return fail("forbidden-character", `contains non-ASCII character ${codePoint(nonAscii[0])} in its path (percent-encode it)`);
  if (/%(?![0-9A-Fa-f]{2})/.test(rawPath)) return fail("bad-escape", 'has a "%" not followed by two hex digits');

  const decoded = rawPath.replace(/%([0-9A-Fa-f]{2})/g, (_, hex: string) => {
    const ch = String.fromCharCode(parseInt(hex, 16));
    if (ch === "\u0000") return fail("encoded-nul", 'contains "%00"');
    return UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
  });
  const merged = decoded.replace(/\/{2,}/g, "/");
  const path = removeDotSegments(merged);

  // Another server's reading of the same bytes: separators it may split on, one more decoding, ";params" dropped.
  const other = path.replace(/%25/gi, "%").replace(/%2E/gi, ".").replace(/%2F|%5C|\\/gi, "/");
  for (const seg of other.split("/")) {
    const bare = seg.split(";")[0];
    if (bare === "." || bare === "..") {
      return fail("ambiguous-dot-segment", `has a "${bare}" segment when "%2F", "%5C" or "\\" is read as "/", "%25" is decoded or ";" parameters are dropped`);
    }
  }
  const result = path + query;
  return { path: result, changed: result !== target };
}
