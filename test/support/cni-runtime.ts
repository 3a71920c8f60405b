// A container runtime's CNI side, as libcni does it, for tests: a conflist's plugins run in order for
// ADD, each given the network's name and cniVersion, its own entry, and the previous plugin's result as
// `prevResult`; the last result is cached and is the prevResult of CHECK (in order) and DEL (in reverse).
// Plugins are found by `type` in CNI_PATH (several folders, colon-separated, like the runtime's list) and
// run in the node's namespace with only the CNI_* variables and PATH, as containerd and CRI-O run them.
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Netns, RunResult } from "./netns.ts";

export interface Conflist {
  cniVersion: string;
  name: string;
  plugins: Array<{ type: string; [k: string]: unknown }>;
}

/** The pod a sandbox is for: CNI_ARGS as the kubelet's runtime sets them. */
export interface SandboxPod {
  namespace: string;
  name: string;
  uid?: string;
}

/** One plugin call as it went: which plugin, its exit, its stdout and stderr. */
export interface PluginRun extends RunResult {
  readonly type: string;
  readonly command: string;
}

/** The outcome of a whole ADD/CHECK/DEL: ok only when every plugin exited 0. */
export interface ChainResult {
  readonly ok: boolean;
  /** ADD: the last plugin's result (what the runtime caches). */
  readonly result?: Record<string, unknown>;
  /** Every plugin run, in the order they ran; a failed one is the last (the runtime stops there). */
  readonly runs: PluginRun[];
  /** The failing plugin's run, if one failed. */
  readonly failed?: PluginRun;
}

/**
 * A node's network before tproxy: the reference bridge with host-local on `subnet` (its .1 the gateway on
 * the node), as a node's /etc/cni/net.d holds it.
 */
export function bridgeConflist(opts: { name: string; bridge: string; subnet: string; gateway: string; dataDir: string }): Conflist {
  return {
    cniVersion: "1.0.0",
    name: opts.name,
    plugins: [
      {
        type: "bridge",
        bridge: opts.bridge,
        isGateway: true,
        ipMasq: false,
        ipam: { type: "host-local", ranges: [[{ subnet: opts.subnet, gateway: opts.gateway }]], routes: [{ dst: "0.0.0.0/0" }], dataDir: opts.dataDir },
      },
    ],
  };
}

export class CniRuntime {
  readonly #node: Netns;
  readonly #cniPath: string[];
  /** Cached ADD results by container ID, as the runtime keeps them for CHECK and DEL. */
  readonly cache = new Map<string, Record<string, unknown>>();

  constructor(node: Netns, cniPath: readonly string[]) {
    this.#node = node;
    this.#cniPath = [...cniPath];
  }

  #find(type: string): string {
    for (const dir of this.#cniPath) {
      const p = join(dir, type);
      if (existsSync(p)) return p;
    }
    throw new Error(`CNI plugin ${type} not found in ${this.#cniPath.join(":")}`);
  }

  async #call(command: string, conflist: Conflist, plugin: Conflist["plugins"][number], containerId: string, netns: string, pod: SandboxPod | undefined, prevResult: Record<string, unknown> | undefined): Promise<PluginRun> {
    const conf = { ...plugin, cniVersion: conflist.cniVersion, name: conflist.name, ...(prevResult ? { prevResult } : {}) };
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: netns,
      CNI_IFNAME: "eth0",
      CNI_PATH: this.#cniPath.join(":"),
      ...(pod ? { CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name}${pod.uid ? `;K8S_POD_UID=${pod.uid}` : ""}` } : {}),
    };
    const r = await this.#node.run(this.#find(plugin.type), [], { input: JSON.stringify(conf), env, timeoutMs: 30_000 });
    return { ...r, type: plugin.type, command };
  }

  /** ADD through the chain; stops at the first failure (the runtime then tears the sandbox down). */
  async add(conflist: Conflist, containerId: string, netns: string, pod?: SandboxPod): Promise<ChainResult> {
    const runs: PluginRun[] = [];
    let prev: Record<string, unknown> | undefined;
    for (const plugin of conflist.plugins) {
      const r = await this.#call("ADD", conflist, plugin, containerId, netns, pod, prev);
      runs.push(r);
      if (r.code !== 0) return { ok: false, runs, failed: r };
      prev = JSON.parse(r.stdout) as Record<string, unknown>;
    }
    if (prev) this.cache.set(containerId, prev);
    return { ok: true, ...(prev ? { result: prev } : {}), runs };
  }

  /** CHECK through the chain, in order, with the cached result. */
  async check(conflist: Conflist, containerId: string, netns: string, pod?: SandboxPod): Promise<ChainResult> {
    const runs: PluginRun[] = [];
    for (const plugin of conflist.plugins) {
      const r = await this.#call("CHECK", conflist, plugin, containerId, netns, pod, this.cache.get(containerId));
      runs.push(r);
      if (r.code !== 0) return { ok: false, runs, failed: r };
    }
    return { ok: true, runs };
  }

  /** DEL through the chain in reverse; `netns` may be "" (the namespace is gone already). */
  async del(conflist: Conflist, containerId: string, netns: string, pod?: SandboxPod): Promise<ChainResult> {
    const runs: PluginRun[] = [];
    for (const plugin of [...conflist.plugins].reverse()) {
      const r = await this.#call("DEL", conflist, plugin, containerId, netns, pod, this.cache.get(containerId));
      runs.push(r);
      if (r.code !== 0) return { ok: false, runs, failed: r };
    }
    this.cache.delete(containerId);
    return { ok: true, runs };
  }

  /** One plugin alone (VERSION, or a call with a hand-made config). */
  async raw(type: string, env: NodeJS.ProcessEnv, input: string): Promise<RunResult> {
    return this.#node.run(this.#find(type), [], { input, env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", ...env }, timeoutMs: 30_000 });
  }
}
