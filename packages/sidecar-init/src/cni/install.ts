// Putting tproxy-cni on a node, as istio-cni and linkerd-cni do: nodes have no Node.js, so the plugin
// goes into the CNI bin folder as a folder with the image's node binary and the plugin bundled into one
// CommonJS file, plus a `tproxy-cni` shell wrapper that runs them; and its entry goes at the END of the
// plugins of the node's primary conflist (after the plugins that create the pod's interface and address,
// whose result it reads). Every write is atomic (a temporary file renamed over the target) and skipped
// when the content is already right, so install is idempotent and re-running it on every change of the
// folder (the cluster's CNI rewriting its config) cannot loop.
import { chmodSync, copyFileSync, existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, mkdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { PLUGIN_TYPE } from "./spec.ts";

/** The wrapper the runtime runs (the conflist's `type`), and the folder beside it with node and the bundle. */
export const WRAPPER = PLUGIN_TYPE;
export const PAYLOAD_DIR = `${PLUGIN_TYPE}.d`;

export interface InstallOptions {
  /** The host's CNI bin folder, as mounted (e.g. /host/opt/cni/bin). */
  readonly binDir: string;
  /** The host's CNI config folder, as mounted (e.g. /host/etc/cni/net.d). */
  readonly confDir: string;
  /** The node binary to copy (the image's: glibc, same architecture as the node). */
  readonly nodeBinary: string;
  /** The plugin bundled into one CommonJS file. */
  readonly bundle: string;
  /** The plugin's keys in its conflist entry (socket, allowDns, blockCidrs, excludeNamespaces, …); `type` is added. */
  readonly settings: Readonly<Record<string, unknown>>;
}

/** Writes `content` to `path` through a temporary file and a rename; returns false when it was already so. */
function writeAtomic(path: string, content: string | Buffer, mode?: number): boolean {
  if (existsSync(path)) {
    const old = readFileSync(path);
    if (old.equals(Buffer.isBuffer(content) ? content : Buffer.from(content)) && (mode === undefined || (statSync(path).mode & 0o777) === mode)) return false;
  }
  const tmp = `${path}.tproxy-tmp`;
  writeFileSync(tmp, content);
  if (mode !== undefined) chmodSync(tmp, mode);
  renameSync(tmp, path);
  return true;
}

/** Copies a file atomically unless the target has the same size and content. */
function copyAtomic(from: string, to: string, mode: number): boolean {
  if (existsSync(to) && statSync(to).size === statSync(from).size && readFileSync(to).equals(readFileSync(from))) {
    if ((statSync(to).mode & 0o777) !== mode) chmodSync(to, mode);
    return false;
  }
  const tmp = `${to}.tproxy-tmp`;
  copyFileSync(from, tmp);
  chmodSync(tmp, mode);
  renameSync(tmp, to);
  return true;
}

/** The wrapper script: the runtime execs it with CNI_* set and the config on stdin; it execs node on the bundle. */
export function wrapperScript(): string {
  return `#!/bin/sh\n# Installed by tproxy (lock.mode cni); removed by its uninstall.\nd="$(dirname "$0")/${PAYLOAD_DIR}"\nexec "$d/node" "$d/tproxy-cni.cjs" "$@"\n`;
}

/** Copies node, the bundle and the wrapper into the bin folder. */
export function installBinaries(opts: Pick<InstallOptions, "binDir" | "nodeBinary" | "bundle">): boolean {
  const dir = join(opts.binDir, PAYLOAD_DIR);
  mkdirSync(dir, { recursive: true });
  let changed = copyAtomic(opts.nodeBinary, join(dir, "node"), 0o755);
  changed = copyAtomic(opts.bundle, join(dir, "tproxy-cni.cjs"), 0o644) || changed;
  // The wrapper last: the runtime finds the plugin only once what it runs is complete.
  return writeAtomic(join(opts.binDir, WRAPPER), wrapperScript(), 0o755) || changed;
}

const isConfig = (f: string): boolean => f.endsWith(".conflist") || f.endsWith(".conf") || f.endsWith(".json");

/**
 * The node's primary network: the first *.conflist by name, else the first *.conf/*.json (which
 * `installConfig` turns into a conflist). The runtime (libcni) uses the first file by name of all three:
 * a conflist is preferred here because the plugin can only be chained in a plugins list.
 */
export function primaryConfig(confDir: string): string | undefined {
  const files = existsSync(confDir) ? readdirSync(confDir).filter(isConfig).sort() : [];
  return files.find((f) => f.endsWith(".conflist")) ?? files[0];
}

type Conflist = { cniVersion?: string; name?: string; plugins: Array<Record<string, unknown>>; [k: string]: unknown };

/**
 * Puts the plugin's entry last in the primary conflist (a single-plugin .conf is converted to one), and
 * only there. Returns the file it wrote, or undefined when nothing needed writing; throws when the folder
 * has no network config yet (the cluster's CNI has not written it: the watch retries).
 */
export function installConfig(opts: Pick<InstallOptions, "confDir" | "settings">): { file: string; written: boolean } {
  const name = primaryConfig(opts.confDir);
  if (name === undefined) throw new Error(`no CNI network configuration in ${opts.confDir} yet (*.conflist, *.conf): the cluster's CNI writes it first`);
  const path = join(opts.confDir, name);
  let text: string;
  let value: Record<string, unknown>;
  try {
    text = readFileSync(path, "utf8");
    value = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`cannot read ${path} as JSON: ${(err as Error).message}`, { cause: err });
  }
  let list: Conflist;
  let target = path;
  if (Array.isArray(value["plugins"])) {
    list = value as Conflist;
  } else {
    // A single plugin's config: the same network as a list of one, then the chain.
    const { cniVersion, name: netName, ...plugin } = value;
    list = { cniVersion: cniVersion as string, name: netName as string, plugins: [plugin] };
    target = path.replace(/\.(conf|json)$/, ".conflist");
  }
  const entry = { type: PLUGIN_TYPE, ...opts.settings };
  const plugins = [...list.plugins.filter((p) => p["type"] !== PLUGIN_TYPE), entry];
  const next = JSON.stringify({ ...list, plugins }, null, 2) + "\n";
  const written = writeAtomic(target, next);
  if (target !== path) unlinkSync(path);
  return { file: target, written };
}

/** Binaries and config entry. */
export function install(opts: InstallOptions): { file: string; written: boolean } {
  installBinaries(opts);
  return installConfig(opts);
}

/** Takes the entry out of every conflist of the folder, and the wrapper and its folder out of the bin folder. */
export function uninstall(opts: Pick<InstallOptions, "binDir" | "confDir">): string[] {
  const changed: string[] = [];
  for (const f of existsSync(opts.confDir) ? readdirSync(opts.confDir).filter((x) => x.endsWith(".conflist")) : []) {
    const path = join(opts.confDir, f);
    let list: Conflist;
    try {
      list = JSON.parse(readFileSync(path, "utf8")) as Conflist;
    } catch {
      continue; // not ours to repair
    }
    if (!Array.isArray(list.plugins) || !list.plugins.some((p) => p["type"] === PLUGIN_TYPE)) continue;
    writeAtomic(path, JSON.stringify({ ...list, plugins: list.plugins.filter((p) => p["type"] !== PLUGIN_TYPE) }, null, 2) + "\n");
    changed.push(path);
  }
  rmSync(join(opts.binDir, WRAPPER), { force: true });
  rmSync(join(opts.binDir, PAYLOAD_DIR), { recursive: true, force: true });
  return changed;
}
