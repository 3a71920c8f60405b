// Raw HTTP/2 for the tests' hand-built clients (h2-client.ts, h2-raw-client.ts): frames written byte by byte, a
// TLS session that chose h2 with every frame it receives parsed, and HPACK literals without Huffman coding.
import tls from "node:tls";

export interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

/** A frame: 9-byte header (length, type, flags, stream id) and payload. */
export function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

export interface RawSession {
  socket: tls.TLSSocket;
  /** Every frame received so far, in order. */
  frames: Frame[];
  /** Settles when the connection closes. */
  ended: Promise<void>;
  state: { closed: boolean; goaway: number | undefined };
}

/**
 * A TLS connection to host:443 (from `localAddress`, if given) that chose h2, with the client preface and a SETTINGS
 * frame (`settings`: its payload, empty by default) sent; `onFrame` sees each frame as it arrives (after it is recorded).
 */
export async function rawSession(opts: { host: string; servername: string; ca: Buffer; localAddress?: string; settings?: Buffer }, onFrame?: (f: Frame, s: RawSession) => void): Promise<RawSession> {
  const socket = tls.connect({ host: opts.host, port: 443, servername: opts.servername, ca: opts.ca, ALPNProtocols: ["h2"], ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
  await new Promise<void>((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
  const session: RawSession = { socket, frames: [], ended: Promise.resolve(), state: { closed: false, goaway: undefined } };
  let received = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    received = Buffer.concat([received, chunk]);
    while (received.length >= 9) {
      const length = received.readUIntBE(0, 3);
      if (received.length < 9 + length) break;
      const f = { type: received[3]!, flags: received[4]!, stream: received.readUInt32BE(5) & 0x7fffffff, payload: received.subarray(9, 9 + length) };
      if (f.type === 7) session.state.goaway = f.payload.readUInt32BE(4);
      session.frames.push(f);
      onFrame?.(f, session);
      received = received.subarray(9 + length);
    }
  });
  session.ended = new Promise<void>((resolve) => socket.once("close", () => ((session.state.closed = true), resolve())));
  socket.on("error", () => undefined);
  socket.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), frame(4, 0, 0, opts.settings ?? Buffer.alloc(0))]));
  return session;
}

/** HPACK integer with an N-bit prefix. */
function int(value: number, bits: number, first: number): Buffer {
  const max = (1 << bits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  value -= max;
  while (value >= 128) {
    out.push((value % 128) + 128);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return Buffer.from(out);
}

/** A header block with every field as "literal without indexing, new name", raw octets: exactly the bytes given. */
export function literalBlock(headers: Array<[string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of headers) {
    const n = Buffer.from(name, "latin1");
    const v = Buffer.from(value, "latin1");
    parts.push(Buffer.from([0x00]), int(n.length, 7, 0), n, int(v.length, 7, 0), v);
  }
  return Buffer.concat(parts);
}
