// A real gRPC server and client (@grpc/grpc-js), for tests of gRPC through the proxy. Messages are JSON
// (a service definition with its own serializers: no .proto compiler needed). Run as processes in namespaces:
//   node grpc-echo.ts server ADDRESS PORT CERT KEY
//     serves test.Echo over TLS: Allowed and Denied (unary: answer {echo, server}), Fail (unary: NOT_FOUND
//     "no such thing", a trailers-only answer), Stream (server streaming: {n} messages); every answer sends the
//     trailing metadata x-upstream-trailer: kept. Prints "listening".
//   node grpc-echo.ts client TARGET CA METHOD JSON
//     calls METHOD once through TARGET (host:port, resolved like any name), trusting CA; prints one JSON line:
//     {code, details, messages, trailer}.
//   node grpc-echo.ts server-h2 ADDRESS PORT CERT KEY
//     a plain HTTP/2 server (HTTP/1.1 too) answering "h2 <method> <path> <authority>" (or "1.1 ..."), so a test
//     sees which protocol the upstream leg spoke; /refuse-once... refuses its first HTTP/2 stream per path
//     (RST_STREAM REFUSED_STREAM, then GOAWAY); /trailers answers with the count of body bytes received and a trailer "x-upstream-trailer: kept".
//   node grpc-echo.ts server-h1 ADDRESS PORT CERT KEY
//     an HTTPS server that speaks HTTP/1.1 only and prints "seen METHOD PATH BYTES" for every request it parses,
//     so a test sees what reached it as a request of its own (a smuggled one would show up here).
import grpc from "@grpc/grpc-js";
import http2 from "node:http2";
import https from "node:https";
import { readFileSync } from "node:fs";

const json = {
  serialize: (value: unknown): Buffer => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer): unknown => JSON.parse(bytes.toString("utf8")),
};
const unary = (name: string) => ({
  path: `/test.Echo/${name}`,
  requestStream: false,
  responseStream: false,
  requestSerialize: json.serialize,
  requestDeserialize: json.deserialize,
  responseSerialize: json.serialize,
  responseDeserialize: json.deserialize,
});
const SERVICE = {
  Allowed: unary("Allowed"),
  Denied: unary("Denied"),
  Fail: unary("Fail"),
  Stream: { ...unary("Stream"), responseStream: true },
} satisfies grpc.ServiceDefinition;

function trailer(): grpc.Metadata {
  const m = new grpc.Metadata();
  m.set("x-upstream-trailer", "kept");
  return m;
}

type Msg = { msg?: string; n?: number };

function server(address: string, port: string, cert: string, key: string): void {
  const s = new grpc.Server();
  const echo: grpc.handleUnaryCall<Msg, unknown> = (call, cb) => cb(null, { echo: call.request.msg, server: "grpc-echo" }, trailer());
  s.addService(SERVICE, {
    Allowed: echo,
    Denied: echo,
    Fail: ((_call, cb) => cb({ code: grpc.status.NOT_FOUND, details: "no such thing" })) satisfies grpc.handleUnaryCall<Msg, unknown>,
    Stream: ((call) => {
      for (let i = 0; i < (call.request.n ?? 3); i++) call.write({ i });
      call.end(trailer());
    }) satisfies grpc.handleServerStreamingCall<Msg, unknown>,
  });
  const creds = grpc.ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(cert), private_key: readFileSync(key) }]);
  s.bindAsync(`${address.includes(":") ? `[${address}]` : address}:${port}`, creds, (err) => {
    if (err) {
      process.stderr.write(`bind failed: ${err.message}\n`);
      process.exit(1);
    }
    process.stdout.write("listening\n");
  });
}

