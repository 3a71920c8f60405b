// `/healthz` and `/metrics` over plain HTTP (the DaemonSet's probes and Prometheus scrape it).
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

export interface Health {
  readonly healthy: boolean;
  readonly [field: string]: unknown;
}

export interface StatusServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function startStatusServer(opts: { port: number; host?: string; registry: Registry; health: () => Health }): Promise<StatusServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
    } else if (path === "/healthz") {
      const health = opts.health();
      res.writeHead(health.healthy ? 200 : 503, { "content-type": "application/json" }).end(JSON.stringify(health) + "\n");
    } else if (path === "/metrics") {
      opts.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": opts.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { "content-type": "text/plain" }).end(String(err) + "\n"),
      );
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: try /healthz or /metrics\n");
    }
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    // SO_REUSEPORT: during a rolling update (maxSurge) the new pod's podwatch binds this port on the
    // same node while the old one still serves it.
    server.listen({ port: opts.port, host: opts.host, reusePort: true }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
