// tproxy-cni: a chained CNI plugin that locks an opted-in pod's network namespace at sandbox creation,
// before any of its containers runs, with exactly the rules sidecar-init writes (applyLock, the same
// policy built from the same parsers); so the pod's own init container needs no capability at all.
import type { Logger } from "pino";
import { ownAddresses, type Interfaces } from "../addresses.ts";
import type { Family } from "../config.ts";
import { applyLock, ipv6InKernel, lockProblems } from "../lockdown.ts";
import { execRunner } from "@tproxy/iptables";
import type { Runner } from "../iptables.ts";
import type { Policy } from "../rules.ts";
import { askPodwatch, type AskOptions, type AskResult } from "./podwatch-client.ts";
import { parseSettings, type PluginSettings } from "./settings.ts";
import { CNI_CODE, CniError, PLUGIN_TYPE, SPEC_VERSION, SUPPORTED_VERSIONS, parseInvocation, parseNetConf, type Invocation, type NetConf, type PrevResult } from "./spec.ts";

/** What the plugin does to the world; tests replace parts. */
export interface PluginDeps {
  /** Runs a program inside the pod's namespace. Default: `nsenter --net=<netns> <program>`. */
  readonly runIn?: (netns: string) => Runner;
  /** The namespace's interfaces and addresses. Default: `ip -j addr show` in it. */
  readonly interfacesIn?: (netns: string, run: Runner) => Promise<ReturnType<Interfaces>>;
  readonly ask?: (opts: AskOptions) => Promise<AskResult>;
  readonly ipv6Available?: () => boolean;
  readonly path?: string | undefined;
  readonly log: Logger;
}

/** What one call prints and exits with. */
export interface Outcome {
  readonly code: number;
  readonly stdout: string;
}

/** The real way into the pod's namespace: nsenter, as root on the host (the plugin runs so). */
export const nsenterRunner = (netns: string): Runner => execRunner({ timeoutMs: 30_000, prefix: ["nsenter", `--net=${netns}`] });

/** The namespace's addresses as `os.networkInterfaces` would list them from inside (what sidecar-init reads). */
export async function interfacesViaIp(netns: string, run: Runner): Promise<ReturnType<Interfaces>> {
  const r = await run("ip", ["-j", "addr", "show"]).catch((err: unknown) => {
    throw new CniError(CNI_CODE.lockFailed, `cannot list the addresses in ${netns}: ${(err as Error).message}`, "the node needs nsenter (util-linux) and ip (iproute2)");
  });
  if (r.code !== 0) throw new CniError(CNI_CODE.lockFailed, `ip addr show in ${netns} failed (exit ${r.code}): ${r.stderr.trim()}`);
  const links = JSON.parse(r.stdout) as Array<{ ifname: string; addr_info?: Array<{ family: string; local: string }> }>;
  const out: ReturnType<Interfaces> = {};
  for (const l of links) {
    out[l.ifname] = (l.addr_info ?? []).map((a) => ({ address: a.local, family: a.family === "inet6" ? "IPv6" : "IPv4", internal: l.ifname === "lo" }));
  }
  return out;
}

/** The resolvers the lock allows: the plugin's `allowDns`, else the previous result's DNS servers. */
function resolvers(settings: PluginSettings, prev: PrevResult): Policy["allowDns"] {
  if (settings.allowDns) return settings.allowDns;
  const fromResult = prev.dns?.nameservers ?? [];
  if (fromResult.length === 0) {
    throw new CniError(
      CNI_CODE.invalidConfig,
      'no resolver to allow DNS to: set "allowDns" in the tproxy-cni entry (the chart\'s lock.allowDns: the cluster DNS service address), or have an earlier plugin return dns.nameservers',
      "the pod's resolv.conf is written by the kubelet and unknown to CNI plugins",
    );
  }
  return fromResult.map((ip) => ({ ip, family: ip.includes(":") ? "ipv6" : "ipv4" }) as const);
}

interface PodRef {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string | undefined;
}

function podOf(inv: Invocation): PodRef | undefined {
  const namespace = inv.args["K8S_POD_NAMESPACE"];
  const name = inv.args["K8S_POD_NAME"];
  if (!namespace || !name) return undefined;
  return { namespace, name, uid: inv.args["K8S_POD_UID"] || undefined };
}

/** Whether the pod must be locked; throws (try again later) when podwatch cannot say. */
async function mustLock(inv: Invocation, settings: PluginSettings, deps: PluginDeps): Promise<{ lock: boolean; why: string }> {
  const pod = podOf(inv);
  // Without K8S_POD_* the sandbox is not a Kubernetes pod's: there is no annotation to honour.
  if (pod === undefined) return { lock: false, why: "no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS: not a Kubernetes pod" };
  if (settings.excludeNamespaces.includes(pod.namespace)) return { lock: false, why: `namespace ${pod.namespace} is excluded (excludeNamespaces)` };
  const r = await (deps.ask ?? askPodwatch)({ socket: settings.socket, namespace: pod.namespace, name: pod.name, uid: pod.uid, timeoutMs: settings.askTimeoutMs });
  if (!r.ok) {
    throw new CniError(
      CNI_CODE.tryAgainLater,
      `cannot tell whether pod ${pod.namespace}/${pod.name} must be locked: ${r.why}`,
      "failing closed: the pod's sandbox is not created until the node's tproxy podwatch answers (the runtime retries); check the tproxy DaemonSet pod on this node",
    );
  }
  return { lock: r.pod.lock, why: r.pod.lock ? "podwatch: the pod is locked" : "podwatch: the pod is not locked" };
}

