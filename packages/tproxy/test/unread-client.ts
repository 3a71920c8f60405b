// Clients that ask for large answers and do not take them, run as processes in the pod's namespace. Each prints
// JSON lines of what it saw.
//
//   node unread-client.ts '{"mode":"h2-sessions","ca":...,"servername":...,"address":...,"source":...,"sessions":S,"streams":N,"bytes":B,"window":W}'
// S HTTP/2 sessions from SOURCE, each opening N streams of GET /bytes/B at once, having announced W as every
// stream's flow-control window (and the connection's as their sum, at most 2^31-1). It reads until every
// stream's response HEADERS has come, then stops reading its sockets for good; prints {"phase":"stalled",...}
// and waits for a line on stdin (or to be killed). Frames are written by hand (h2-frames.ts): a library client reads on its own.
//
//   node unread-client.ts '{"mode":"h1","ca":...,"servername":...,"address":...,"path":...,"stallMs":M}'
// One HTTP/1.1 GET over TLS. Reads the answer's head, takes nothing more for M ms, then reads on to the end;
// prints {"status","bytes","length","error"}: the bytes of body it got and the content-length announced.
//   ... '"takeBytes":K,"pauseMs":P' instead of stallMs: takes K bytes, pauses P ms, and so on to the end (a slow
// reader that keeps taking).
//
//   node unread-client.ts '{"mode":"h1-connections","ca":...,"servername":...,"address":...,"source":...,"connections":C,"bytes":B}'
// C HTTP/1.1 connections over TLS from SOURCE, each a GET of /bytes/B whose answer's head it reads and then
// nothing more; prints {"phase":"stalled",...} once every head has come, and waits for a line on stdin (or to
// be killed).
//
//   node unread-client.ts '{"mode":"h2-stream","ca":...,"servername":...,"address":...,"path":...,"stallMs":M,"then":PATH}'
// One HTTP/2 session (node:http2): a GET of `path` whose body it does not read (its stream's window is never
// given back) for M ms, then a GET of `then` on the same session; prints {"first":{status,bytes,rstCode,error},
// "then":{status,body}}.
//
//   node unread-client.ts '{"mode":"ws","ca":...,"servername":...,"bytes":B,"stallMs":M}'
// A WebSocket (wss://servername/) that sends one message of B bytes, which the upstream echoes, and takes none of
// the echo for M ms; prints {"echoed": bytes of the echo received, "closeCode": the close code if it was closed}.
import { once } from "node:events";
import http2 from "node:http2";
import type net from "node:net";
import { readFileSync } from "node:fs";
import tls from "node:tls";
import { WebSocket } from "ws";
import { frame, literalBlock, rawSession, type RawSession } from "./h2-frames.ts";

interface Spec {
  mode: "h2-sessions" | "h1" | "h1-connections" | "h2-stream" | "ws";
  connections?: number;
  ca: string;
  servername: string;
  address: string;
  source?: string;
  sessions?: number;
  streams?: number;
  bytes?: number;
  window?: number;
  path?: string;
  stallMs?: number;
  takeBytes?: number;
  pauseMs?: number;
  then?: string;
}

const spec = JSON.parse(process.argv[2] ?? "{}") as Spec;
const ca = readFileSync(spec.ca);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const print = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
};
const setting = (id: number, v: number): Buffer => Buffer.concat([Buffer.from([0, id]), u32(v)]);

