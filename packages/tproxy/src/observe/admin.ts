// The admin endpoints, served by the supervisor (supervisor.ts) for all its serving threads:
// /metrics (Prometheus), /healthz (alive), /readyz (ready to filter).
import http from "node:http";

export interface AdminSources {
  metrics(): Promise<{ contentType: string; body: string }>;
  readiness(): { ready: boolean; text: string };
}

export function createAdminServer(sources: AdminSources): http.Server {
  const text = (res: http.ServerResponse, status: number, body: string): void => {
    res.writeHead(status, { "content-type": "text/plain" });
    res.end(body);
  };
  return http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/metrics") {
      sources.metrics().then(
        ({ contentType, body }) => {
          res.writeHead(200, { "content-type": contentType });
          res.end(body);
        },
        (err: Error) => text(res, 500, `metrics unavailable: ${err.message}\n`),
      );
    } else if (path === "/healthz") {
      text(res, 200, "ok\n");
    } else if (path === "/readyz") {
      const { ready, text: body } = sources.readiness();
      text(res, ready ? 200 : 503, body);
    } else {
      text(res, 404, "not found: try /metrics, /healthz or /readyz\n");
    }
  });
}
