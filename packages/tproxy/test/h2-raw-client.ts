// Hand-built HTTP/2 streams for attack tests, run as a process in the pod's namespace: what a well-behaved client
// library refuses to send (connection-specific headers, a content-length that lies, CR/LF inside a field).
//   node h2-raw-client.ts '{"host":...,"servername":...,"ca":...,"streams":[{"headers":[["name","value"],...],"data":"..."}]}'
// Sends each stream on ONE session (HEADERS, then DATA ending it, or HEADERS ending it when there is no data),
// one after another, and prints one JSON line: per stream, whether the proxy answered (a HEADERS frame) or reset
// it (RST_STREAM code), and whether the session was ended (GOAWAY code).
import { readFileSync } from "node:fs";
import { frame, literalBlock, rawSession } from "./h2-frames.ts";

interface Spec {
  host: string;
  servername: string;
  ca: string;
  /** reset: after the data (sent without END_STREAM), RST_STREAM CANCEL: a client giving up mid-body. */
  streams: Array<{ headers: Array<[string, string]>; data?: string; reset?: boolean }>;
}
const spec = JSON.parse(process.argv[2] ?? "{}") as Spec;

const results: Array<{ answered: boolean; reset: number | null }> = spec.streams.map(() => ({ answered: false, reset: null }));
const { socket, ended, state } = await rawSession({ host: spec.host, servername: spec.servername, ca: readFileSync(spec.ca) }, (f, s) => {
  const r = results[(f.stream - 1) / 2];
  if (f.type === 1 && r) r.answered = true;
  if (f.type === 3 && r) r.reset = f.payload.readUInt32BE(0);
  // The proxy's SETTINGS is acknowledged, as a client must.
  if (f.type === 4 && (f.flags & 1) === 0) s.socket.write(frame(4, 1, 0, Buffer.alloc(0)));
});
for (const [i, s] of spec.streams.entries()) {
  const id = 1 + 2 * i;
  const data = s.data === undefined ? undefined : Buffer.from(s.data, "latin1");
  socket.write(frame(1, 0x4 | (data === undefined ? 0x1 : 0), id, literalBlock(s.headers)));
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
  while (Date.now() < until && !results[i]!.answered && results[i]!.reset === null && state.goaway === undefined) await new Promise((r) => setTimeout(r, 20));
}
socket.end();
await Promise.race([ended, new Promise((r) => setTimeout(r, 2000).unref())]);
process.stdout.write(JSON.stringify({ streams: results, goaway: state.goaway ?? null }) + "\n");
socket.destroy();
