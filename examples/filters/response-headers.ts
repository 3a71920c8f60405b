// Response-header rules: what comes back from the internet is trimmed before a pod sees it.
//  - cookies set by outside servers are dropped (pods are API clients, not browsers);
//  - headers that reveal the server's software are removed;
//  - executables and archives from hosts outside the allowed download list are refused (by content type,
//    which the server declares: a lying server is not stopped by this, a careless download is).
//   helm upgrade tproxy charts/tproxy --reuse-values --set-file filter.script=examples/filters/response-headers.ts
import type { Filter } from "@tproxy/tproxy/filter";

const DROPPED = ["set-cookie", "server", "x-powered-by"];
const DOWNLOAD_HOSTS = new Set(["deb.debian.org", "storage.googleapis.com"]);
const BINARY_TYPES = /^application\/(octet-stream|x-msdownload|x-executable|zip|x-tar|gzip)\b/i;

export default {
  response(flow) {
    const response = flow.response!;
    for (const name of DROPPED) delete response.headers[name];
    const type = String(response.headers["content-type"] ?? "");
    if (BINARY_TYPES.test(type) && !DOWNLOAD_HOSTS.has(flow.request.host)) {
      flow.respond(451, `downloads of ${type} from ${flow.request.host} are not allowed\n`);
    }
  },
} satisfies Filter;
