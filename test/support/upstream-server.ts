// A test upstream ("a server on the internet"): plain HTTP and HTTPS on one address, answering with its
// own name so tests can tell which server the bytes came from. Run as a process inside a namespace:
//   node test/support/upstream-server.ts NAME ADDRESS HTTP_PORT HTTPS_PORT CERT KEY
// Routes: /close-on-reuse closes a kept-alive connection instead of answering its second request
// (a server whose idle timeout fired as the client reused it) and otherwise answers with the count of
// such closes; /bytes/N streams N bytes (/bytes/N?prefix=TEXT: starting with TEXT); /echo answers with
// the request's framing headers, byte count and (up to 64 KiB) body as JSON; /slow/MS answers after MS milliseconds; /headers echoes the request headers as JSON; anything else answers
// "NAME METHOD PATH". WebSocket upgrades are echoed back, prefixed with NAME.
import http from "node:http";
import https from "node:https";
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { WebSocketServer } from "ws";

const [name, address, httpPort, httpsPort, cert, key] = process.argv.slice(2);
if (!name || !address || !httpPort || !httpsPort || !cert || !key) {
  process.stderr.write("usage: upstream-server.ts NAME ADDRESS HTTP_PORT HTTPS_PORT CERT KEY\n");
  process.exit(2);
}

const CHUNK = Buffer.alloc(64 * 1024, 0x61);
/** Requests each connection has carried, and the connections closed by /close-on-reuse. */
const served = new WeakMap<object, number>();
let closedOnReuse = 0;

function handler(req: http.IncomingMessage, res: http.ServerResponse): void {
  const path = req.url ?? "/";
  const before = served.get(req.socket) ?? 0;
  served.set(req.socket, before + 1);
  if (path.startsWith("/close-on-reuse")) {
    if (before > 0) {
      closedOnReuse += 1;
      req.socket.destroy();
      return;
    }
    req.resume();
    req.on("end", () => res.end(`${name} closed-on-reuse ${closedOnReuse}\n`));
    return;
  }
  const bytes = /^\/bytes\/(\d+)/.exec(path);
  res.setHeader("x-upstream", name!);
  if (path.startsWith("/echo")) {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size <= 64 * 1024) chunks.push(c);
    });
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json" });
      const h = req.headers;
      res.end(JSON.stringify({ "content-length": h["content-length"], "transfer-encoding": h["transfer-encoding"], bytes: size, body: size <= 64 * 1024 ? Buffer.concat(chunks).toString("latin1") : undefined }));
    });
    return;
  }
  if (bytes) {
    let left = Number(bytes[1]);
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": left });
    const prefix = Buffer.from(new URL(path, "http://x").searchParams.get("prefix") ?? "", "latin1").subarray(0, left);
    if (prefix.length > 0) res.write(prefix);
    left -= prefix.length;
    const pump = (): void => {
      while (left > 0) {
        const chunk = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
        left -= chunk.length;
        if (!res.write(chunk)) return void res.once("drain", pump);
      }
      res.end();
    };
    pump();
    return;
  }
  const slow = /^\/slow\/(\d+)/.exec(path);
  if (slow) {
    setTimeout(() => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(`${name} slow ${slow[1]}\n`);
    }, Number(slow[1]));
    return;
  }
  if (path.startsWith("/headers")) {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(req.headers));
    return;
  }
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(`${name} ${req.method} ${path}\n`);
  });
}

function withWebSocket(server: http.Server): void {
  const wss = new WebSocketServer({ server });
  wss.on("connection", (ws) => ws.on("message", (data) => ws.send(`${name}: ${String(data)}`)));
}

const plain = http.createServer(handler);
const secure = https.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, handler);
// Kept-alive connections stay open as long as real servers keep them (nginx: 75 s), not Node's 5 s: a
// server closing one just as the proxy reuses it is what /close-on-reuse tests, on purpose.
for (const server of [plain, secure]) server.keepAliveTimeout = 75_000;
withWebSocket(plain);
withWebSocket(secure);
plain.listen(Number(httpPort), address, () => {
  secure.listen(Number(httpsPort), address, () => {
    process.stdout.write(`listening ${(plain.address() as AddressInfo).port} ${(secure.address() as AddressInfo).port}\n`);
  });
});
