// Per-path method rules: each rule names a host, a path prefix and the methods allowed there; the first
// rule whose host and prefix match decides. A request no rule matches gets the tutorial's 418; a known
// path with a method it does not allow gets 405 with an Allow header.
//   helm upgrade tproxy charts/tproxy --reuse-values --set-file filter.script=examples/filters/per-path-methods.ts
import type { Filter } from "@tproxy/tproxy/filter";

interface Rule {
  readonly host: string;
  readonly pathPrefix: string;
  readonly methods: readonly string[];
}

const RULES: readonly Rule[] = [
  // The tutorial's public bucket: read only.
  { host: "storage.googleapis.com", pathPrefix: "/solutions-public-assets/", methods: ["GET", "HEAD"] },
  // A package mirror: read only.
  { host: "deb.debian.org", pathPrefix: "/", methods: ["GET", "HEAD"] },
  // An internal API: reads anywhere, writes only under /v1/reports/.
  { host: "api.example.com", pathPrefix: "/v1/reports/", methods: ["GET", "HEAD", "POST", "PUT"] },
  { host: "api.example.com", pathPrefix: "/v1/", methods: ["GET", "HEAD"] },
];

export default {
  request(flow) {
    const { host, path, method } = flow.request;
    const rule = RULES.find((r) => r.host === host.toLowerCase() && path.startsWith(r.pathPrefix));
    if (rule === undefined) {
      flow.respond(418, "Access Denied by Administrator", { "content-type": "text/html" });
    } else if (!rule.methods.includes(method)) {
      flow.respond(405, `Method ${method} not allowed on ${rule.host}${rule.pathPrefix}`, {
        "content-type": "text/plain",
        allow: rule.methods.join(", "),
      });
    }
  },
} satisfies Filter;
