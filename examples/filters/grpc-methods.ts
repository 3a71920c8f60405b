// gRPC methods per service: a gRPC call is a POST to /<package>.<Service>/<Method> with content-type
// application/grpc, one HTTP/2 stream each, so the filter judges calls by path like any request. A refusal
// reaches the gRPC client as PERMISSION_DENIED with this text as its message (the proxy turns its own answers
// to gRPC calls into gRPC statuses; a filter may name another one with a grpc-status header).
//   helm upgrade tproxy charts/tproxy --reuse-values --set-file filter.script=examples/filters/grpc-methods.ts
import type { Filter } from "@tproxy/tproxy/filter";

/** Allowed methods by host: "Service/*" allows every method of a service. */
const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  // Pub/Sub: publish to topics, nothing else (no subscriptions, no admin).
  "pubsub.googleapis.com": ["google.pubsub.v1.Publisher/Publish"],
  // An OpenTelemetry collector: traces and metrics exports.
  "otel-collector.example.com": ["opentelemetry.proto.collector.trace.v1.TraceService/Export", "opentelemetry.proto.collector.metrics.v1.MetricsService/*"],
};

export default {
  request(flow) {
    const { host, path, method, headers } = flow.request;
    const allowed = ALLOWED[host];
    if (allowed === undefined) {
      flow.respond(418, "Access Denied by Administrator", { "content-type": "text/html" });
      return;
    }
    const call = /^\/([\w.]+)\/(\w+)$/.exec(path);
    const isGrpc = /^application\/grpc/.test(String(headers["content-type"] ?? ""));
    if (method !== "POST" || call === null || !isGrpc) {
      flow.respond(403, `only gRPC calls are allowed to ${host}`);
      return;
    }
    const [, service, name] = call;
    if (!allowed.includes(`${service}/${name}`) && !allowed.includes(`${service}/*`)) {
      flow.respond(403, `gRPC method ${service}/${name} is not allowed to this workload`);
    }
  },
} satisfies Filter;
