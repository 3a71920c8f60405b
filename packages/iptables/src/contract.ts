// What the node side (podwatch, the proxy) and the pod side (sidecar-init) must agree on. Each side
// imports these; none keeps its own copy, so changing one here changes it everywhere at once.

/**
 * The address sidecar-init probes once its pod is locked (TEST-NET-1, RFC 5737: never routed). Its
 * port 80 reaches nothing but the node's proxy, and only after the node redirects the pod, so an
 * answer from it proves the interception.
 */
export const PROBE_ADDRESS = "192.0.2.1";
/** The header the proxy answers the probe with, and the value that tells it is the proxy. */
export const PROBE_HEADER = "x-tproxy-probe";
export const PROBE_VALUE = "ok";
/** The destination ports the node redirects to its transparent proxy, and the lock lets out. */
export const REDIRECTED_PORTS: readonly number[] = Object.freeze([80, 443]);
/** The port the transparent proxy listens on and the node's REDIRECT sends to, unless configured. */
export const DEFAULT_TRANSPARENT_PORT = 15170;
