// Adds a W3C `traceparent` header to every request that has none, and names the proxy's flow id in
// `x-tproxy-flow-id`, so upstream logs can be joined with the proxy's per-request log line.
// Everything passes; combine with a deny rule (see per-path-methods.ts) to filter as well.
//   helm upgrade tproxy charts/tproxy --reuse-values --set-file filter.script=examples/filters/tracing-header.ts
import { randomBytes } from "node:crypto";
import type { Filter } from "@tproxy/tproxy/filter";

function traceparent(): string {
  // version 00, a random trace id and parent id, flags 01 (sampled)
  return `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;
}

export default {
  request(flow) {
    flow.request.headers["x-tproxy-flow-id"] = flow.id;
    if (flow.request.headers["traceparent"] === undefined) {
      flow.request.headers["traceparent"] = traceparent();
    }
  },
} satisfies Filter;
