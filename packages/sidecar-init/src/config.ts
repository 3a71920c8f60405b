// Configuration: command-line flags, each with an environment variable as fallback (the tutorial's
// ALLOW_DNS, BLOCK_SVC_CIDR and NODE_NAME among them), parsed once into a frozen, typed object.
// A flag given on the command line wins over its variable; defaults apply when neither is set.
import { isIP } from "node:net";
import { BACKEND_CHOICES, PROBE_ADDRESS, REDIRECTED_PORTS, type BackendChoice } from "@tproxy/iptables";
import { ConfigError } from "./errors.ts";

export type Family = "ipv4" | "ipv6";
/** iptables backend: auto (follow the namespace, as podwatch follows the node), nft or legacy. */
export type Backend = BackendChoice;
export const BACKENDS: readonly Backend[] = BACKEND_CHOICES;
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** A validated address block. `text` is what the user wrote, normalised to `address/prefix`. */
export interface Cidr {
  readonly family: Family;
  readonly address: string;
  readonly prefix: number;
  readonly text: string;
}

/** Where the node's standard-mode proxy port is: an address, or a name resolved at start. */
export type NodeTarget = { readonly kind: "ip"; readonly ip: string; readonly family: Family } | { readonly kind: "name"; readonly name: string };

/** A resolver DNS may reach. `iface` is the scope of a scoped address (`fe80::1%eth0`): the rule then names that interface. */
export interface Resolver {
  readonly ip: string;
  readonly family: Family;
  readonly iface?: string;
}

/**
 * Which resolvers DNS (udp+tcp 53) may reach: the nameservers of the pod's own resolv.conf (the default),
 * the addresses given, or any address (only when asked for by `--allow-dns any`).
 */
export type DnsAllow =
  | { readonly kind: "resolv-conf" }
  | { readonly kind: "list"; readonly resolvers: readonly Resolver[] }
  | { readonly kind: "any" };

/** lock: write the lock, then wait (the init container has NET_ADMIN). wait: the CNI plugin locked the pod; only check and wait (no capability). */
export type Mode = "lock" | "wait";
export const MODES: readonly Mode[] = ["lock", "wait"];

export interface Config {
  /** lock (default) or wait (CNI mode: no rules written, the lock is checked, then the wait). */
  readonly mode: Mode;
  /** Resolvers DNS may reach. Default: the nameservers of `resolvConf`; `--allow-dns any`: every address. */
  readonly allowDns: DnsAllow;
  /** The resolv.conf whose nameservers DNS may reach when no --allow-dns is given. Default /etc/resolv.conf. */
  readonly resolvConf: string;
  /** Blocks refused even on the allowed ports (e.g. the cluster's service range). Default none. */
  readonly blockCidrs: readonly Cidr[];
  /** The node whose standard-mode port is allowed; undefined: standard mode not used. Default undefined. */
  readonly node: NodeTarget | undefined;
  /** The node's standard (explicit) proxy port, allowed only together with a node. Default 1080. */
  readonly standardPort: number;
  /** TCP destination ports allowed out (the node redirects them to the proxy). Default 80, 443. */
  readonly ports: readonly number[];
  /** The node intercepts this pod's IPv6 too: allow the ports over IPv6 as well. Default false (IPv6 refused). */
  readonly ipv6Intercepted: boolean;
  /** Wait until the node's interception answers before exiting 0. Default true. */
  readonly wait: boolean;
  /** How long to wait, in milliseconds. Default 60 000. */
  readonly waitTimeoutMs: number;
  /** TEST-NET address whose port 80 only the node's proxy answers (after the redirect). Default 192.0.2.1. */
  readonly probeAddress: string;
  /** Which iptables to drive. Default auto. */
  readonly backend: Backend;
  /** Print the iptables-restore input and change nothing. Default false. */
  readonly dryRun: boolean;
  /** Log level of the structured log (stderr). Default info. */
  readonly logLevel: LogLevel;
}

