// tproxy-cni's own keys in its conflist entry, validated with the same parsers as sidecar-init's flags,
// so one value means the same lock in both modes.
import { BACKEND_CHOICES, REDIRECTED_PORTS, type BackendChoice } from "@tproxy/iptables";
import { parseCidr, parsePort, parseResolver, type Cidr, type Resolver } from "../config.ts";
import { ConfigError } from "../errors.ts";
import { CNI_CODE, CniError, type NetConf } from "./spec.ts";

/** Where podwatch answers (its `--cni-socket`), as the chart mounts it on the node. */
export const DEFAULT_SOCKET = "/var/run/tproxy/cni.sock";
/** Namespaces whose pods pass without asking podwatch: the cluster's own, which must start even when tproxy is down. */
export const DEFAULT_EXCLUDED_NAMESPACES: readonly string[] = ["kube-system"];
/** How long ADD keeps asking podwatch before it fails with "try again later" (the informer may lag a new pod). */
export const DEFAULT_ASK_TIMEOUT_MS = 5_000;

export interface PluginSettings {
  /** podwatch's unix socket. Key `socket`; default /var/run/tproxy/cni.sock. */
  readonly socket: string;
  /** Pods of these namespaces pass unchanged, unasked. Key `excludeNamespaces`; default ["kube-system"]. */
  readonly excludeNamespaces: readonly string[];
  /**
   * Resolvers DNS may reach. Key `allowDns`; default: the nameservers of the previous plugin's result
   * (`prevResult.dns.nameservers`); neither: ADD fails (the pod's resolv.conf is the kubelet's, unknown here).
   */
  readonly allowDns: readonly Resolver[] | undefined;
  /** Key `blockCidrs` (e.g. the service range); default none. */
  readonly blockCidrs: readonly Cidr[];
  /** Key `ports`; default 80, 443. */
  readonly ports: readonly number[];
  /** Key `ipv6Intercepted`; default false. */
  readonly ipv6Intercepted: boolean;
  /** Key `iptablesBackend`: auto (detected in the pod's namespace), nft or legacy; default auto. */
  readonly iptablesBackend: BackendChoice;
  /** Key `askTimeoutMs`; default 5000. */
  readonly askTimeoutMs: number;
}

const invalid = (err: unknown): CniError => new CniError(CNI_CODE.invalidConfig, (err as Error).message);

function list(conf: NetConf, key: string): string[] {
  const v = conf[key];
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) throw new CniError(CNI_CODE.invalidConfig, `"${key}" must be a list of strings, got ${JSON.stringify(v)}`);
  return v as string[];
}

/** Reads the plugin's keys; a wrong one fails ADD with code 7 naming the key and the value. */
export function parseSettings(conf: NetConf): PluginSettings {
  try {
    const socket = conf["socket"] ?? DEFAULT_SOCKET;
    if (typeof socket !== "string" || !socket.startsWith("/")) throw new ConfigError(`"socket" must be an absolute path, got ${JSON.stringify(socket)}`);
    const dns = list(conf, "allowDns");
    const rawPorts = conf["ports"] ?? REDIRECTED_PORTS;
    if (!Array.isArray(rawPorts) || rawPorts.length === 0) throw new ConfigError(`"ports" must be a non-empty list of TCP ports, got ${JSON.stringify(rawPorts)}`);
    const ports = [...new Set(rawPorts.map((p) => parsePort(String(p), '"ports"')))];
    const backend = conf["iptablesBackend"] ?? "auto";
    if (!BACKEND_CHOICES.includes(backend as BackendChoice)) throw new ConfigError(`"iptablesBackend" must be one of ${BACKEND_CHOICES.join(", ")}, got ${JSON.stringify(backend)}`);
    const timeout = conf["askTimeoutMs"] ?? DEFAULT_ASK_TIMEOUT_MS;
    if (typeof timeout !== "number" || !(timeout >= 0)) throw new ConfigError(`"askTimeoutMs" must be a number of milliseconds, got ${JSON.stringify(timeout)}`);
    return {
      socket,
      excludeNamespaces: conf["excludeNamespaces"] === undefined ? DEFAULT_EXCLUDED_NAMESPACES : list(conf, "excludeNamespaces"),
      allowDns: dns.length === 0 ? undefined : dns.map((d) => parseResolver(d, '"allowDns"')),
      blockCidrs: list(conf, "blockCidrs").map((c) => parseCidr(c, '"blockCidrs"')),
      ports,
      ipv6Intercepted: conf["ipv6Intercepted"] === true,
      iptablesBackend: backend as BackendChoice,
      askTimeoutMs: timeout,
    };
  } catch (err) {
    throw err instanceof CniError ? err : invalid(err);
  }
}