async function h2Sessions(): Promise<void> {
  const { sessions = 1, streams = 1, bytes = 1, window = 65_535 } = spec;
  const open = (s: number): Promise<{ data: number }> =>
    new Promise((resolve, reject) => {
      const got = { answered: 0, data: 0 };
      let stalled = false;
      const onFrame = (f: { type: number; flags: number; payload: Buffer }, raw: RawSession): void => {
        if (f.type === 4 && !(f.flags & 1)) raw.socket.write(frame(4, 1, 0, Buffer.alloc(0))); // ack the proxy's SETTINGS
        if (f.type === 1) got.answered += 1;
        if (f.type === 0) got.data += f.payload.length;
        // Every stream answered and its body begun: from here on, nothing more is read.
        if (!stalled && got.answered === streams) {
          stalled = true;
          raw.socket.pause();
          resolve(got);
        }
      };
      // No server push; every stream's window as announced.
      rawSession({ host: spec.address, servername: spec.servername, ca, localAddress: spec.source, settings: Buffer.concat([setting(2, 0), setting(4, window)]) }, onFrame).then((raw) => {
        const out: Buffer[] = [];
        // The connection's window: as large as the streams' together (at most 2^31-1).
        const more = Math.min(2 ** 31 - 1, window * streams) - 65_535;
        if (more > 0) out.push(frame(8, 0, 0, u32(more)));
        for (let k = 0; k < streams; k++) {
          const path = `/bytes/${bytes}?s=${s}&k=${k}`;
          out.push(frame(1, 0x5, 2 * k + 1, literalBlock([[":method", "GET"], [":scheme", "https"], [":path", path], [":authority", spec.servername]])));
        }
        raw.socket.write(Buffer.concat(out));
        void raw.ended.then(() => {
          if (!stalled) reject(new Error(`closed by the proxy after ${got.answered} answers${raw.state.goaway === undefined ? "" : `, GOAWAY ${raw.state.goaway}`}`));
        });
        setTimeout(() => {
          if (!stalled) reject(new Error(`only ${got.answered} of ${streams} streams answered in 40 s`));
        }, 40_000).unref();
      }, (e: NodeJS.ErrnoException) => reject(new Error(e.code ?? e.message)));
    });
  const results = await Promise.allSettled(Array.from({ length: sessions }, (_, s) => open(s)));
  const errors: Record<string, number> = {};
  for (const r of results) if (r.status === "rejected") errors[(r.reason as Error).message] = (errors[(r.reason as Error).message] ?? 0) + 1;
  const ok = results.filter((r): r is PromiseFulfilledResult<{ data: number }> => r.status === "fulfilled");
  print({ phase: "stalled", ok: ok.length, errors, dataBytes: ok.reduce((a, r) => a + r.value.data, 0) });
  // Paused sockets keep no process alive: a timer does, until a line comes (if stdin is a pipe) or it is killed.
  const alive = setInterval(() => undefined, 60_000);
  await new Promise((r) => process.stdin.once("data", r));
  clearInterval(alive);
}

async function h1(): Promise<void> {
  const socket = tls.connect({ host: spec.address, port: 443, servername: spec.servername, ca, ALPNProtocols: ["http/1.1"] });
  await new Promise<void>((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
  socket.write(`GET ${spec.path} HTTP/1.1\r\nHost: ${spec.servername}\r\nConnection: close\r\n\r\n`);
  let head = "";
  let bytes = 0;
  let error: string | undefined;
  let headDone = false;
  let taken = 0;
  let pausing = false;
  const ended = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  socket.on("error", (e: NodeJS.ErrnoException) => void (error = e.code ?? e.message));
  socket.on("data", (chunk: Buffer) => {
    if (headDone) {
      bytes += chunk.length;
      taken += chunk.length;
      if (spec.takeBytes !== undefined && taken >= spec.takeBytes && !pausing) void pause();
      return;
    }
    head += chunk.toString("latin1");
    const end = head.indexOf("\r\n\r\n");
    if (end < 0) return;
    headDone = true;
    bytes += head.length - end - 4;
    head = head.slice(0, end);
    if (spec.stallMs !== undefined) void pause(spec.stallMs);
  });
  const pause = async (ms = spec.pauseMs ?? 100): Promise<void> => {
    pausing = true;
    socket.pause();
    await sleep(ms);
    taken = 0;
    pausing = false;
    socket.resume();
  };
  await ended;
  print({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? 0), length: Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? -1), bytes, error });
}