/** Raw values as commander hands them over (strings, lists of strings, booleans), before validation. */
export interface RawOptions {
  mode?: string;
  allowDns?: string[];
  resolvConf?: string;
  blockCidr?: string[];
  nodeIp?: string;
  nodeName?: string;
  standardPort?: string;
  ports?: string;
  ipv6Intercepted?: boolean;
  wait?: boolean;
  waitTimeout?: string;
  probeAddress?: string;
  iptablesBackend?: string;
  dryRun?: boolean;
  logLevel?: string;
}

/** Flag and environment variable of every option: the single table --help and error messages use. */
export const OPTION_NAMES = Object.freeze({
  mode: { flag: "--mode", env: "LOCK_MODE" },
  allowDns: { flag: "--allow-dns", env: "ALLOW_DNS" },
  resolvConf: { flag: "--resolv-conf", env: "RESOLV_CONF" },
  blockCidr: { flag: "--block-cidr", env: "BLOCK_SVC_CIDR" },
  nodeIp: { flag: "--node-ip", env: "NODE_IP" },
  nodeName: { flag: "--node-name", env: "NODE_NAME" },
  standardPort: { flag: "--standard-port", env: "STANDARD_PORT" },
  ports: { flag: "--ports", env: "PORTS" },
  ipv6Intercepted: { flag: "--ipv6-intercepted", env: "IPV6_INTERCEPTED" },
  wait: { flag: "--no-wait", env: "NO_WAIT" },
  waitTimeout: { flag: "--wait-timeout", env: "WAIT_TIMEOUT" },
  probeAddress: { flag: "--probe-address", env: "PROBE_ADDRESS" },
  iptablesBackend: { flag: "--iptables-backend", env: "IPTABLES_BACKEND" },
  dryRun: { flag: "--dry-run", env: "DRY_RUN" },
  logLevel: { flag: "--log-level", env: "LOG_LEVEL" },
} satisfies Record<keyof RawOptions, { flag: string; env: string }>);

type Key = keyof RawOptions;

export const DEFAULTS = Object.freeze({
  resolvConf: "/etc/resolv.conf",
  standardPort: 1080,
  ports: REDIRECTED_PORTS,
  waitTimeoutMs: 60_000,
  probeAddress: PROBE_ADDRESS,
  backend: "auto" as Backend,
  logLevel: "info" as LogLevel,
  mode: "lock" as Mode,
});

/** One value with where it came from, for error messages. */
interface Sourced<T> {
  readonly value: T;
  readonly from: string;
}

function fromFlag(key: Key): string {
  return OPTION_NAMES[key].flag;
}

function fromEnv(key: Key): string {
  return `${OPTION_NAMES[key].env} (environment, for ${OPTION_NAMES[key].flag})`;
}

function pick(key: Key, cli: string | undefined, env: NodeJS.ProcessEnv): Sourced<string> | undefined {
  if (cli !== undefined) return { value: cli, from: fromFlag(key) };
  const e = env[OPTION_NAMES[key].env];
  if (e !== undefined && e.trim() !== "") return { value: e.trim(), from: fromEnv(key) };
  return undefined;
}

/** Lists: repeat the flag or separate by commas/spaces; the variable takes commas/spaces. */
function pickList(key: Key, cli: readonly string[] | undefined, env: NodeJS.ProcessEnv): Sourced<string[]> {
  const split = (s: string): string[] => s.split(/[\s,]+/).filter((x) => x !== "");
  if (cli !== undefined && cli.length > 0) return { value: cli.flatMap(split), from: fromFlag(key) };
  const e = env[OPTION_NAMES[key].env];
  return { value: e === undefined ? [] : split(e), from: fromEnv(key) };
}

function pickBool(key: Key, cli: boolean | undefined, env: NodeJS.ProcessEnv): boolean {
  if (cli !== undefined) return cli;
  const raw = env[OPTION_NAMES[key].env];
  if (raw === undefined || raw.trim() === "") return false;
  const v = raw.trim().toLowerCase();
  if (["1", "true", "yes", "on"].includes(v)) return true;
  if (["0", "false", "no", "off"].includes(v)) return false;
  throw new ConfigError(`${fromEnv(key)}: invalid value ${JSON.stringify(raw)}, expected true or false`);
}

function bad(from: string, value: string, expected: string): ConfigError {
  return new ConfigError(`${from}: invalid value ${JSON.stringify(value)}, expected ${expected}`);
}

