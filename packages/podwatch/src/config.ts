// Command-line flags and environment → one frozen, validated configuration.
import { isIP } from "node:net";
import { BACKEND_CHOICES, DEFAULT_TRANSPARENT_PORT, type BackendChoice } from "@tproxy/iptables";
import { canonicalIp, type Family } from "./desired.ts";
import { ConfigError } from "./errors.ts";

export const DEFAULT_ANNOTATION = "initializer.kubernetes.io/tproxy";
export const DEFAULT_PROXY_PORT = DEFAULT_TRANSPARENT_PORT;
/** Detect the node's backend as kube-proxy's image does (see @tproxy/iptables detect.ts). */
export const DEFAULT_IPTABLES_BACKEND: BackendChoice = "auto";
export const DEFAULT_RESYNC = "60s";
export const DEFAULT_METRICS_PORT = 15172;
/** The node's loopback: the kubelet's probes reach it (host: 127.0.0.1), pods and other hosts do not. */
export const DEFAULT_METRICS_ADDRESS = "127.0.0.1";
/** The name the chart's init container snippet gives the lock. */
export const DEFAULT_INIT_CONTAINER = "tproxy";

export interface PodwatchConfig {
  /** This node's name (`spec.nodeName` of the pods to watch). Flag `--node-name`, env `NODE_NAME`; required. */
  readonly nodeName: string;
  /** Opt-in annotation key; its value must be `"true"`. Default `initializer.kubernetes.io/tproxy`. */
  readonly annotation: string;
  /**
   * Name of the lock's init container; a pod whose spec has one of this name is locked whatever its
   * annotations say (`spec.initContainers` cannot change). Flag `--init-container`, env
   * `TPROXY_INIT_CONTAINER`; default `tproxy`.
   */
  readonly initContainer: string;
  /** Resolvers locked pods may query, canonical; empty (default): port 53 to any address. */
  readonly allowDns: readonly string[];
  /** Standard-mode proxy port on the node that locked pods may reach; default none. */
  readonly standardPort: number | undefined;
  /** Namespaces to watch; empty (default) watches all. */
  readonly namespaces: readonly string[];
  /** Transparent proxy port the rules redirect to; default 15170. */
  readonly proxyPort: number;
  /**
   * A node address per family (canonical) the nat rules DNAT to instead of REDIRECT; a family without one
   * keeps REDIRECT. Flag `--redirect-to-address` (repeatable, one per family), env
   * `TPROXY_REDIRECT_TO_ADDRESS` (comma-separated); default none.
   */
  readonly redirectTo: Readonly<Partial<Record<Family, string>>>;
  /** Period of the drift-repairing resync, in ms; default 60 000. */
  readonly resyncMs: number;
  /** Port of `/healthz` and `/metrics`; default 15172 (0 picks a free one). */
  readonly metricsPort: number;
  /** Address `/healthz` and `/metrics` listen on; default 127.0.0.1 (the node's loopback: podwatch runs in its network). */
  readonly metricsAddress: string;
  /** iptables backend the node's rules are written with: auto (detected, default), nft or legacy. */
  readonly iptablesBackend: BackendChoice;
  /**
   * The DaemonSet that runs this podwatch (`--daemonset namespace/name`, env `TPROXY_DAEMONSET`; the chart
   * sets it). On SIGTERM, when it is gone or being deleted, the node's chains are taken away; undefined:
   * never (every stop is a restart).
   */
  readonly daemonSet: { readonly namespace: string; readonly name: string } | undefined;
  /**
   * Where this node's pods are published by IP for the proxy (`flow.client.pod`; see identity.ts). Flag
   * `--pod-identity-file`, env `TPROXY_POD_IDENTITY_FILE`; undefined (default): not published.
   */
  readonly podIdentityFile: string | undefined;
  /**
   * Unix socket where tproxy-cni (CNI mode) asks whether a pod is locked (`--cni-socket`, env
   * `TPROXY_CNI_SOCKET`); undefined (default): not served.
   */
  readonly cniSocket: string | undefined;
}

