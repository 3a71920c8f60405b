// The CNI contract as tproxy-cni meets it (spec 1.0.0, github.com/containernetworking/cni SPEC.md): the
// runtime's environment, the network configuration on stdin, and the error object on stdout.

/** Versions whose configuration and result this plugin reads and prints (the result is passed through). */
export const SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const;
/** The version of the VERSION answer and of errors when the configuration names none. */
export const SPEC_VERSION = "1.0.0";
export const PLUGIN_TYPE = "tproxy-cni";

/** Error codes of the spec (1-99 reserved by it), and this plugin's own from 100 on. */
export const CNI_CODE = Object.freeze({
  incompatibleVersion: 1,
  unsupportedField: 2,
  containerUnknown: 3,
  invalidEnvironment: 4,
  ioFailure: 5,
  decodeFailure: 6,
  invalidConfig: 7,
  /** Transient: the runtime should retry ADD later (podwatch not reachable, or not knowing the pod yet). */
  tryAgainLater: 11,
  /** The lock could not be applied in the pod's namespace (iptables missing, refused, nsenter failing). */
  lockFailed: 100,
  /** CHECK: the pod's lock is not (or no longer) what it must be. */
  lockMissing: 101,
});

/** A failure as the plugin reports it: `{cniVersion, code, msg, details}` on stdout, non-zero exit. */
export class CniError extends Error {
  readonly code: number;
  readonly details: string;
  constructor(code: number, msg: string, details = "") {
    super(msg);
    this.name = "CniError";
    this.code = code;
    this.details = details;
  }
  toJSON(cniVersion: string): { cniVersion: string; code: number; msg: string; details?: string } {
    return { cniVersion, code: this.code, msg: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}

export type Command = "ADD" | "CHECK" | "DEL" | "VERSION" | "GC" | "STATUS";
const COMMANDS: readonly Command[] = ["ADD", "CHECK", "DEL", "VERSION", "GC", "STATUS"];

/** The runtime's variables for one call. */
export interface Invocation {
  readonly command: Command;
  readonly containerId: string;
  readonly netns: string;
  readonly ifname: string;
  /** `CNI_ARGS` as key/value pairs (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID from the kubelet's runtime). */
  readonly args: Readonly<Record<string, string>>;
}

/** Parses `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`. */
export function parseCniArgs(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (text ?? "").split(";")) {
    const i = pair.indexOf("=");
    if (i > 0) out[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
  }
  return out;
}

/** Reads the variables; those a command needs and lacks are an error (code 4) naming them. */
export function parseInvocation(env: NodeJS.ProcessEnv): Invocation {
  const command = env["CNI_COMMAND"] as Command | undefined;
  if (command === undefined || !COMMANDS.includes(command)) {
    throw new CniError(CNI_CODE.invalidEnvironment, `CNI_COMMAND ${JSON.stringify(env["CNI_COMMAND"] ?? "")} is not one of ${COMMANDS.join(", ")}`);
  }
  const needed: Record<Command, string[]> = {
    ADD: ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
    CHECK: ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
    // DEL may come without a namespace (it is gone already): the spec lets CNI_NETNS be empty then.
    DEL: ["CNI_CONTAINERID", "CNI_IFNAME"],
    VERSION: [],
    GC: [],
    STATUS: [],
  };
  const missing = needed[command].filter((k) => (env[k] ?? "") === "");
  if (missing.length > 0) throw new CniError(CNI_CODE.invalidEnvironment, `CNI_COMMAND=${command} without ${missing.join(", ")}`);
  return {
    command,
    containerId: env["CNI_CONTAINERID"] ?? "",
    netns: env["CNI_NETNS"] ?? "",
    ifname: env["CNI_IFNAME"] ?? "",
    args: parseCniArgs(env["CNI_ARGS"]),
  };
}

/** The previous plugin's result, the part this plugin reads (it prints the whole object back unchanged). */
export interface PrevResult {
  readonly cniVersion?: string;
  readonly interfaces?: ReadonlyArray<{ name: string; sandbox?: string }>;
  readonly ips?: ReadonlyArray<{ address: string; interface?: number }>;
  readonly dns?: { readonly nameservers?: readonly string[] };
  readonly [k: string]: unknown;
}

/** The network configuration the runtime gives this plugin (its entry of the conflist, plus name, cniVersion, prevResult). */
export interface NetConf {
  readonly cniVersion: string;
  readonly name: string;
  readonly type: string;
  readonly prevResult?: PrevResult;
  readonly [k: string]: unknown;
}

/** Parses stdin: JSON with cniVersion, name, type; a version this plugin does not know is code 1. */
export function parseNetConf(text: string): NetConf {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new CniError(CNI_CODE.decodeFailure, `the network configuration on stdin is not JSON: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new CniError(CNI_CODE.decodeFailure, "the network configuration on stdin is not a JSON object");
  const conf = value as Record<string, unknown>;
  for (const k of ["cniVersion", "name", "type"]) {
    if (typeof conf[k] !== "string" || conf[k] === "") throw new CniError(CNI_CODE.invalidConfig, `the network configuration has no "${k}" string`);
  }
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(conf["cniVersion"] as string)) {
    throw new CniError(CNI_CODE.incompatibleVersion, `cniVersion ${JSON.stringify(conf["cniVersion"])} is not supported`, `supported: ${SUPPORTED_VERSIONS.join(", ")}`);
  }
  if (conf["prevResult"] !== undefined && (typeof conf["prevResult"] !== "object" || conf["prevResult"] === null)) {
    throw new CniError(CNI_CODE.invalidConfig, "prevResult is not an object");
  }
  return conf as unknown as NetConf;
}
