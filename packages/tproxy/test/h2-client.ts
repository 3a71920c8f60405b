// An HTTP/2 client for the HTTP/2 tests, run as a process in the pod's namespace:
//   node h2-client.ts '{"mode":"requests","host":...,"servername":...,"ca":...,"requests":[{"path":...,"authority":...}]}'
// prints one JSON line: the status, headers and body of every request, all sent on ONE session.
//   node h2-client.ts '{"mode":"rapid-reset","host":...,"servername":...,"ca":...,"streams":N}'
// writes raw frames: HEADERS then RST_STREAM(CANCEL) for N streams, as fast as the socket takes them, and prints
// whether and how the proxy ended the session (GOAWAY received, connection closed) and how many pairs were sent.
//   node h2-client.ts '{"mode":"idle",...,"requests":[...]}': the requests one after another, then waits for the
// proxy to close the idle session; prints the results, whether it closed, and after how long.
//   node h2-client.ts '{"mode":"bodies",...,"requests":[{"path":...,"method":"POST","chunks":N,"everyMs":M,"startMs":S}]}':
// each request starts S ms after the session, sends N one-byte chunks M ms apart (Content-Length N), all on ONE
// session; prints status, body, error and RST_STREAM code of each.
//   node h2-client.ts '{"mode":"continuation",...,"frames":N}': raw frames: HEADERS without END_HEADERS, then up to N
// small CONTINUATION frames without it; prints how many were sent and whether the proxy ended the session.
//   node h2-client.ts '{"mode":"continuation-stall",...}': HEADERS without END_HEADERS, then one CONTINUATION whose
// payload arrives a byte every 200 ms and never ends; prints whether (and after how long) the session was closed.
//   node h2-client.ts '{"mode":"continuation-split",...,"requests":[{"path":...}]}': one GET whose header block is
// split over HEADERS and two CONTINUATION frames; prints the response's status and body.
//   node h2-client.ts '{"mode":"ack-flood","kind":"ping"|"settings","frames":N,...,"requests":[{"path":...}]}': opens
// the stream (kept open by a slow upstream, so the idle bound does not apply), then stops reading and writes up to N
// PING or SETTINGS frames; prints how many were written and whether the proxy ended the session.
//   node h2-client.ts '{"mode":"pings-then-request",...,"requests":[...]}': a few PINGs and SETTINGS (each
// acknowledged), then the requests on the same session.
import http2 from "node:http2";
import { readFileSync } from "node:fs";
import { frame, rawSession as openRawSession, type Frame, type RawSession } from "./h2-frames.ts";

