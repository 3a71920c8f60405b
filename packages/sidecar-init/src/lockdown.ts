// One run of sidecar-init: resolve, check, lock the pod's egress (IPv4 and IPv6, one transaction each),
// then wait until the node intercepts. Side effects come in through `Deps`.
import { existsSync } from "node:fs";
import type { Logger } from "pino";
import { requireCapabilities, effectiveCapabilities } from "./capabilities.ts";
import type { Config, Family } from "./config.ts";
import { chooseTools, execRunner, restore, saveFilter, type FamilyTools, type Runner, type Tools } from "./iptables.ts";
import { waitForInterception, type ProbeResult } from "./probe.ts";
import { resolveNode, type Lookup } from "./resolve.ts";
import { parseOutputRules, renderChain, restoreInput, type Policy } from "./rules.ts";

export interface Deps {
  readonly run: Runner;
  /** PATH to find iptables on. Default process.env.PATH. */
  readonly path?: string | undefined;
  readonly capabilities?: () => bigint;
  /** Whether the kernel has IPv6 at all (no IPv6: nothing to lock there). */
  readonly ipv6Available?: () => boolean;
  readonly lookup?: Lookup;
  readonly probe?: (address: string, timeoutMs: number) => Promise<ProbeResult>;
  /** Where --dry-run prints. */
  readonly write: (text: string) => void;
}

export const defaultDeps: Deps = {
  run: execRunner,
  write: (text) => process.stdout.write(text),
};

/** One family's transaction, ready to apply. */
export interface Plan {
  readonly tools: FamilyTools | undefined;
  readonly family: Family;
  readonly input: string;
  readonly rules: number;
}

const ipv6InKernel = (): boolean => existsSync("/proc/net/if_inet6");

/** Builds the transactions from the kernel's current OUTPUT chain (or an empty one). */
async function plan(policy: Policy, families: readonly Family[], tools: Tools | undefined, run: Runner): Promise<Plan[]> {
  const plans: Plan[] = [];
  for (const family of families) {
    const t = tools?.[family];
    const output = t ? parseOutputRules(await saveFilter(t, run)) : [];
    const chain = renderChain(policy, family);
    plans.push({ tools: t, family, input: restoreInput(chain, output), rules: chain.length });
  }
  return plans;
}

export async function sidecarInit(config: Config, log: Logger, deps: Deps = defaultDeps): Promise<void> {
  const nodeAddresses = await resolveNode(config.node, deps.lookup);
  if (config.node?.kind === "name") log.info({ node: config.node.name, addresses: nodeAddresses }, "node name resolved");
  const policy: Policy = {
    allowDns: config.allowDns,
    blockCidrs: config.blockCidrs,
    nodeAddresses,
    standardPort: config.standardPort,
    ports: config.ports,
    ipv6Intercepted: config.ipv6Intercepted,
  };
  const families: Family[] = (deps.ipv6Available ?? ipv6InKernel)() ? ["ipv4", "ipv6"] : ["ipv4"];
  if (!families.includes("ipv6")) log.warn("the kernel has no IPv6: only IPv4 is locked");
  const caps = deps.capabilities ?? effectiveCapabilities;

  if (config.dryRun) {
    let tools: Tools | undefined;
    let plans: Plan[];
    try {
      tools = await chooseTools(config.backend, deps.run, deps.path);
      requireCapabilities(tools.backend, caps());
      plans = await plan(policy, families, tools, deps.run);
    } catch (err) {
      log.warn({ err: (err as Error).message }, "cannot read the current rules: printing the input for a namespace without them");
      plans = await plan(policy, families, undefined, deps.run);
    }
    for (const p of plans) {
      const program = p.tools?.restore ?? (p.family === "ipv4" ? "iptables-restore" : "ip6tables-restore");
      deps.write(`# ${p.family === "ipv4" ? "IPv4" : "IPv6"}: ${program} --noflush\n${p.input}`);
    }
    return;
  }

  const tools = await chooseTools(config.backend, deps.run, deps.path);
  requireCapabilities(tools.backend, caps());
  log.debug({ backend: tools.backend, ipv4: tools.ipv4.restore, ipv6: tools.ipv6.restore }, "iptables chosen");
  const plans = await plan(policy, families, tools, deps.run);
  // Check every family before changing any, so a rule the kernel refuses leaves the pod as it was.
  for (const p of plans) await restore(p.tools!, p.input, deps.run, { test: true });
  for (const p of plans) {
    await restore(p.tools!, p.input, deps.run);
    log.info({ family: p.family, backend: tools.backend, rules: p.rules }, "egress locked");
  }

  if (!config.wait) {
    log.info("not waiting for interception (--no-wait)");
    return;
  }
  const r = await waitForInterception({ address: config.probeAddress, timeoutMs: config.waitTimeoutMs, ...(deps.probe ? { probe: deps.probe } : {}) }, log);
  log.info({ attempts: r.attempts, elapsedMs: r.elapsedMs }, "interception live");
}