function oneOf<T extends string>(v: Sourced<string> | undefined, choices: readonly T[], fallback: T): T {
  if (v === undefined) return fallback;
  if (!(choices as readonly string[]).includes(v.value)) throw bad(v.from, v.value, `one of ${choices.join(", ")}`);
  return v.value as T;
}

function familyOf(ip: string): Family | undefined {
  const v = isIP(ip);
  return v === 4 ? "ipv4" : v === 6 ? "ipv6" : undefined;
}

/** Parses an IPv4 or IPv6 address (no prefix, no zone). */
export function parseIp(value: string, from: string): { ip: string; family: Family } {
  const family = value.includes("%") ? undefined : familyOf(value);
  if (family === undefined) throw bad(from, value, "an IPv4 or IPv6 address such as 10.96.0.10 or fd00::a");
  return { ip: value, family };
}

/**
 * Parses a resolver address. A scoped IPv6 address (`fe80::1%eth0`, as resolv.conf may list a link-local
 * resolver) keeps its interface name, so the rule allows that address on that interface only; a numeric
 * scope (`%2`) is refused, because the rule needs the interface's name.
 */
export function parseResolver(value: string, from: string): Resolver {
  const expected = "an IPv4 or IPv6 address such as 10.96.0.10 or fd00::a (a scoped one as fe80::1%eth0)";
  const [address = "", iface, ...rest] = value.split("%");
  const family = rest.length === 0 ? familyOf(address) : undefined;
  if (family === undefined) throw bad(from, value, expected);
  if (iface === undefined) return { ip: address, family };
  if (family !== "ipv6" || !/^[A-Za-z_][\w.@-]{0,14}$/.test(iface)) {
    throw bad(from, value, `${expected}, with the interface named (not numbered) after the %`);
  }
  return { ip: address, family, iface };
}

/** Parses `address/prefix` (IPv4 or IPv6); a bare address means a single host. */
export function parseCidr(value: string, from: string): Cidr {
  const expected = "a CIDR such as 10.96.0.0/12 or fd00:10:96::/112";
  const [address = "", prefixText, ...rest] = value.split("/");
  const family = rest.length === 0 && !address.includes("%") ? familyOf(address) : undefined;
  if (family === undefined) throw bad(from, value, expected);
  const max = family === "ipv4" ? 32 : 128;
  if (prefixText === undefined) return { family, address, prefix: max, text: `${address}/${max}` };
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) throw bad(from, value, `${expected} (prefix 0-${max})`);
  const prefix = Number(prefixText);
  return { family, address, prefix, text: `${address}/${prefix}` };
}

export function parsePort(value: string, from: string): number {
  const n = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= 65535)) throw bad(from, value, "a TCP port 1-65535");
  return n;
}

/** Durations as `500ms`, `60s`, `2m`, `1h`; positive. */
export function parseDuration(value: string, from: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(value);
  const ms = m ? Number(m[1]) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[m[2] as "ms" | "s" | "m" | "h"] : NaN;
  if (!(ms > 0)) throw bad(from, value, "a positive duration such as 60s, 500ms or 2m");
  return Math.round(ms);
}