interface Spec {
  mode: "requests" | "rapid-reset" | "idle" | "bodies" | "continuation" | "continuation-stall" | "continuation-split" | "ack-flood" | "pings-then-request";
  host: string;
  servername: string;
  ca: string;
  requests?: Array<{ path: string; authority?: string; method?: string; chunks?: number; everyMs?: number; startMs?: number }>;
  streams?: number;
  frames?: number;
  kind?: "ping" | "settings";
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

async function rapidReset(): Promise<void> {
  const started = Date.now();
  const { socket, ended, state } = await rawSession();
  // HPACK: :method GET (static 2), :scheme https (7), :path / (4), :authority (name index 1, literal value).
  const name = Buffer.from(spec.servername);
  const block = Buffer.concat([Buffer.from([0x82, 0x87, 0x84, 0x01, name.length]), name]);
  const cancel = Buffer.alloc(4);
  cancel.writeUInt32BE(8);
  let sent = 0;
  const total = spec.streams ?? 20_000;
  while (sent < total && !state.closed && state.goaway === undefined) {
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
  process.stdout.write(JSON.stringify({ sent, goaway: state.goaway ?? null, closed: state.closed, ms: Date.now() - started }) + "\n");
  socket.destroy();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A wait that does not keep the process alive: the longest a race waits for the proxy. */
const deadline = (ms: number) => new Promise((r) => setTimeout(r, ms).unref());

async function bodies(): Promise<void> {
  const session = http2.connect(`https://${spec.host}`, { ca, servername: spec.servername });
  session.on("error", () => undefined);
  const one = async (r: NonNullable<Spec["requests"]>[number]) => {
    await sleep(r.startMs ?? 0);
    const chunks = r.chunks ?? 0;
    const stream = session.request({ ":path": r.path, ":method": r.method ?? "POST", "content-length": String(chunks) });
    let status = 0;
    let body = "";
    stream.on("response", (h) => (status = Number(h[":status"])));
    stream.setEncoding("utf8");
    stream.on("data", (c: string) => (body += c));
    const done = new Promise<{ status: number; body: string; error?: string; rstCode?: number }>((resolve) => {
      let error: string | undefined;
      stream.on("error", (err) => (error = err.message));
      stream.on("close", () => resolve({ status, body, rstCode: stream.rstCode, ...(error ? { error } : {}) }));
    });
    for (let i = 0; i < chunks; i += 1) {
      if (stream.closed || stream.destroyed || !stream.writable) break;
      stream.write("x");
      await sleep(r.everyMs ?? 0);
    }
    if (!stream.closed && !stream.destroyed && stream.writable) stream.end();
    return done;
  };
  const results = await Promise.all((spec.requests ?? []).map(one));
  process.stdout.write(JSON.stringify(results) + "\n");
  session.close();
}

/** A raw session to the spec's host (h2-frames.ts). */
const rawSession = (): Promise<RawSession> => openRawSession({ host: spec.host, servername: spec.servername, ca });

/** HPACK, literal without indexing: a static-table name (1 :authority, 4 :path) with a raw value (< 127 bytes). */
const literal = (nameIndex: number, value: string): Buffer => Buffer.concat([Buffer.from([nameIndex, Buffer.byteLength(value)]), Buffer.from(value)]);
/** :method GET (static 2), :scheme https (7). */
const GET_HTTPS = Buffer.from([0x82, 0x87]);

async function continuation(): Promise<void> {
  const started = Date.now();
  const { socket, ended, state } = await rawSession();
  // The header block begins (END_STREAM, no END_HEADERS) and is continued by frames that each add a header.
  socket.write(frame(1, 0x1, 1, Buffer.concat([GET_HTTPS, literal(4, "/continuation"), literal(1, spec.servername)])));
  const extra = Buffer.from([0x00, 1, 0x61, 1, 0x62]); // literal, new name "a", value "b"
  let sent = 0;
  const total = spec.frames ?? 100_000;
  while (sent < total && !state.closed && state.goaway === undefined) {
    const batch: Buffer[] = [];
    for (let i = 0; i < 100 && sent < total; i += 1, sent += 1) batch.push(frame(9, 0, 1, extra));
    if (!socket.write(Buffer.concat(batch))) await new Promise((r) => socket.once("drain", r).once("close", r));
    await new Promise((r) => setImmediate(r));
  }
  await Promise.race([ended, deadline(10_000)]);
  process.stdout.write(JSON.stringify({ sent, goaway: state.goaway ?? null, closed: state.closed, ms: Date.now() - started }) + "\n");
  socket.destroy();
}

async function continuationStall(): Promise<void> {
  const { socket, ended, state } = await rawSession();
  const opened = Date.now();
  socket.write(frame(1, 0x1, 1, Buffer.concat([GET_HTTPS, literal(4, "/stall")])));
  // One CONTINUATION announcing 200 bytes of header block, which come one every 200 ms: bytes keep arriving.
  const rest = Buffer.alloc(200, 0x61);
  socket.write(frame(9, 0, 1, rest).subarray(0, 9));
  let sent = 0;
  const trickle = (async () => {
    // Literal with a new name of 198 bytes: the block stays incomplete to the end of the frame and beyond.
    const payload = Buffer.concat([Buffer.from([0x00, 0x7f, 0x48]), rest]).subarray(0, rest.length);
    while (!state.closed && sent < payload.length && Date.now() - opened < 15_000) {
      socket.write(payload.subarray(sent, sent + 1));
      sent += 1;
      await sleep(200);
    }
  })();
  await Promise.race([ended, deadline(15_000)]);
  await trickle;
  process.stdout.write(JSON.stringify({ closed: state.closed, goaway: state.goaway ?? null, bytes: sent, ms: Date.now() - opened }) + "\n");
  socket.destroy();
}

/** Reads a response off raw frames: the :status of an indexed static entry (8..14) and the DATA of stream 1. */
function response(frames: Frame[]): { status: number; body: string; ended: boolean } {
  const STATIC: Record<number, number> = { 8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500 };
  let status = 0;
  let body = "";
  let ended = false;
  for (const f of frames.filter((x) => x.stream === 1)) {
    if (f.type === 1 && status === 0) status = f.payload[0]! & 0x80 ? (STATIC[f.payload[0]! & 0x7f] ?? -1) : -1;
    if (f.type === 0) body += f.payload.toString();
    if ((f.type === 0 || f.type === 1) && f.flags & 0x1) ended = true;
  }
  return { status, body, ended };
}

async function continuationSplit(): Promise<void> {
  const { socket, frames, ended, state } = await rawSession();
  const path = spec.requests?.[0]?.path ?? "/split";
  // END_STREAM on HEADERS; END_HEADERS on the second CONTINUATION.
  socket.write(Buffer.concat([frame(1, 0x1, 1, GET_HTTPS), frame(9, 0, 1, literal(4, path)), frame(9, 0x4, 1, literal(1, spec.servername))]));
  const started = Date.now();
  while (!response(frames).ended && !state.closed && Date.now() - started < 15_000) await sleep(20);
  process.stdout.write(JSON.stringify({ ...response(frames), goaway: state.goaway ?? null }) + "\n");
  socket.end();
  await Promise.race([ended, deadline(1000)]);
  socket.destroy();
}

async function ackFlood(): Promise<void> {
  const { socket, ended, state } = await rawSession();
  // A stream the upstream answers slowly: the session is not idle while the flood runs.
  const path = spec.requests?.[0]?.path ?? "/slow/30000";
  socket.write(frame(1, 0x1 | 0x4, 1, Buffer.concat([GET_HTTPS, literal(4, path), literal(1, spec.servername)])));
  await sleep(200);
  // Never read again: the acks the proxy owes queue on its side.
  socket.pause();
  const started = Date.now();
  const one = spec.kind === "settings" ? frame(4, 0, 0, Buffer.from([0, 3, 0, 0, 0, 100])) : frame(6, 0, 0, Buffer.alloc(8));
  const batch = Buffer.concat(Array.from({ length: 1000 }, () => one));
  let sent = 0;
  const total = spec.frames ?? 1_000_000;
  while (sent < total && !state.closed && Date.now() - started < 20_000) {
    sent += 1000;
    if (!socket.write(batch)) await Promise.race([new Promise((r) => socket.once("drain", r)), ended, deadline(20_000 - (Date.now() - started))]);
  }
  await Promise.race([ended, deadline(Math.max(0, 20_000 - (Date.now() - started)))]);
  process.stdout.write(JSON.stringify({ sent, closed: state.closed, ms: Date.now() - started }) + "\n");
  socket.destroy();
}

async function pingsThenRequest(): Promise<void> {
  const session = http2.connect(`https://${spec.host}`, { ca, servername: spec.servername });
  session.on("error", () => undefined);
  await new Promise<void>((resolve) => session.once("connect", () => resolve()));
  const pings: number[] = [];
  for (let i = 0; i < 5; i += 1) {
    pings.push(await new Promise<number>((resolve, reject) => session.ping((err, ms) => (err ? reject(err) : resolve(ms)))));
    await new Promise<void>((resolve) => session.settings({ initialWindowSize: 65_535 + i }, () => resolve()));
  }
  const results = await Promise.all(
    (spec.requests ?? []).map(
      (r) =>
        new Promise<{ status: number; body: string; error?: string }>((resolve) => {
          const stream = session.request({ ":path": r.path });
          let status = 0;
          let body = "";
          stream.on("response", (h) => (status = Number(h[":status"])));
          stream.setEncoding("utf8");
          stream.on("data", (c: string) => (body += c));
          stream.on("end", () => resolve({ status, body }));
          stream.on("error", (err) => resolve({ status, body, error: err.message }));
        }),
    ),
  );
  process.stdout.write(JSON.stringify({ pings: pings.length, results }) + "\n");
  session.close();
}

const MODES: Record<Spec["mode"], () => Promise<void>> = {
  requests,
  idle: requests,
  "rapid-reset": rapidReset,
  bodies,
  continuation,
  "continuation-stall": continuationStall,
  "continuation-split": continuationSplit,
  "ack-flood": ackFlood,
  "pings-then-request": pingsThenRequest,
};
await MODES[spec.mode]();