async function h1Connections(): Promise<void> {
  const { connections = 1, bytes = 1 } = spec;
  const open = (k: number): Promise<tls.TLSSocket> =>
    new Promise((resolve, reject) => {
      const socket = tls.connect({ host: spec.address, port: 443, servername: spec.servername, ca, ALPNProtocols: ["http/1.1"], ...(spec.source ? { localAddress: spec.source } : {}) });
      let head = "";
      socket.once("secureConnect", () => socket.write(`GET /bytes/${bytes}?k=${k} HTTP/1.1\r\nHost: ${spec.servername}\r\n\r\n`));
      const onData = (chunk: Buffer): void => {
        head += chunk.toString("latin1");
        if (!head.includes("\r\n\r\n")) return;
        // The head is in: from here on, nothing more is read.
        socket.off("data", onData);
        socket.pause();
        resolve(socket);
      };
      socket.on("data", onData);
      socket.on("error", (e: NodeJS.ErrnoException) => reject(new Error(e.code ?? e.message)));
      setTimeout(() => reject(new Error("no answer's head in 40 s")), 40_000).unref();
    });
  const results = await Promise.allSettled(Array.from({ length: connections }, (_, k) => open(k)));
  const errors: Record<string, number> = {};
  for (const r of results) if (r.status === "rejected") errors[(r.reason as Error).message] = (errors[(r.reason as Error).message] ?? 0) + 1;
  print({ phase: "stalled", ok: results.filter((r) => r.status === "fulfilled").length, errors });
  const alive = setInterval(() => undefined, 60_000);
  await new Promise((r) => process.stdin.once("data", r));
  clearInterval(alive);
}

async function h2Stream(): Promise<void> {
  const session = http2.connect(`https://${spec.servername}`, { ca, servername: spec.servername, createConnection: () => tls.connect({ host: spec.address, port: 443, servername: spec.servername, ca, ALPNProtocols: ["h2"] }) });
  session.on("error", () => undefined);
  const first = { status: 0, bytes: 0, rstCode: undefined as number | undefined, error: undefined as string | undefined };
  const req = session.request({ ":path": spec.path ?? "/" });
  req.on("response", (h) => void (first.status = Number(h[":status"])));
  req.on("error", (e: NodeJS.ErrnoException) => void (first.error = e.code ?? e.message));
  const firstClosed = new Promise<void>((resolve) => req.once("close", () => ((first.rstCode = req.rstCode), resolve())));
  // Not read: the stream's window is not given back, so the proxy can send no more than it.
  req.pause();
  await sleep(spec.stallMs ?? 0);
  const then = await new Promise<{ status: number; body: string }>((resolve) => {
    const r = session.request({ ":path": spec.then ?? "/" });
    let status = 0;
    let body = "";
    r.on("response", (h) => void (status = Number(h[":status"])));
    r.on("data", (c: Buffer) => void (body += c.toString()));
    r.on("error", (e: NodeJS.ErrnoException) => resolve({ status, body: `error ${e.code ?? e.message}` }));
    r.on("end", () => resolve({ status, body }));
  });
  // What the first stream had been sent, taken now: a stream the proxy reset ends here with its code.
  req.on("data", (c: Buffer) => void (first.bytes += c.length));
  req.resume();
  await Promise.race([firstClosed, sleep(10_000)]);
  print({ first, then });
  session.destroy();
}

async function ws(): Promise<void> {
  const socket = new WebSocket(`wss://${spec.servername}/`, { ca, maxPayload: 0 });
  socket.on("error", () => undefined);
  await once(socket, "open");
  let got = 0;
  socket.on("message", (data: Buffer) => void (got += data.length));
  const closed = new Promise<number>((resolve) => socket.once("close", (code: number) => resolve(code)));
  // The upstream echoes the message back; its bytes are not taken for stallMs.
  const raw = (socket as unknown as { _socket: net.Socket })._socket;
  raw.pause();
  socket.send(Buffer.alloc(spec.bytes ?? 1, 0x62));
  await sleep(spec.stallMs ?? 0);
  raw.resume();
  const code = await Promise.race([closed, (async () => {
    while (got < (spec.bytes ?? 1)) await sleep(50);
    return undefined;
  })(), sleep(20_000).then(() => -1)]);
  print({ echoed: got, closeCode: code });
  socket.terminate();
}

const modes = { "h2-sessions": h2Sessions, h1, "h1-connections": h1Connections, "h2-stream": h2Stream, ws } as const;
await modes[spec.mode]();
process.exit(0);
