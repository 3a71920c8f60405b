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

// The pod identity file: podwatch writes this node's pods by address into a volume the proxy container
// shares (podwatch's identity.ts), the proxy reads it for `flow.client.pod` (tproxy's identity/pods.ts).

/** The file's format version; a reader refuses others. */
export const POD_IDENTITY_FORMAT = 1;
/** podwatch rewrites the file this often while its watch is healthy (and on every change). */
export const POD_IDENTITY_REFRESH_MS = 5_000;
/** A file older than this names no pod (fail closed): room for five missed rewrites. */
export const POD_IDENTITY_MAX_AGE_MS = 30_000;

/** The file's JSON. `P` is the filter contract's PodIdentity (tproxy's filter types). */
export interface PodIdentityFile<P> {
  readonly version: typeof POD_IDENTITY_FORMAT;
  /** The node whose pods these are. */
  readonly node: string;
  /** Milliseconds since the epoch when podwatch made it (both containers read the node's clock). */
  readonly generatedAt: number;
  /** Canonical address (IPv4, or IPv6 compressed, lower case) → the pod that has it. */
  readonly pods: Readonly<Record<string, P>>;
}

// CNI mode: podwatch answers tproxy-cni on a unix socket in a hostPath folder the installer container
// shares. Only podwatch can tell an uninstall from a restart (its DaemonSet gone or not): on an uninstall
// it leaves this file next to the socket, and the installer, stopping at the same time, then takes the
// plugin out of the node's CNI configuration; without the file the plugin stays (fail closed while
// podwatch is away: ADD fails and the runtime retries).

/** The marker's name: the socket's path with this suffix. */
export const CNI_UNINSTALL_MARKER_SUFFIX = ".uninstall";