/** Validates everything once; throws ConfigError naming the flag (or variable), the value and what was expected. */
export function parseConfig(raw: RawOptions, env: NodeJS.ProcessEnv = process.env): Config {
  const dns = pickList("allowDns", raw.allowDns, env);
  let allowDns: DnsAllow;
  if (dns.value.length === 0) allowDns = { kind: "resolv-conf" };
  else if (dns.value.some((v) => v.toLowerCase() === "any")) {
    if (dns.value.length > 1) throw bad(dns.from, dns.value.join(","), `either "any" alone or resolver addresses, not both`);
    allowDns = { kind: "any" };
  } else {
    const resolvers = dns.value.map((v) => parseResolver(v, dns.from));
    const unique = resolvers.filter((r, i) => resolvers.findIndex((o) => o.ip === r.ip && o.iface === r.iface) === i);
    allowDns = { kind: "list", resolvers: Object.freeze(unique.map((r) => Object.freeze(r))) };
  }
  const rc = pick("resolvConf", raw.resolvConf, env);
  const resolvConf = rc?.value ?? DEFAULTS.resolvConf;
  if (resolvConf === "") throw bad(rc?.from ?? "--resolv-conf", resolvConf, "a file path");

  const block = pickList("blockCidr", raw.blockCidr, env);
  const blockCidrs = block.value.map((v) => parseCidr(v, block.from)).filter((c, i, all) => all.findIndex((o) => o.text === c.text) === i);

  const nodeIp = pick("nodeIp", raw.nodeIp, env);
  const nodeName = pick("nodeName", raw.nodeName, env);
  if (raw.nodeIp !== undefined && raw.nodeName !== undefined) {
    throw new ConfigError(`--node-ip and --node-name both given ("${raw.nodeIp}", "${raw.nodeName}"): use one`);
  }
  // A flag beats any variable; between the two variables NODE_IP wins.
  const useName = raw.nodeName !== undefined || nodeIp === undefined;
  let node: NodeTarget | undefined;
  if (!useName && nodeIp) {
    const { ip, family } = parseIp(nodeIp.value, nodeIp.from);
    node = { kind: "ip", ip, family };
  } else if (nodeName) {
    const literal = familyOf(nodeName.value);
    if (literal) node = { kind: "ip", ip: nodeName.value, family: literal };
    else if (/^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(nodeName.value)) node = { kind: "name", name: nodeName.value };
    else throw bad(nodeName.from, nodeName.value, "a node name (DNS name) or an IP address");
  }

  const sp = pick("standardPort", raw.standardPort, env);
  const standardPort = sp ? parsePort(sp.value, sp.from) : DEFAULTS.standardPort;
  if (sp && node === undefined) {
    throw new ConfigError(`${sp.from} ${sp.value} given without --node-ip or --node-name (NODE_NAME): the port is allowed only on the node's address`);
  }

  const p = pick("ports", raw.ports, env);
  const ports = p ? [...new Set(p.value.split(/[\s,]+/).filter((x) => x !== "").map((v) => parsePort(v, p.from)))] : [...DEFAULTS.ports];
  if (ports.length === 0) throw bad(p?.from ?? "--ports", p?.value ?? "", "a comma-separated list of TCP ports such as 80,443");

  // commander turns --no-wait into wait=false; NO_WAIT=true does the same.
  const wait = !pickBool("wait", raw.wait === false ? true : undefined, env);
  const wt = pick("waitTimeout", raw.waitTimeout, env);
  const waitTimeoutMs = wt ? parseDuration(wt.value, wt.from) : DEFAULTS.waitTimeoutMs;

  const pa = pick("probeAddress", raw.probeAddress, env);
  const probeAddress = pa ? parseIp(pa.value, pa.from).ip : DEFAULTS.probeAddress;
  if (familyOf(probeAddress) !== "ipv4") throw bad(pa?.from ?? "--probe-address", probeAddress, "an IPv4 address (the node redirects IPv4 to its proxy)");
  if (wait && !ports.includes(80)) {
    throw new ConfigError(`${p?.from ?? "--ports"} "${ports.join(",")}" leaves out port 80, which the interception probe uses: add 80 or pass --no-wait`);
  }

  const backend = oneOf(pick("iptablesBackend", raw.iptablesBackend, env), BACKENDS, DEFAULTS.backend);
  const logLevel = oneOf(pick("logLevel", raw.logLevel, env), LOG_LEVELS, DEFAULTS.logLevel);
  const mode = oneOf(pick("mode", raw.mode, env), MODES, DEFAULTS.mode);
  const dryRun = pickBool("dryRun", raw.dryRun, env);
  if (mode === "wait" && dryRun) throw new ConfigError("--mode wait writes no rules: --dry-run has nothing to print");

  return Object.freeze({
    mode,
    allowDns: Object.freeze(allowDns),
    resolvConf,
    blockCidrs: Object.freeze(blockCidrs.map((c) => Object.freeze(c))),
    node: node && Object.freeze(node),
    standardPort,
    ports: Object.freeze(ports),
    ipv6Intercepted: pickBool("ipv6Intercepted", raw.ipv6Intercepted, env),
    wait,
    waitTimeoutMs,
    probeAddress,
    backend,
    dryRun,
    logLevel,
  });
}
