// The proxy's own answers to gRPC requests. A gRPC client reads a call's outcome from grpc-status and
// grpc-message, not from the HTTP status (which a gRPC server sends as 200 whatever happened); an answer
// without them is a protocol error to it ("Received HTTP status code 418" at best). So a request whose
// content-type is application/grpc (or a variant: +proto, -web) that the proxy answers itself (the filter's
// respond(), a refusal, an upstream failure) gets a "trailers-only" gRPC answer: HTTP 200 and the status in the
// one HEADERS frame, with the text of the answer as the message.
//
// The code follows gRPC's own mapping of HTTP statuses (doc/http-grpc-status-mapping.md), except that a refusal
// (any other 4xx, such as a filter's 403 or 418) is PERMISSION_DENIED, the code for "not allowed to do this".
import type { OutgoingHttpHeaders } from "node:http";

export const GRPC = Object.freeze({
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
  UNKNOWN: 2,
});

/** Whether a request's content-type makes it a gRPC call (gRPC over HTTP/2, or gRPC-Web). */
export function isGrpc(contentType: string | string[] | undefined): boolean {
  return typeof contentType === "string" && /^application\/grpc([+\-;]|$)/i.test(contentType);
}

/** The gRPC status for an HTTP status the proxy answers with. */
export function grpcStatusFor(httpStatus: number): number {
  switch (httpStatus) {
    case 401: return GRPC.UNAUTHENTICATED;
    case 404: return GRPC.UNIMPLEMENTED;
    case 408: case 504: return GRPC.DEADLINE_EXCEEDED;
    case 413: return GRPC.RESOURCE_EXHAUSTED;
    // Retriable for gRPC clients (a rate limit's 429 too, as gRPC maps it).
    case 429: case 502: case 503: return GRPC.UNAVAILABLE;
    case 500: return GRPC.INTERNAL;
  }
  if (httpStatus >= 400 && httpStatus < 500) return GRPC.PERMISSION_DENIED;
  return GRPC.UNKNOWN;
}

/** Most characters of an answer's text kept in grpc-message. */
const MAX_MESSAGE = 1024;

/** grpc-message's encoding: UTF-8, percent-encoding every byte outside printable ASCII and "%" itself. */
export function grpcMessage(text: string): string {
  let out = "";
  for (const byte of Buffer.from(text.trim().slice(0, MAX_MESSAGE), "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** The headers of a trailers-only gRPC answer for the proxy's answer (status, headers, text). */
export function grpcAnswerHeaders(status: number, headers: OutgoingHttpHeaders, text: string, contentType: string): { headers: OutgoingHttpHeaders; code: number } {
  // A filter that names its own gRPC status is taken at its word.
  const given = Number(headers["grpc-status"]);
  const code = Number.isInteger(given) && given >= 0 ? given : grpcStatusFor(status);
  const out: OutgoingHttpHeaders = { ...headers, "content-type": contentType, "grpc-status": String(code) };
  delete out["content-length"];
  if (headers["grpc-message"] === undefined && text.trim() !== "") out["grpc-message"] = grpcMessage(text);
  return { headers: out, code };
}

/** A grpc-status header's value as a status code (0-16 and any other integer a server sends), or undefined. */
export function grpcStatusOf(value: string | string[] | undefined): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined || !/^\d{1,9}$/.test(v.trim())) return undefined;
  return Number(v.trim());
}
