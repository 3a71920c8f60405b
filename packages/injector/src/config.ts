// The injection config file (the chart's ConfigMap `<fullname>-injector`, key injection.json) and the
// command line, each read once at start into a frozen, checked object.
import { readFileSync } from "node:fs";
import { ConfigError } from "./errors.ts";
import type { InjectionConfig } from "./inject.ts";

export const DEFAULT_PORT = 15173;
export const DEFAULT_ADDRESS = "0.0.0.0";
/** Largest AdmissionReview body read; more is refused with 413 (etcd stores objects of 1.5 MiB at most, a review holds two). */
export const DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024;

export interface ServeConfig {
  /** Port of the HTTPS server. Flag `--port`, env `TPROXY_INJECTOR_PORT`; default 15173. */
  readonly port: number;
  /** Address it listens on. Flag `--address`, env `TPROXY_INJECTOR_ADDRESS`; default 0.0.0.0. */
  readonly address: string;
  /** PEM certificate (chain) and key files, reloaded when they change. Flags `--tls-cert`, `--tls-key`; required. */
  readonly tlsCert: string;
  readonly tlsKey: string;
  /** The injection config file. Flag `--config`, env `TPROXY_INJECTOR_CONFIG`; required. */
  readonly configFile: string;
  readonly injection: InjectionConfig;
}

export interface RawServeOptions {
  port?: string | number;
  address?: string;
  tlsCert?: string;
  tlsKey?: string;
  config?: string;
}

export function parseServeConfig(raw: RawServeOptions): ServeConfig {
  const port = Number(String(raw.port ?? DEFAULT_PORT).trim());
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError(`--port ${JSON.stringify(raw.port)} is not a port (0-65535 expected)`);
  const required = (flag: string, v: string | undefined) => {
    if (v === undefined || v.trim() === "") throw new ConfigError(`${flag} is required`);
    return v.trim();
  };
  const configFile = required("--config", raw.config);
  return Object.freeze({
    port,
    address: (raw.address ?? DEFAULT_ADDRESS).trim(),
    tlsCert: required("--tls-cert", raw.tlsCert),
    tlsKey: required("--tls-key", raw.tlsKey),
    configFile,
    injection: readInjectionConfig(configFile),
  });
}

export function readInjectionConfig(file: string): InjectionConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError(`--config ${file}: cannot read it: ${(err as Error).message}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`--config ${file}: not JSON: ${(err as Error).message}`, { cause: err });
  }
  return parseInjectionConfig(json, `--config ${file}`);
}

/** Checks the shape of an injection config; `where` names its source in messages. */
export function parseInjectionConfig(json: unknown, where: string): InjectionConfig {
  const fail = (field: string, expected: string): never => {
    throw new ConfigError(`${where}: ${field} must be ${expected}`);
  };
  if (!isObject(json)) return fail("the file", "a JSON object { annotation, lockLabel, initContainer, volume, volumeMounts }");
  const { annotation, lockLabel, initContainer, volume, volumeMounts } = json;
  if (typeof annotation !== "string" || annotation === "") fail("annotation", 'an annotation key (e.g. "initializer.kubernetes.io/tproxy")');
  if (typeof lockLabel !== "string" || lockLabel === "") fail("lockLabel", 'a label key (e.g. "tproxy.io/lock")');
  if (!isObject(initContainer) || typeof initContainer["name"] !== "string" || typeof initContainer["image"] !== "string") fail("initContainer", "a container with a name and an image");
  if (!isObject(volume) || typeof volume["name"] !== "string") fail("volume", "a volume with a name");
  const volumeName = (volume as { name: string }).name;
  if (!Array.isArray(volumeMounts) || volumeMounts.length === 0) fail("volumeMounts", "a non-empty list of volume mounts");
  for (const [i, m] of (volumeMounts as unknown[]).entries()) {
    if (!isObject(m) || m["name"] !== volumeName || typeof m["mountPath"] !== "string") fail(`volumeMounts[${i}]`, `a mount of volume "${volumeName}" with a mountPath`);
  }
  return deepFreeze({ annotation, lockLabel, initContainer, volume, volumeMounts }) as unknown as InjectionConfig;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function deepFreeze<T>(v: T): T {
  if (typeof v === "object" && v !== null) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}
