// `tproxy run` configuration: flags and environment variables, parsed once into a frozen object.
import { isIP } from "node:net";
import { resolve } from "node:path";
import { DEFAULT_TRANSPARENT_PORT, PROBE_ADDRESS } from "@tproxy/iptables";
import { ConfigError } from "./errors.ts";
import { DEFAULT_MAX_BODY_BYTES } from "./server/body.ts";
import { parseCidr } from "./policy/address-policy.ts";
import type { ConnectionBounds } from "./net/bounds.ts";
import type { LogFormat } from "./observe/log.ts";

/** The bounds on client connections (net/bounds.ts) are part of the configuration, as they are. */
export interface RunConfig extends ConnectionBounds {
  readonly caCert: string;
  readonly caKey: string;
  readonly filter: string;
  /** Transparent listener port (REDIRECT target). Default 15170. */
  readonly transparentPort: number;
  /** Standard (explicit proxy) port; off when undefined. */
  readonly standardPort: number | undefined;
  /** Port of /metrics, /healthz, /readyz. Default 15171. */
  readonly metricsPort: number;
  /** Address the listeners bind to. Default "::" (all IPv4 and IPv6 addresses). */
  readonly listenAddress: string;
  /** Address of the admin endpoints (/metrics, /healthz, /readyz). Default 127.0.0.1: the node's loopback. */
  readonly metricsAddress: string;
  /** Extra CA bundle trusted for upstream servers, besides the system roots. */
  readonly upstreamCa: string | undefined;
  /** Skip upstream certificate verification (off; for debugging only). */
  readonly insecureUpstream: boolean;
  /** What a hook that throws or times out means for its request. Default "deny". */
  readonly onFilterError: "deny" | "allow";
  /** Time budget of one hook call in ms. Default 100. */
  readonly filterTimeoutMs: number;
  /** Audit mode for the whole filter: its answers are logged as would-deny and requests go on. Default off. */
  readonly filterAudit: boolean;
  /** Most bytes of a body a hook may read whole (`flow.request.body()`); larger ones are refused. Default 1 MiB. */
  readonly maxBodyBytes: number;
  /** `--http2 on|off`: offer h2 to clients on TLS (each stream one request, sent upstream over h2 where the server chooses it). Default on. */
  readonly http2: boolean;
  readonly logFormat: LogFormat;
  /** Readiness-probe address answered by the proxy itself (TEST-NET-1). Default 192.0.2.1. */
  readonly probeAddress: string;
  /** Longest wait for in-flight requests on SIGTERM, in ms. Default 25000. */
  readonly drainTimeoutMs: number;
  /** Proxy processes sharing the ports. Default: the CPUs the pod may use (its CPU limit, else its cores). */
  readonly workers: number;
  /** CIDRs no upstream connection may reach (e.g. the cluster's Service range; the chart passes lock.blockCidrs). Default none. */
  readonly blockCidrs: readonly string[];
  /** CIDRs upstream connections may reach even when node-local, link-local or blocked. Default none. */
  readonly allowUpstreamCidrs: readonly string[];
  /** Ports a standard-mode (explicit proxy) request may reach. Default 80 and 443. */
  readonly allowPorts: readonly number[];
  /** podwatch's map of this node's pods by IP, for `flow.client.pod` (identity/pods.ts); undefined: none. */
  readonly podIdentityFile?: string;
}

export interface RawRunOptions {
  caCert?: string;
  caKey?: string;
  filter?: string;
  transparentPort?: string;
  standardPort?: string;
  metricsPort?: string;
  listenAddress?: string;
  metricsAddress?: string;
  upstreamCa?: string;
  insecureUpstream?: boolean;
  onFilterError?: string;
  filterTimeout?: string;
  filterAudit?: boolean;
  /** true (the flag alone), or "on"/"off" (the flag's value, or TPROXY_HTTP2). */
  http2?: boolean | string;
  maxBody?: string;
  logFormat?: string;
  probeAddress?: string;
  drainTimeout?: string;
  workers?: string;
  blockCidr?: string[];
  allowUpstreamCidr?: string[];
  allowPort?: string[];
  handshakeTimeout?: string;
  headerTimeout?: string;
  idleTimeout?: string;
  requestTimeout?: string;
  sendTimeout?: string;
  maxClientConnections?: string;
  maxConnections?: string;
  podIdentityFile?: string;
}

/** A repeatable flag: each value (and an environment variable's value) may hold several, comma-separated. */
function list(values: readonly string[] | undefined): string[] {
  return (values ?? []).flatMap((v) => v.split(",")).map((v) => v.trim()).filter((v) => v !== "");
}

function cidrs(flag: string, values: readonly string[] | undefined): string[] {
  const out = list(values);
  for (const c of out) parseCidr(c, flag); // throws ConfigError naming the flag and the value
  return out;
}

function ports(values: readonly string[] | undefined): number[] {
  const given = list(values);
  if (given.length === 0) return [80, 443];
  return [...new Set(given.map((v) => {
    const n = Number(v);
    if (!/^[1-9]\d{0,4}$/.test(v) || n > 65535) throw new ConfigError(`--allow-port "${v}" is not a port number (1-65535)`);
    return n;
  }))];
}

function port(flag: string, value: string | undefined, fallback: number): number;
function port(flag: string, value: string | undefined, fallback: undefined): number | undefined;
function port(flag: string, value: string | undefined, fallback: number | undefined): number | undefined {
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65535) throw new ConfigError(`${flag} "${value}" is not a port number (0-65535)`);
  return n;
}

function positiveInt(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1) throw new ConfigError(`${flag} "${value}" must be a positive whole number of milliseconds`);
  return n;
}

