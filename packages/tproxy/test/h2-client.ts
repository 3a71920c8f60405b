// An HTTP/2 client for the HTTP/2 tests, run as a process in the pod's namespace:
//   node h2-client.ts '{"mode":"requests","host":...,"servername":...,"ca":...,"requests":[{"path":...,"authority":...}]}'
// prints one JSON line: the status, headers and body of every request, all sent on ONE session.
//   node h2-client.ts '{"mode":"rapid-reset","host":...,"servername":...,"ca":...,"streams":N}'
// writes raw frames: HEADERS then RST_STREAM(CANCEL) for N streams, as fast as the socket takes them, and prints
// whether and how the proxy ended the session (GOAWAY received, connection closed) and how many pairs were sent.
//   node h2-client.ts '{"mode":"idle",...,"requests":[...]}': the requests one after another, then waits for the
// proxy to close the idle session; prints the results, whether it closed, and after how long.
import http2 from "node:http2";
import tls from "node:tls";
import { readFileSync } from "node:fs";

interface Spec {
  mode: "requests" | "rapid-reset" | "idle";
  host: string;
  servername: string;
  ca: string;
  requests?: Array<{ path: string; authority?: string; method?: string }>;
  streams?: number;
}

const spec = JSON.parse(process.argv[2] ?? "{}") as Spec;
const ca = readFileSync(spec.ca);

async function requests(): Promise<void> {
  const session = http2.connect(`https://${spec.host}`, { ca, servername: spec.servername });
  session.on("error", () => undefined);
  const one = (r: { path: string; authority?: string; method?: string }) =>
    new Promise<{ status: number; headers: Record<string, unknown>; body: string; error?: string }>((resolve) => {
      // CONNECT has no :path (Node's client refuses one).
      const headers: http2.OutgoingHttpHeaders = r.method === "CONNECT" ? { ":method": "CONNECT" } : { ":path": r.path, ":method": r.method ?? "GET" };
      if (r.authority !== undefined) headers[":authority"] = r.authority;
      const stream = session.request(headers);
      let status = 0;
      let got: Record<string, unknown> = {};
      let body = "";
      stream.on("response", (h) => {
        status = Number(h[":status"]);
        got = h;
      });
      stream.setEncoding("utf8");
      stream.on("data", (c: string) => (body += c));
      stream.on("end", () => resolve({ status, headers: got, body }));
      stream.on("error", (err) => resolve({ status, headers: got, body, error: err.message }));
    });
  if (spec.mode === "idle") {
    // One after another, then wait (at most 15 s) for the proxy to end the idle session.
    let closed = false;
    const ended = new Promise<void>((resolve) => session.once("close", () => ((closed = true), resolve())));
    const results = [];
    for (const r of spec.requests ?? []) results.push(await one(r));
    const idleFrom = Date.now();
    await Promise.race([ended, new Promise((r) => setTimeout(r, 15_000).unref())]);
    process.stdout.write(JSON.stringify({ results, closed, idleMs: Date.now() - idleFrom }) + "\n");
    session.destroy();
    return;
  }
  // All at once, on the one session.
  const results = await Promise.all((spec.requests ?? []).map(one));
  process.stdout.write(JSON.stringify(results) + "\n");
  session.close();
}

/** A frame: 9-byte header (length, type, flags, stream id) and payload. */
function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

async function rapidReset(): Promise<void> {
  const started = Date.now();
  const socket = tls.connect({ host: spec.host, port: 443, servername: spec.servername, ca, ALPNProtocols: ["h2"] });
  await new Promise<void>((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
  // HPACK: :method GET (static 2), :scheme https (7), :path / (4), :authority (name index 1, literal value).
  const name = Buffer.from(spec.servername);
  const block = Buffer.concat([Buffer.from([0x82, 0x87, 0x84, 0x01, name.length]), name]);
  let goaway: number | undefined;
  let received = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    received = Buffer.concat([received, chunk]);
    while (received.length >= 9) {
      const length = received.readUIntBE(0, 3);
      if (received.length < 9 + length) break;
      if (received[3] === 7) goaway = received.readUInt32BE(9 + 4);
      received = received.subarray(9 + length);
    }
  });
  let closed = false;
  const ended = new Promise<void>((resolve) => socket.once("close", () => ((closed = true), resolve())));
  socket.on("error", () => undefined);
  socket.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), frame(4, 0, 0, Buffer.alloc(0))]));
  const cancel = Buffer.alloc(4);
  cancel.writeUInt32BE(8);
  let sent = 0;
  const total = spec.streams ?? 20_000;
  while (sent < total && !closed && goaway === undefined) {
    const batch: Buffer[] = [];
    for (let i = 0; i < 100 && sent < total; i += 1, sent += 1) {
      const id = 1 + 2 * sent;
      batch.push(frame(1, 0x4 | 0x1, id, block), frame(3, 0, id, cancel));
    }
    if (!socket.write(Buffer.concat(batch))) await new Promise((r) => socket.once("drain", r).once("close", r));
    await new Promise((r) => setImmediate(r));
  }
  // The session should end soon after the flood; a generous bound, not a speed assertion.
  await Promise.race([ended, new Promise((r) => setTimeout(r, 10_000).unref())]);
  process.stdout.write(JSON.stringify({ sent, goaway: goaway ?? null, closed, ms: Date.now() - started }) + "\n");
  socket.destroy();
}

await (spec.mode === "rapid-reset" ? rapidReset() : requests());