/** Raw values as commander hands them over (strings from flags or environment). */
export interface RawOptions {
  nodeName?: string;
  annotation?: string;
  initContainer?: string;
  allowDns?: readonly string[] | string;
  standardPort?: string | number;
  namespace?: readonly string[] | string;
  proxyPort?: string | number;
  redirectToAddress?: readonly string[] | string;
  resync?: string;
  metricsPort?: string | number;
  metricsAddress?: string;
  iptablesBackend?: string;
  daemonset?: string;
  podIdentityFile?: string;
  cniSocket?: string;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const ANNOTATION_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

export function parseConfig(raw: RawOptions): PodwatchConfig {
  const nodeName = (raw.nodeName ?? "").trim();
  if (nodeName === "") throw new ConfigError("--node-name (or NODE_NAME) is required: the name of the node this podwatch runs on");
  if (!DNS_SUBDOMAIN.test(nodeName)) throw new ConfigError(`--node-name ${JSON.stringify(nodeName)} is not a valid node name (lower-case DNS subdomain expected)`);

  const annotation = raw.annotation ?? DEFAULT_ANNOTATION;
  if (!validAnnotationKey(annotation)) {
    throw new ConfigError(`--annotation ${JSON.stringify(annotation)} is not a valid annotation key (expected [prefix/]name, e.g. ${DEFAULT_ANNOTATION})`);
  }

  const initContainer = (raw.initContainer ?? DEFAULT_INIT_CONTAINER).trim();
  if (!DNS_LABEL.test(initContainer)) {
    throw new ConfigError(`--init-container ${JSON.stringify(raw.initContainer)} is not a valid container name (lower-case DNS label expected, e.g. ${DEFAULT_INIT_CONTAINER})`);
  }

  const dnsValues = typeof raw.allowDns === "string" ? [raw.allowDns] : (raw.allowDns ?? []);
  const allowDns: string[] = [];
  for (const v of dnsValues.flatMap((d) => d.split(",")).map((d) => d.trim()).filter((d) => d !== "")) {
    const ip = canonicalIp(v);
    if (!ip) throw new ConfigError(`--allow-dns ${JSON.stringify(v)} is not an IP address (expected e.g. 10.96.0.10 or fd00::a)`);
    if (!allowDns.includes(ip.ip)) allowDns.push(ip.ip);
  }

  const nsValues = typeof raw.namespace === "string" ? [raw.namespace] : (raw.namespace ?? []);
  const namespaces = [...new Set(nsValues.flatMap((v) => v.split(",")).map((v) => v.trim()).filter((v) => v !== ""))];
  for (const ns of namespaces) {
    if (!DNS_LABEL.test(ns)) throw new ConfigError(`--namespace ${JSON.stringify(ns)} is not a valid namespace name (lower-case DNS label expected)`);
  }

  return Object.freeze({
    nodeName,
    annotation,
    initContainer,
    allowDns: Object.freeze(allowDns),
    standardPort: raw.standardPort === undefined || String(raw.standardPort).trim() === "" ? undefined : parsePort("--standard-port", raw.standardPort, 1),
    namespaces: Object.freeze(namespaces),
    proxyPort: parsePort("--proxy-port", raw.proxyPort ?? DEFAULT_PROXY_PORT, 1),
    redirectTo: parseRedirectTo(raw.redirectToAddress),
    resyncMs: parseDuration("--resync", raw.resync ?? DEFAULT_RESYNC),
    metricsPort: parsePort("--metrics-port", raw.metricsPort ?? DEFAULT_METRICS_PORT, 0),
    metricsAddress: parseAddress("--metrics-address", raw.metricsAddress ?? DEFAULT_METRICS_ADDRESS),
    iptablesBackend: parseBackend(raw.iptablesBackend ?? DEFAULT_IPTABLES_BACKEND),
    daemonSet: parseDaemonSet(raw.daemonset),
    podIdentityFile: parseFilePath("--pod-identity-file", raw.podIdentityFile),
    cniSocket: parseFilePath("--cni-socket", raw.cniSocket),
  });
}

/** `--redirect-to-address`: at most one address of each family (a rule has one destination). */
function parseRedirectTo(raw: RawOptions["redirectToAddress"]): PodwatchConfig["redirectTo"] {
  const values = typeof raw === "string" ? [raw] : (raw ?? []);
  const out: Partial<Record<Family, string>> = {};
  for (const v of values.flatMap((d) => d.split(",")).map((d) => d.trim()).filter((d) => d !== "")) {
    const ip = canonicalIp(v);
    if (!ip) throw new ConfigError(`--redirect-to-address ${JSON.stringify(v)} is not an IP address (expected the node's address, e.g. 10.0.0.5 or fd00::5)`);
    const had = out[ip.family];
    if (had !== undefined && had !== ip.ip) {
      throw new ConfigError(`--redirect-to-address ${JSON.stringify(v)}: ${had} is already the ${ip.family === "ipv4" ? "IPv4" : "IPv6"} address (one per family)`);
    }
    out[ip.family] = ip.ip;
  }
  return Object.freeze(out);
}

function parseDaemonSet(value: string | undefined): PodwatchConfig["daemonSet"] {
  const text = (value ?? "").trim();
  if (text === "") return undefined;
  const [namespace = "", name = "", extra] = text.split("/");
  if (extra !== undefined || !DNS_LABEL.test(namespace) || !DNS_SUBDOMAIN.test(name)) {
    throw new ConfigError(`--daemonset ${JSON.stringify(value)} is not namespace/name of a DaemonSet (e.g. tproxy/tproxy)`);
  }
  return Object.freeze({ namespace, name });
}

function parseFilePath(flag: string, value: string | undefined): string | undefined {
  const text = (value ?? "").trim();
  if (text === "") return undefined;
  if (!text.startsWith("/") || text.endsWith("/")) throw new ConfigError(`${flag} ${JSON.stringify(value)} is not an absolute file path (e.g. /run/tproxy/pods.json)`);
  return text;
}

function parseAddress(flag: string, value: string): string {
  if (isIP(value.trim()) === 0) throw new ConfigError(`${flag} ${JSON.stringify(value)} is not an IP address (e.g. 127.0.0.1, or 0.0.0.0 for every address)`);
  return value.trim();
}

function parseBackend(value: string): BackendChoice {
  const v = value.trim();
  const found = BACKEND_CHOICES.find((b) => b === v);
  if (found === undefined) throw new ConfigError(`--iptables-backend ${JSON.stringify(value)} is not a backend (expected ${BACKEND_CHOICES.join(", ")})`);
  return found;
}

function validAnnotationKey(key: string): boolean {
  const parts = key.split("/");
  if (parts.length > 2) return false;
  const name = parts.at(-1) ?? "";
  if (!ANNOTATION_NAME.test(name)) return false;
  return parts.length === 1 || DNS_SUBDOMAIN.test(parts[0] ?? "");
}

function parsePort(flag: string, value: string | number, min: number): number {
  const text = String(value).trim();
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isInteger(n) || n < min || n > 65535) {
    throw new ConfigError(`${flag} ${JSON.stringify(String(value))} is not a port (expected an integer ${min}-65535)`);
  }
  return n;
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** "60s", "1m30s", "500ms", "2h" → milliseconds. */
export function parseDuration(flag: string, value: string): number {
  const text = value.trim();
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    total += Number(m[1]) * (UNITS[m[2] ?? ""] ?? Number.NaN);
    matched = re.lastIndex;
  }
  if (text === "" || matched !== text.length || !(total >= 100)) {
    throw new ConfigError(`${flag} ${JSON.stringify(value)} is not a duration of at least 100ms (expected e.g. 60s, 1m30s, 500ms)`);
  }
  return Math.round(total);
}
