// An allowlist kept in a file of its own: the platform team edits allowlist.json (a `filter.files` entry of
// the chart: `--set-file filter.files.allowlist\.json=examples/filters/allowlist.json`), the filter's code
// stays as it is. Every file of the filter's directory is part of its version: a change to the JSON alone
// is a new version, checked and reloaded like a change to the code.
//   helm upgrade tproxy charts/tproxy --reuse-values --set-file filter.script=examples/filters/allowlist-file.ts \
//     --set-file 'filter.files.allowlist\.json=examples/filters/allowlist.json'
//
// The import is typed from the file itself (`resolveJsonModule`): a field spelled wrong here is a type error
// that `tproxy filter check` and the proxy's own check refuse.
import type { Filter } from "@tproxy/tproxy/filter";
import allowlist from "./allowlist.json";

/** host → path prefixes it may be fetched under (HTTPS only). */
const RULES = new Map(allowlist.hosts.map((h) => [h.host, h.pathPrefixes] as const));

export default {
  request(flow) {
    const prefixes = RULES.get(flow.request.host);
    const allowed = flow.request.scheme === "https" && prefixes !== undefined && prefixes.some((p) => flow.request.path.startsWith(p));
    if (!allowed) flow.respond(403, `tproxy: ${flow.request.url} is not on the allowlist (${allowlist.owner})\n`);
  },
} satisfies Filter;
