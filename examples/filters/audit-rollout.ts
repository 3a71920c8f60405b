// Rolling out a stricter rule without breaking anyone: the rules in force deny, the new rule only says what it
// would deny (audit). Watch `tproxy_requests_total{decision="would-deny"}` and the log lines
// `... would-deny (audit: new-host-allowlist; would answer 418)`; when nothing legitimate shows up there,
// delete the flow.audit() line and the new rule is in force. (`tproxy run --filter-audit`, chart value
// filter.audit, does the same for a whole filter.)
//   helm upgrade tproxy charts/tproxy --reuse-values --set-file filter.script=examples/filters/audit-rollout.ts
import type { Filter } from "@tproxy/tproxy/filter";

// In force: no writes over plain HTTP.
function enforced(flow: Parameters<NonNullable<Filter["request"]>>[0]): boolean {
  const { scheme, method } = flow.request;
  if (scheme === "http" && method !== "GET" && method !== "HEAD") {
    flow.respond(403, "writes only over HTTPS\n");
    return true;
  }
  return false;
}

// Being rolled out: only these hosts.
const NEW_ALLOWLIST = new Set(["storage.googleapis.com", "api.example.com", "deb.debian.org"]);

export default {
  request(flow) {
    if (enforced(flow)) return;
    if (!NEW_ALLOWLIST.has(flow.request.host)) {
      flow.audit("new-host-allowlist"); // delete this line to enforce
      flow.respond(418, "Access Denied by Administrator", { "content-type": "text/html" });
    }
  },
} satisfies Filter;