/** A whole number >= 0 (0 turns the bound off), at most `max`. */
/** A switch given as the flag alone (on), or as on|off (true|false) in its value or its environment variable. */
function onOff(flag: string, value: boolean | string | undefined, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value === "boolean") return value;
  const v = value.trim().toLowerCase();
  if (v === "on" || v === "true" || v === "1") return true;
  if (v === "off" || v === "false" || v === "0") return false;
  throw new ConfigError(`${flag} "${value}" must be on or off`);
}

function bound(flag: string, value: string | undefined, fallback: number, unit: string, max = 2_147_483_647): number {
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > max) throw new ConfigError(`${flag} "${value}" must be a whole number of ${unit} from 0 (off) to ${max}`);
  return n;
}

/** `--max-body`: bytes, at least 1, at most 1 GiB (a buffer per request that reads its body). */
export function parseMaxBody(value: string | undefined): number {
  if (value === undefined || value === "") return DEFAULT_MAX_BODY_BYTES;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 1024 ** 3) throw new ConfigError(`--max-body "${value}" must be a whole number of bytes from 1 to ${1024 ** 3}`);
  return n;
}

function required(flag: string, value: string | undefined): string {
  if (value === undefined || value === "") throw new ConfigError(`${flag} is required`);
  return value;
}

function workers(value: string | undefined, auto: () => number): number {
  if (value === undefined || value === "" || value === "auto") return auto();
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 256) throw new ConfigError(`--workers "${value}" must be "auto" or a whole number from 1 to 256`);
  return n;
}

/**
 * `autoWorkers`: the count for `--workers auto`; `autoMaxConnections`: the cap for `--max-connections auto`
 * given the worker count (0: none).
 */
export function parseRunConfig(raw: RawRunOptions, autoWorkers: () => number = () => 1, autoMaxConnections: (workers: number) => number = () => 0): RunConfig {
  const onFilterError = raw.onFilterError ?? "deny";
  if (onFilterError !== "deny" && onFilterError !== "allow") throw new ConfigError(`--on-filter-error "${onFilterError}" must be deny or allow`);
  const logFormat = raw.logFormat ?? "text";
  if (logFormat !== "text" && logFormat !== "json") throw new ConfigError(`--log-format "${logFormat}" must be text or json`);
  const listenAddress = raw.listenAddress ?? "::";
  if (isIP(listenAddress) === 0) throw new ConfigError(`--listen-address "${listenAddress}" is not an IP address`);
  const metricsAddress = raw.metricsAddress ?? "127.0.0.1";
  if (isIP(metricsAddress) === 0) throw new ConfigError(`--metrics-address "${metricsAddress}" is not an IP address`);
  const probeAddress = raw.probeAddress ?? PROBE_ADDRESS;
  if (isIP(probeAddress) === 0) throw new ConfigError(`--probe-address "${probeAddress}" is not an IP address`);
  const workerCount = workers(raw.workers, autoWorkers);
  return Object.freeze({
    caCert: required("--ca-cert", raw.caCert),
    caKey: required("--ca-key", raw.caKey),
    filter: resolve(required("--filter", raw.filter)),
    transparentPort: port("--transparent-port", raw.transparentPort, DEFAULT_TRANSPARENT_PORT),
    standardPort: port("--standard-port", raw.standardPort, undefined),
    metricsPort: port("--metrics-port", raw.metricsPort, 15171),
    listenAddress,
    metricsAddress,
    upstreamCa: raw.upstreamCa === "" ? undefined : raw.upstreamCa,
    insecureUpstream: raw.insecureUpstream ?? false,
    onFilterError,
    filterTimeoutMs: positiveInt("--filter-timeout", raw.filterTimeout, 100),
    filterAudit: raw.filterAudit ?? false,
    http2: onOff("--http2", raw.http2, true),
    maxBodyBytes: parseMaxBody(raw.maxBody),
    logFormat,
    probeAddress,
    drainTimeoutMs: positiveInt("--drain-timeout", raw.drainTimeout, 25_000),
    workers: workerCount,
    blockCidrs: Object.freeze(cidrs("--block-cidr", raw.blockCidr)),
    allowUpstreamCidrs: Object.freeze(cidrs("--allow-upstream-cidr", raw.allowUpstreamCidr)),
    allowPorts: Object.freeze(ports(raw.allowPort)),
    // Only when given: a configuration without it is the one from before the flag existed.
    ...(raw.podIdentityFile === undefined || raw.podIdentityFile.trim() === "" ? {} : { podIdentityFile: resolve(raw.podIdentityFile.trim()) }),
    handshakeTimeoutMs: bound("--handshake-timeout", raw.handshakeTimeout, 10_000, "milliseconds"),
    headerTimeoutMs: bound("--header-timeout", raw.headerTimeout, 10_000, "milliseconds"),
    idleTimeoutMs: bound("--idle-timeout", raw.idleTimeout, 30_000, "milliseconds"),
    requestTimeoutMs: bound("--request-timeout", raw.requestTimeout, 300_000, "milliseconds"),
    sendTimeoutMs: bound("--send-timeout", raw.sendTimeout, 60_000, "milliseconds"),
    maxClientConnections: bound("--max-client-connections", raw.maxClientConnections, 512, "connections", 1_000_000),
    maxConnections: raw.maxConnections === undefined || raw.maxConnections === "" || raw.maxConnections === "auto"
      ? autoMaxConnections(workerCount)
      : bound("--max-connections", raw.maxConnections, 0, 'connections (or "auto")', 10_000_000),
  });
}
