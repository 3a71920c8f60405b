// The tutorial's filter: a pod may fetch the public bucket below and nothing else.
// Edit this file (or `helm upgrade --set-file filter.script=my-filter.ts`); the proxy reloads it live.
import type { Filter } from "@tproxy/tproxy/filter";

const ALLOWED = /^https:\/\/storage\.googleapis\.com\/solutions-public-assets\//;

export default {
  request(flow) {
    if (!ALLOWED.test(flow.request.url)) {
      flow.respond(418, "Access Denied by Administrator", { "content-type": "text/html" });
    }
  },
} satisfies Filter;