function client(target: string, ca: string, method: string, input: string): void {
  const Client = grpc.makeGenericClientConstructor(SERVICE, "Echo");
  const c = new Client(target, grpc.credentials.createSsl(readFileSync(ca)));
  const deadline = new Date(Date.now() + 15_000);
  const messages: unknown[] = [];
  let trailer: string | undefined;
  let reported = false;
  // A failed streaming call emits "error" and may still emit "end": one line per call.
  const done = (err: grpc.ServiceError | null) => {
    if (reported) return;
    reported = true;
    process.stdout.write(JSON.stringify({ code: err ? err.code : 0, details: err ? err.details : "", messages, trailer }) + "\n");
    c.close();
  };
  const request = JSON.parse(input) as Msg;
  if (method === "Stream") {
    const call = (c as unknown as Record<string, (req: Msg, opts: grpc.CallOptions) => grpc.ClientReadableStream<unknown>>).Stream!(request, { deadline });
    call.on("data", (m: unknown) => messages.push(m));
    call.on("status", (st: grpc.StatusObject) => {
      trailer = st.metadata.get("x-upstream-trailer")[0] as string | undefined;
    });
    call.on("error", (err: grpc.ServiceError) => done(err));
    call.on("end", () => setImmediate(() => done(null)));
    return;
  }
  const fn = (c as unknown as Record<string, (req: Msg, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => grpc.ClientUnaryCall>)[method];
  if (!fn) throw new Error(`no method ${method}`);
  const call = fn.call(c, request, { deadline }, (err, res) => {
    if (!err) messages.push(res);
    // The status (with its trailing metadata) is emitted after the callback.
    setImmediate(() => done(err));
  });
  call.on("status", (st: grpc.StatusObject) => {
    trailer = st.metadata.get("x-upstream-trailer")[0] as string | undefined;
  });
}

function serverH2(address: string, port: string, cert: string, key: string): void {
  const refused = new Set<string>();
  const s = http2.createSecureServer({ cert: readFileSync(cert), key: readFileSync(key), allowHTTP1: true }, (req, res) => {
    if (req.url.startsWith("/refuse-once") && req.httpVersion === "2.0" && !refused.has(req.url)) {
      // As a server does that closes a session (GOAWAY) just as a stream arrives: the stream is refused, unprocessed.
      refused.add(req.url);
      process.stdout.write(`refused ${req.url}\n`);
      req.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      req.stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR, 0);
      return;
    }
    const version = req.httpVersion === "2.0" ? "h2" : req.httpVersion;
    const authority = req.httpVersion === "2.0" ? req.headers[":authority"] : req.headers.host;
    let bytes = 0;
    req.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
    });
    req.on("end", () => {
      if (req.url === "/trailers") {
        res.addTrailers({ "x-upstream-trailer": "kept" });
        res.end(`${version} ${req.method} ${req.url} ${authority} ${bytes}\n`);
        return;
      }
      res.end(`${version} ${req.method} ${req.url} ${authority}\n`);
    });
  });
  s.listen(Number(port), address, () => process.stdout.write("listening\n"));
}

function serverH1(address: string, port: string, cert: string, key: string): void {
  const s = https.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
    let bytes = 0;
    req.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
    });
    req.on("end", () => {
      process.stdout.write(`seen ${req.method} ${req.url} ${bytes}\n`);
      res.end(`h1 ${req.method} ${req.url} ${bytes}\n`);
    });
  });
  s.listen(Number(port), address, () => process.stdout.write("listening\n"));
}

const [mode, ...args] = process.argv.slice(2);
if (mode === "server") server(args[0]!, args[1]!, args[2]!, args[3]!);
else if (mode === "server-h2") serverH2(args[0]!, args[1]!, args[2]!, args[3]!);
else if (mode === "server-h1") serverH1(args[0]!, args[1]!, args[2]!, args[3]!);
else if (mode === "client") client(args[0]!, args[1]!, args[2]!, args[3] ?? "{}");
else {
  process.stderr.write("usage: grpc-echo.ts server|server-h2|server-h1 ADDRESS PORT CERT KEY | client TARGET CA METHOD JSON\n");
  process.exit(2);
}
