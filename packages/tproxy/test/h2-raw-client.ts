// Hand-built HTTP/2 streams for attack tests, run as a process in the pod's namespace: what a well-behaved client
// library refuses to send (connection-specific headers, a content-length that lies, CR/LF inside a field).
//   node h2-raw-client.ts '{"host":...,"servername":...,"ca":...,"streams":[{"headers":[["name","value"],...],"data":"..."}]}'
// Sends each stream on ONE session (HEADERS, then DATA ending it, or HEADERS ending it when there is no data),
// one after another, and prints one JSON line: per stream, whether the proxy answered (a HEADERS frame) or reset
// it (RST_STREAM code), and whether the session was ended (GOAWAY code).
import tls from "node:tls";
import { readFileSync } from "node:fs";

interface Spec {
  host: string;
  servername: string;
  ca: string;
  /** reset: after the data (sent without END_STREAM), RST_STREAM CANCEL: a client giving up mid-body. */
  streams: Array<{ headers: Array<[string, string]>; data?: string; reset?: boolean }>;
}
const spec = JSON.parse(process.argv[2] ?? "{}") as Spec;

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
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

/** Every field as "literal without indexing, new name", raw octets (no Huffman): exactly the bytes given. */
function block(headers: Array<[string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of headers) {
    const n = Buffer.from(name, "latin1");
    const v = Buffer.from(value, "latin1");
    parts.push(Buffer.from([0x00]), int(n.length, 7, 0), n, int(v.length, 7, 0), v);
  }
  return Buffer.concat(parts);
}

const socket = tls.connect({ host: spec.host, port: 443, servername: spec.servername, ca: readFileSync(spec.ca), ALPNProtocols: ["h2"] });
await new Promise<void>((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
const results: Array<{ answered: boolean; reset: number | null }> = spec.streams.map(() => ({ answered: false, reset: null }));
let goaway: number | null = null;
let received = Buffer.alloc(0);
socket.on("data", (chunk: Buffer) => {
  received = Buffer.concat([received, chunk]);
  while (received.length >= 9) {
    const length = received.readUIntBE(0, 3);
    if (received.length < 9 + length) break;
    const type = received[3]!;
    const id = received.readUInt32BE(5) & 0x7fffffff;
    const payload = received.subarray(9, 9 + length);
    const r = results[(id - 1) / 2];
    if (type === 1 && r) r.answered = true;
    if (type === 3 && r) r.reset = payload.readUInt32BE(0);
    if (type === 7) goaway = payload.readUInt32BE(4);
    if (type === 4 && (received[4]! & 1) === 0) socket.write(frame(4, 1, 0, Buffer.alloc(0)));
    received = received.subarray(9 + length);
  }
});
socket.on("error", () => undefined);
const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
socket.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), frame(4, 0, 0, Buffer.alloc(0))]));
for (const [i, s] of spec.streams.entries()) {
  const id = 1 + 2 * i;
  const data = s.data === undefined ? undefined : Buffer.from(s.data, "latin1");
  socket.write(frame(1, 0x4 | (data === undefined ? 0x1 : 0), id, block(s.headers)));
  if (data !== undefined) socket.write(frame(0, s.reset ? 0 : 0x1, id, data));
  if (s.reset) {
    // Give the proxy time to pass the bytes on before the reset.
    await new Promise((r) => setTimeout(r, 300));
    const cancel = Buffer.alloc(4);
    cancel.writeUInt32BE(8);
    socket.write(frame(3, 0, id, cancel));
    results[i]!.reset = 8;
  }
  // Each stream is answered or reset before the next (a generous bound, not a speed assertion).
  const until = Date.now() + 5000;
  while (Date.now() < until && !results[i]!.answered && results[i]!.reset === null && goaway === null) await new Promise((r) => setTimeout(r, 20));
}
socket.end();
await Promise.race([closed, new Promise((r) => setTimeout(r, 2000).unref())]);
process.stdout.write(JSON.stringify({ streams: results, goaway }) + "\n");
socket.destroy();
