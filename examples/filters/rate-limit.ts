// A rate limit per pod: each pod may send 5 requests to the API per second (a token bucket per pod, refilled
// continuously); more get 429 with Retry-After. Requests of other hosts are not counted.
//   helm upgrade tproxy charts/tproxy --reuse-values --set-file filter.script=examples/filters/rate-limit.ts
//
// What to know: the buckets live in the filter's memory, so they are per serving thread (a node runs one
// per core) and start full again when a new filter version loads. On a node with 2 threads a pod may get up
// to twice the rate when its connections land on both. A limit that must hold across nodes belongs to the
// API's own gateway; this one caps a runaway pod cheaply, before its requests leave the node.
import type { Filter } from "@tproxy/tproxy/filter";

const HOST = "api.example.com";
const RATE_PER_SECOND = 5;
const BURST = 5;

interface Bucket { tokens: number; at: number }
const buckets = new Map<string, Bucket>();

/** Takes a token from the pod's bucket; false when it is empty. */
function take(key: string, now: number): boolean {
  const b = buckets.get(key) ?? { tokens: BURST, at: now };
  b.tokens = Math.min(BURST, b.tokens + ((now - b.at) / 1000) * RATE_PER_SECOND);
  b.at = now;
  buckets.set(key, b);
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

// Forget pods idle for a minute, so that the map does not grow with every pod the node ever ran.
setInterval(() => {
  const now = Date.now();
  for (const [k, b] of buckets) if (now - b.at > 60_000) buckets.delete(k);
}, 60_000).unref();

export default {
  request(flow) {
    if (flow.request.host !== HOST) return;
    // The pod when known, else its address: a pod cannot shed its limit by being unknown.
    const pod = flow.client.pod;
    const key = pod ? `${pod.namespace}/${pod.name}` : flow.client.address;
    if (!take(key, Date.now())) {
      flow.log(`rate limit: ${key} over ${RATE_PER_SECOND}/s to ${HOST}`);
      flow.respond(429, `tproxy: more than ${RATE_PER_SECOND} requests per second to ${HOST} from ${key}\n`, { "retry-after": "1" });
    }
  },
} satisfies Filter;
