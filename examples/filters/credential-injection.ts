// Credential injection: pods call an API without holding its token; the proxy adds it on the way out, for that
// API's host only, over HTTPS only. The token is a Secret mounted next to the filter (chart value
// filter.secret.name: /etc/tproxy/filter-secret/<key>, read-only, in the proxy container alone).
// A pod's own Authorization header for that host is replaced, never forwarded.
//   kubectl -n tproxy create secret generic api-token --from-file=token=./token
//   helm upgrade tproxy charts/tproxy --reuse-values --set filter.secret.name=api-token \
//     --set-file filter.script=examples/filters/credential-injection.ts
// TPROXY_FILTER_SECRET_DIR points elsewhere for `tproxy filter test` (examples/filters/testdata/filter-secret).
import { readFileSync, statSync } from "node:fs";
import type { Filter } from "@tproxy/tproxy/filter";

const API_HOST = "api.example.com";
const TOKEN_FILE = `${process.env.TPROXY_FILTER_SECRET_DIR ?? "/etc/tproxy/filter-secret"}/token`;

// The kubelet swaps a Secret volume's files when the Secret changes: the token is read again when the
// file's modification time changes (one stat per request to the API, no read).
let cached: { mtimeMs: number; token: string } | undefined;
function token(): string | undefined {
  try {
    const { mtimeMs } = statSync(TOKEN_FILE);
    if (cached?.mtimeMs !== mtimeMs) cached = { mtimeMs, token: readFileSync(TOKEN_FILE, "utf8").trim() };
    return cached.token;
  } catch {
    return undefined;
  }
}

export default {
  request(flow) {
    const { host, scheme } = flow.request;
    if (host !== API_HOST) return;
    if (scheme !== "https") {
      flow.respond(403, `${API_HOST} only over HTTPS: its token is never sent in clear\n`);
      return;
    }
    const t = token();
    if (t === undefined) {
      flow.log(`credential-injection: cannot read ${TOKEN_FILE}; request refused`);
      flow.respond(503, "the proxy has no credential for this API\n");
      return;
    }
    flow.request.headers["authorization"] = `Bearer ${t}`;
  },
} satisfies Filter;
