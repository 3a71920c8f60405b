// The HTTPS server the API server calls: POST /mutate and POST /validate (AdmissionReview v1), GET
// /healthz and /readyz for the kubelet. Its certificate and key are files (the chart mounts a Secret) and
// are loaded again when they change, so a renewed certificate is served without a restart.
import { readFileSync, watch, type FSWatcher } from "node:fs";
import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { basename, dirname } from "node:path";
import type { Logger } from "pino";
import { DEFAULT_MAX_BODY_BYTES } from "./config.ts";
import type { InjectionConfig } from "./inject.ts";
import type { NamespaceLabels } from "./namespaces.ts";
import { answer, type Mode } from "./review.ts";

export interface InjectorServerOptions {
  port: number;
  address?: string;
  tlsCert: string;
  tlsKey: string;
  injection: InjectionConfig;
  namespaces: NamespaceLabels;
  log: Logger;
  maxBodyBytes?: number;
}

export interface InjectorServer {
  readonly port: number;
  /**
   * Answers readyz with 503 at once and goes on serving for `settleMs` (the Service's endpoints drop this
   * pod meanwhile), then stops taking connections and lets requests in flight finish for up to `graceMs`.
   */
  drain(opts?: { settleMs?: number; graceMs?: number }): Promise<void>;
}

const ROUTES: Record<string, Mode> = { "/mutate": "mutate", "/validate": "validate" };

export async function startInjectorServer(opts: InjectorServerOptions): Promise<InjectorServer> {
  const { log } = opts;
  const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const tls = () => ({ cert: readFileSync(opts.tlsCert), key: readFileSync(opts.tlsKey) });
  let draining = false;

  const server: Server = createServer(tls(), (req, res) => {
    handle(req, res).catch((err: unknown) => {
      // Nothing above should throw; if it does, this request fails and the server goes on.
      log.error({ err, url: req.url }, "request failed");
      if (!res.headersSent) send(res, 500, "text/plain", "tproxy-injector: internal error\n");
      else res.destroy();
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 30_000;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0]!;
    if (path === "/healthz" || path === "/readyz") {
      if (req.method !== "GET" && req.method !== "HEAD") return void send(res, 405, "text/plain", "use GET\n", { allow: "GET, HEAD" });
      const ok = path === "/healthz" || !draining;
      return void send(res, ok ? 200 : 503, "text/plain", ok ? "ok\n" : "draining\n");
    }
    const mode = ROUTES[path];
    if (mode === undefined) return void send(res, 404, "text/plain", "tproxy-injector: not found; POST /mutate or /validate, GET /healthz or /readyz\n");
    if (req.method !== "POST") return void send(res, 405, "text/plain", `tproxy-injector: ${path} takes POST with an AdmissionReview\n`, { allow: "POST" });
    const socket = req.socket; // detached from req once the answer is sent: kept to close it
    const body = await readBody(req, maxBody);
    if (body === undefined) {
      log.warn({ path, limit: maxBody }, "body too large, refused");
      // Lingering close, as nginx does. Node closes a `connection: close` answer's socket once the answer is
      // flushed (destroySoon); with the client's body still arriving, that close resets the connection and
      // the client may never read the 413. Instead: send FIN, read and drop what still comes, close after 2 s.
      socket.destroySoon = () => {
        socket.end();
        req.resume();
        const linger = setTimeout(() => socket.destroy(), 2000).unref();
        socket.once("close", () => clearTimeout(linger));
      };
      send(res, 413, "text/plain", `tproxy-injector: request body over ${maxBody} bytes\n`, { connection: "close" });
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(body.toString("utf8"));
    } catch (err) {
      log.warn({ path, err: (err as Error).message }, "malformed JSON refused");
      return void send(res, 400, "text/plain", `tproxy-injector: the body is not JSON: ${(err as Error).message}\n`);
    }
    const a = await answer(mode, json, opts.injection, opts.namespaces);
    if (a.status === 400) {
      log.warn({ path, message: a.message }, "not an AdmissionReview, refused");
      return void send(res, 400, "text/plain", `${a.message}\n`);
    }
    const result = a.log["result"];
    if (result === "locked" || result === "refused") log.info(a.log, `admission ${result}`);
    else log.debug(a.log, `admission ${String(result)}`);
    send(res, 200, "application/json", JSON.stringify(a.review));
  }

  // Reload the key pair when the mounted Secret changes (the kubelet swaps a ..data symlink in the folder).
  let timer: NodeJS.Timeout | undefined;
  const reload = () => {
    try {
      server.setSecureContext(tls());
      log.info({ cert: opts.tlsCert }, "TLS certificate reloaded");
    } catch (err) {
      log.error({ err, cert: opts.tlsCert }, "TLS certificate reload failed; the previous one is kept");
    }
  };
  const names = new Set([basename(opts.tlsCert), basename(opts.tlsKey)]);
  const watchers: FSWatcher[] = [...new Set([dirname(opts.tlsCert), dirname(opts.tlsKey)])].map((dir) =>
    watch(dir, (_event, file) => {
      if (file !== null && !names.has(file) && !file.startsWith("..data")) return; // another file of the folder
      clearTimeout(timer);
      timer = setTimeout(reload, 200); // a Secret update writes several files: load once they are all there
    }),
  );

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port: opts.port, host: opts.address }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  log.info({ port, address: opts.address }, "listening");

  return {
    port,
    drain: async ({ settleMs = 0, graceMs = 10_000 } = {}) => {
      draining = true;
      await new Promise((resolve) => setTimeout(resolve, settleMs));
      for (const w of watchers) w.close();
      clearTimeout(timer);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const deadline = new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref());
      await Promise.race([closed, deadline]);
      server.closeAllConnections();
    },
  };
}

function send(res: ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body), ...headers }).end(body);
}

/**
 * The whole body, or undefined as soon as it exceeds `limit` bytes (checked on content-length first, then
 * as it arrives). Listeners rather than `for await`: leaving that loop early destroys the request and with
 * it the socket, before the 413 is sent.
 */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      req.off("data", onData).off("end", onEnd).off("error", reject);
      chunks.length = 0;
      resolve(undefined);
    };
    const onEnd = () => resolve(Buffer.concat(chunks, size));
    req.on("data", onData).once("end", onEnd).once("error", reject);
  });
}