/** The lock for this pod: its addresses read in its namespace, the plugin's settings, the result's DNS. */
async function policyFor(inv: Invocation, settings: PluginSettings, prev: PrevResult, run: Runner, deps: PluginDeps): Promise<{ policy: Policy; families: Family[] }> {
  const allowDns = resolvers(settings, prev);
  const ifaces = await (deps.interfacesIn ?? interfacesViaIp)(inv.netns, run);
  const policy: Policy = {
    allowDns,
    blockCidrs: settings.blockCidrs,
    // Standard (explicit proxy) mode needs the node's address per pod; CNI mode locks for the transparent mode only.
    nodeAddresses: [],
    standardPort: 0,
    ports: settings.ports,
    ipv6Intercepted: settings.ipv6Intercepted,
    ownAddresses: ownAddresses(() => ifaces),
  };
  const families: Family[] = (deps.ipv6Available ?? ipv6InKernel)() ? ["ipv4", "ipv6"] : ["ipv4"];
  return { policy, families };
}

function prevResultOf(conf: NetConf): PrevResult {
  if (conf.prevResult === undefined) {
    throw new CniError(CNI_CODE.invalidConfig, `${PLUGIN_TYPE} is a chained plugin: put it after the plugin that creates the pod's interface, in the plugins list of a conflist (no prevResult given)`);
  }
  return conf.prevResult;
}

/**
 * Skips applyLock's capability pre-check, whose advice is for an init container: runtimes run plugins as
 * root on the host, and were a capability missing all the same, iptables-restore's own refusal would say so.
 */
const allCaps = (): bigint => (1n << 41n) - 1n;

/** Handles one call: the outcome to print and exit with (errors included, as the spec's error object). */
export async function runPlugin(env: NodeJS.ProcessEnv, stdin: string, deps: PluginDeps): Promise<Outcome> {
  let version = SPEC_VERSION;
  try {
    const inv = parseInvocation(env);
    if (inv.command === "VERSION") {
      return { code: 0, stdout: JSON.stringify({ cniVersion: SPEC_VERSION, supportedVersions: SUPPORTED_VERSIONS }) };
    }
    const conf = parseNetConf(stdin);
    version = conf.cniVersion;
    // DEL: the lock lives in the pod's namespace and goes with it; nothing on the node to undo. GC and
    // STATUS: no state kept, nothing to collect, always ready (podwatch's absence fails ADD, not STATUS,
    // so pods of excluded namespaces still start).
    if (inv.command === "DEL" || inv.command === "GC" || inv.command === "STATUS") return { code: 0, stdout: "" };
    const settings = parseSettings(conf);
    const prev = prevResultOf(conf);
    const log = deps.log.child({ pod: `${inv.args["K8S_POD_NAMESPACE"] ?? "?"}/${inv.args["K8S_POD_NAME"] ?? "?"}`, containerId: inv.containerId, command: inv.command });
    const decision = await mustLock(inv, settings, deps);
    log.info({ lock: decision.lock }, decision.why);
    if (decision.lock) {
      const run = (deps.runIn ?? nsenterRunner)(inv.netns);
      const { policy, families } = await policyFor(inv, settings, prev, run, deps);
      if (inv.command === "ADD") {
        await applyLock(policy, families, settings.iptablesBackend, { run, path: deps.path, capabilities: allCaps }, log).catch((err: unknown) => {
          throw err instanceof CniError ? err : new CniError(CNI_CODE.lockFailed, `cannot lock ${inv.netns}: ${(err as Error).message}`, "the node needs nsenter and iptables (iptables-restore, ip6tables-restore) on the PATH the runtime gives plugins");
        });
      } else {
        const problems = await lockProblems(policy, families, settings.iptablesBackend, { run, path: deps.path }).catch((err: unknown) => [`cannot read the rules: ${(err as Error).message}`]);
        if (problems.length > 0) throw new CniError(CNI_CODE.lockMissing, `the lock of ${inv.netns} is not in place: ${problems.join("; ")}`);
        return { code: 0, stdout: "" };
      }
    }
    if (inv.command === "CHECK") return { code: 0, stdout: "" };
    // The chain's result is passed on as it came: this plugin adds no interface, address or route.
    return { code: 0, stdout: JSON.stringify(prev) };
  } catch (err) {
    const e = err instanceof CniError ? err : new CniError(CNI_CODE.ioFailure, (err as Error).message ?? String(err));
    deps.log.error({ code: e.code, details: e.details }, e.message);
    return { code: 1, stdout: JSON.stringify(e.toJSON(version)) };
  }
}
