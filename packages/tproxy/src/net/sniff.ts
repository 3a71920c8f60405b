// Tells TLS from plain HTTP by a connection's first bytes, and reads SNI from a TLS ClientHello.
// A server name that is not a valid DNS name (policy/host-name.ts, source "sni": control characters, "/", an IP
// literal, ...) makes the connection "unknown": it is closed before any certificate is minted for that name or the
// name reaches a decision or a log line (the reason quotes it JSON-escaped). A TLS client cannot read an HTTP 400
// before its handshake, and finishing the handshake would need a certificate for the refused name.
import { canonicalHost, HostNameError } from "../policy/host-name.ts";

export type Sniffed =
  | { kind: "tls"; sni: string | undefined }
  | { kind: "http" }
  /** Cleartext HTTP/2 with prior knowledge (the client's connection preface). */
  | { kind: "h2c" }
  | { kind: "unknown"; reason: string };

/** Result of looking at the bytes received so far: decided, or more bytes are needed. */
export type SniffResult = Sniffed | { kind: "need-more" };

const MAX_CLIENT_HELLO = 16 * 1024 + 5;
const HTTP_METHOD = /^[A-Z]{3,10} /;
/** RFC 9113 3.4: what a client that knows the server speaks HTTP/2 sends first (before any frame). */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** Classifies the first bytes of a connection. Call again with more bytes while it answers "need-more". */
export function sniff(data: Buffer): SniffResult {
  if (data.length === 0) return { kind: "need-more" };
  if (data[0] === 0x16) return sniffTls(data);
  // An HTTP/1.x request line starts with a method token and a space.
  const head = data.subarray(0, 11).toString("latin1");
  if (head.startsWith("PRI ")) {
    if (data.length < H2_PREFACE.length) return H2_PREFACE.subarray(0, data.length).equals(data) ? { kind: "need-more" } : { kind: "http" };
    if (data.subarray(0, H2_PREFACE.length).equals(H2_PREFACE)) return { kind: "h2c" };
  }
  if (HTTP_METHOD.test(head)) return { kind: "http" };
  if (data.length < 11 && /^[A-Z]*$/.test(head)) return { kind: "need-more" };
  return { kind: "unknown", reason: `first bytes are neither TLS nor HTTP (0x${data.subarray(0, 4).toString("hex")})` };
}

function sniffTls(data: Buffer): SniffResult {
  if (data.length < 5) return { kind: "need-more" };
  if (data[1] !== 0x03) return { kind: "unknown", reason: `TLS record with unknown version 0x${data.subarray(1, 3).toString("hex")}` };
  const recordLength = data.readUInt16BE(3);
  // A ClientHello can span several records; the first one nearly always holds the whole SNI extension.
  if (data.length < Math.min(5 + recordLength, MAX_CLIENT_HELLO)) return { kind: "need-more" };
  let sni: string | undefined;
  try {
    sni = serverName(data.subarray(5, 5 + recordLength));
  } catch {
    // A ClientHello we cannot walk: let the TLS stack decide (it will fail the handshake if it is garbage).
    return { kind: "tls", sni: undefined };
  }
  if (sni === undefined) return { kind: "tls", sni };
  try {
    return { kind: "tls", sni: canonicalHost(sni, "sni").host };
  } catch (err) {
    if (err instanceof HostNameError) return { kind: "unknown", reason: `refused ${err.message}` };
    throw err;
  }
}

/** Walks a handshake message and returns the server_name extension's host name, if any. */
function serverName(hs: Buffer): string | undefined {
  if (hs[0] !== 0x01) throw new Error("not a ClientHello");
  let p = 4; // type(1) + length(3)
  p += 2 + 32; // client_version + random
  p += 1 + hs[p]!; // session_id
  p += 2 + hs.readUInt16BE(p); // cipher_suites
  p += 1 + hs[p]!; // compression_methods
  if (p + 2 > hs.length) return undefined; // no extensions
  const end = Math.min(hs.length, p + 2 + hs.readUInt16BE(p));
  p += 2;
  while (p + 4 <= end) {
    const type = hs.readUInt16BE(p);
    const len = hs.readUInt16BE(p + 2);
    p += 4;
    if (type === 0x0000) {
      // server_name_list: length(2), then entries of type(1) length(2) name
      let q = p + 2;
      const listEnd = p + len;
      while (q + 3 <= listEnd) {
        const nameType = hs[q]!;
        const nameLen = hs.readUInt16BE(q + 1);
        // latin1, not ascii: "ascii" would clear the high bit and turn 0xAF into "/".
        if (nameType === 0) return hs.subarray(q + 3, q + 3 + nameLen).toString("latin1");
        q += 3 + nameLen;
      }
      return undefined;
    }
    p += len;
  }
  return undefined;
}
