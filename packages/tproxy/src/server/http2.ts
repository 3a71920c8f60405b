// The in-process HTTP/2 server for TLS clients that choose h2 in ALPN (listeners.ts hands it the TLS socket; it
// never listens). Each stream is one request of the same pipeline as HTTP/1.1 (Interceptor.attach, through
// Node's compatibility API), judged on its own: a denied stream gets its status while the others go on.
//
// The limits are explicit rather than Node's defaults, so that what one pod can make a session hold is
// written down here (Node 24's defaults in brackets; Envoy's edge recommendations where they differ):
import http2 from "node:http2";
import type { Logger } from "pino";

export const HTTP2_LIMITS = Object.freeze({
  /** Streams open at once per session [unlimited; Envoy edge: 100]. More are refused (REFUSED_STREAM). */
  maxConcurrentStreams: 100,
  /** Bytes of one request's header list, as HPACK counts them (name + value + 32 each) [64 KiB; Envoy: 60 KiB]. */
  maxHeaderListSize: 65_536,
  /** Header fields of one request, pseudo-headers included [128]. */
  maxHeaderListPairs: 128,
  /** MiB a session may hold in buffered frames and header tables before new streams are refused [10]. */
  maxSessionMemory: 10,
  /** Entries in one SETTINGS frame [32]. */
  maxSettings: 32,
  /**
   * Invalid frames (and frames with an empty payload) after which the session is destroyed [1000]: a flood of
   * malformed or empty frames ends the session.
   */
  maxSessionInvalidFrames: 100,
  /** Streams refused (over the stream limit, or malformed) after which the session is destroyed [100]. */
  maxSessionRejectedStreams: 100,
  /**
   * Rapid reset (CVE-2023-44487): RST_STREAM frames from the client beyond a burst of this many, refilled at
   * streamResetRate per second, end the session with GOAWAY [nghttp2: 1000 and 33].
   */
  streamResetBurst: 1000,
  streamResetRate: 33,
  /**
   * PING and SETTINGS floods (CVE-2019-9512, CVE-2019-9515): frames of either from the client, each of which owes
   * an ack, beyond a burst of this many, refilled at controlFrameRate per second, end the session with GOAWAY
   * ENHANCE_YOUR_CALM. nghttp2's own bound [max_outbound_ack: 1000, not settable from Node] ends a session only
   * when more than 1000 acks wait in its queue at once, which PINGs over TLS never reach (one 16 KiB record holds
   * 963 of them), and Node stops reading while its writes wait: a client that floods PINGs and never reads the
   * acks stalls its session, held as long as any of its streams, rather than ending it (Envoy ends it: 1000
   * outbound control frames [max_outbound_control_frames]). The same burst and rate as for resets.
   */
  controlFrameBurst: 1000,
  controlFrameRate: 33,
});

/** The HTTP/2 server whose 'request' events the interceptor handles (attach it before use). */
export function createHttp2Server(log: Logger): http2.Http2Server {
  const L = HTTP2_LIMITS;
  const server = http2.createServer({
    settings: { maxConcurrentStreams: L.maxConcurrentStreams, maxHeaderListSize: L.maxHeaderListSize, enablePush: false },
    maxHeaderListPairs: L.maxHeaderListPairs,
    maxSessionMemory: L.maxSessionMemory,
    maxSettings: L.maxSettings,
    maxSessionInvalidFrames: L.maxSessionInvalidFrames,
    maxSessionRejectedStreams: L.maxSessionRejectedStreams,
    streamResetBurst: L.streamResetBurst,
    streamResetRate: L.streamResetRate,
  });
  // A session's protocol error (a flood, a malformed frame) costs that session only.
  server.on("sessionError", (err: Error) => log.info({ err: err.message }, "HTTP/2 session ended by an error"));
  server.on("session", (session: http2.ServerHttp2Session) => {
    session.on("error", () => session.destroy());
    session.on("frameError", () => undefined);
    boundControlFrames(session, log);
  });
  return server;
}

/** Ends a session whose client sends PING and SETTINGS frames faster than HTTP2_LIMITS allows (a token bucket). */
function boundControlFrames(session: http2.ServerHttp2Session, log: Logger): void {
  const L = HTTP2_LIMITS;
  let tokens = L.controlFrameBurst;
  let at = Date.now();
  const take = (): void => {
    const now = Date.now();
    tokens = Math.min(L.controlFrameBurst, tokens + ((now - at) * L.controlFrameRate) / 1000) - 1;
    at = now;
    if (tokens >= 0 || session.destroyed) return;
    log.info({ burst: L.controlFrameBurst, rate: L.controlFrameRate }, "HTTP/2 session ended: PING/SETTINGS flood");
    session.destroy(undefined, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  };
  session.on("ping", take);
  session.on("remoteSettings", take);
}
