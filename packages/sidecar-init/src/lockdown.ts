// One run of sidecar-init: resolve, check, lock the pod's egress (IPv4 and IPv6, one transaction each),
// then wait until the node intercepts. Side effects come in through `Deps`.
import { existsSync } from "node:fs";
import type { Logger } from "pino";
import { ownAddresses, type Interfaces } from "./addresses.ts";
import { requireCapabilities, effectiveCapabilities } from "./capabilities.ts";
import type { Config, Family, Resolver } from "./config.ts";
import { IptablesError, IptablesMissingError, LockMissingError } from "./errors.ts";
import { lockRefuses, REFUSED_PORT, type LockCheck } from "./verify-lock.ts";
import { chooseTools, chooseWithReason, execRunner, fallbackTools, restore, saveFilter, type FamilyTools, type Runner, type Tools } from "./iptables.ts";
import { waitForInterception, type ProbeResult } from "./probe.ts";
import { podResolvers, type ReadText } from "./resolv-conf.ts";
import { resolveNode, type Lookup } from "./resolve.ts";
import { CHAIN, JUMP_RULE, parseOutputRules, renderChain, restoreInput, type Policy } from "./rules.ts";

export interface Deps {
  readonly run: Runner;
  /** PATH to find iptables on. Default process.env.PATH. */
  readonly path?: string | undefined;
  readonly capabilities?: () => bigint;
  /** Whether the kernel has IPv6 at all (no IPv6: nothing to lock there). */
  readonly ipv6Available?: () => boolean;
  readonly lookup?: Lookup;
  /** Reads the resolv.conf. Default: the file system. */
  readonly readText?: ReadText;
  /** The pod's interfaces and their addresses. Default: os.networkInterfaces. */
  readonly interfaces?: Interfaces;
  readonly probe?: (address: string, timeoutMs: number) => Promise<ProbeResult>;
  /** --mode wait's check of the lock. Default: lockRefuses (verify-lock.ts). */
  readonly checkLock?: (address: string) => Promise<LockCheck>;
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

export const ipv6InKernel = (): boolean => existsSync("/proc/net/if_inet6");

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

/** The resolvers DNS may reach, as the configuration says; logs which and why. */
async function dnsPolicy(config: Config, log: Logger, read: ReadText | undefined): Promise<Policy["allowDns"]> {
  const text = (rs: readonly Resolver[]): string[] => rs.map((r) => (r.iface === undefined ? r.ip : `${r.ip}%${r.iface}`));
  switch (config.allowDns.kind) {
    case "any":
      log.warn("DNS allowed to every address (--allow-dns any): any host's port 53 can carry data out of this pod; name the resolvers instead");
      return "any";
    case "list":
      log.info({ resolvers: text(config.allowDns.resolvers) }, "DNS allowed to the resolvers given (--allow-dns)");
      return config.allowDns.resolvers;
    case "resolv-conf": {
      const resolvers = await podResolvers(config.resolvConf, read);
      log.info({ resolvers: text(resolvers), file: config.resolvConf }, "DNS allowed to the pod's own nameservers");
      return resolvers;
    }
  }
}

export async function sidecarInit(config: Config, log: Logger, deps: Deps = defaultDeps): Promise<void> {
  if (config.mode === "wait") return waitMode(config, log, deps);
  const allowDns = await dnsPolicy(config, log, deps.readText);
  const nodeAddresses = await resolveNode(config.node, deps.lookup);
  if (config.node?.kind === "name") log.info({ node: config.node.name, addresses: nodeAddresses }, "node name resolved");
  const own = ownAddresses(deps.interfaces);
  const policy: Policy = {
    allowDns,
    blockCidrs: config.blockCidrs,
    nodeAddresses,
    standardPort: config.standardPort,
    ports: config.ports,
    ipv6Intercepted: config.ipv6Intercepted,
    ownAddresses: own,
  };
  const families: Family[] = (deps.ipv6Available ?? ipv6InKernel)() ? ["ipv4", "ipv6"] : ["ipv4"];
  if (!families.includes("ipv6")) log.warn("the kernel has no IPv6: only IPv4 is locked");
  log.info({ addresses: own.map((a) => a.ip) }, "packets may leave only with one of the pod's own addresses as source");
  for (const f of families) {
    if (!own.some((a) => a.family === f)) log.warn({ family: f }, "the pod has no address of this family: everything of it but loopback is dropped");
  }
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

  await applyLock(policy, families, config.backend, { run: deps.run, path: deps.path, capabilities: caps }, log);

  if (!config.wait) {
    log.info("not waiting for interception (--no-wait)");
    return;
  }
  const r = await waitForInterception({ address: config.probeAddress, timeoutMs: config.waitTimeoutMs, ...(deps.probe ? { probe: deps.probe } : {}) }, log);
  log.info({ attempts: r.attempts, elapsedMs: r.elapsedMs }, "interception live");
}

/**
 * CNI mode: tproxy-cni locked the namespace before this container started; this process has no
 * capability and writes nothing. It checks the lock (a datagram the lock must refuse), then waits for
 * interception as lock mode does. No lock: exit with LockMissingError, so the app never starts unlocked.
 */
async function waitMode(config: Config, log: Logger, deps: Deps): Promise<void> {
  const check = await (deps.checkLock ?? lockRefuses)(config.probeAddress);
  if (!check.locked) {
    throw new LockMissingError(
      `the pod's network namespace is not locked (--mode wait): a UDP datagram to ${config.probeAddress} port ${REFUSED_PORT}, which the lock refuses with EPERM, was not refused (${check.seen}); ` +
        `the tproxy-cni plugin did not lock this pod: check that the chart runs with lock.mode=cni, that its entry is in the node's CNI configuration, and that the pod carries the opt-in annotation (default initializer.kubernetes.io/tproxy: "true")`,
    );
  }
  log.info({ address: config.probeAddress, port: REFUSED_PORT }, "lock in place: a datagram it must refuse was refused (EPERM)");
  if (!config.wait) {
    log.info("not waiting for interception (--no-wait)");
    return;
  }
  const r = await waitForInterception({ address: config.probeAddress, timeoutMs: config.waitTimeoutMs, ...(deps.probe ? { probe: deps.probe } : {}) }, log);
  log.info({ attempts: r.attempts, elapsedMs: r.elapsedMs }, "interception live");
}

/** What applying the lock needs from outside: the programs' runner (maybe into another namespace), PATH, capabilities. */
export interface ApplyDeps {
  readonly run: Runner;
  readonly path?: string | undefined;
  readonly capabilities: () => bigint;
}

/**
 * Applies the lock for `families` in the namespace `deps.run` reaches: chooses the backend (auto: detected
 * from that namespace's own tables), checks every family's transaction before applying any, and falls back
 * to the other backend when auto's guess cannot take the lock. The one place sidecar-init and the CNI
 * plugin (cni/plugin.ts) write the lock, so both modes install exactly the same rules.
 */
export async function applyLock(policy: Policy, families: readonly Family[], backend: Config["backend"], deps: ApplyDeps, log: Logger): Promise<void> {
  const chosen = await chooseWithReason(backend, deps.run, deps.path);
  log.info({ backend: chosen.tools.backend, reason: chosen.reason }, `iptables backend ${chosen.tools.backend}: ${chosen.reason}`);
  const lock = async (tools: Tools): Promise<void> => {
    requireCapabilities(tools.backend, deps.capabilities());
    log.debug({ backend: tools.backend, ipv4: tools.ipv4.restore, ipv6: tools.ipv6.restore }, "iptables chosen");
    const plans = await plan(policy, families, tools, deps.run);
    // Check every family before changing any, so a rule the kernel refuses leaves the pod as it was.
    for (const p of plans) await restore(p.tools!, p.input, deps.run, { test: true });
    for (const p of plans) {
      await restore(p.tools!, p.input, deps.run);
      log.info({ family: p.family, backend: tools.backend, rules: p.rules }, "egress locked");
    }
  };
  try {
    await lock(chosen.tools);
  } catch (err) {
    // auto guessed from the namespace's state; when that backend cannot take the lock (its kernel
    // side missing or broken), the other one may. A missing capability fails both alike: no retry.
    const other = backend === "auto" && canTryOther(err) ? fallbackTools(chosen.tools, deps.path) : undefined;
    if (other === undefined) throw err;
    const first = chosen.tools.backend;
    log.warn({ backend: first, err: (err as Error).message, fallback: other.backend }, `iptables backend ${first} cannot apply the lock; falling back to ${other.backend}`);
    try {
      await lock(other);
    } catch (err2) {
      throw new IptablesError(`neither iptables backend could apply the lock: ${first}: ${(err as Error).message}; ${other.backend}: ${(err2 as Error).message}`, { cause: err2 });
    }
  }
}

/** Failures another backend may not have: its programs failing or missing (not a capability). */
function canTryOther(err: unknown): boolean {
  return err instanceof IptablesError || err instanceof IptablesMissingError;
}

/**
 * What is wrong with the lock in the namespace `deps.run` reaches, compared with what `applyLock` would
 * write for `policy`: the jump first in OUTPUT, and the chain's rules exactly (empty list: in place).
 */
export async function lockProblems(policy: Policy, families: readonly Family[], backend: Config["backend"], deps: Pick<ApplyDeps, "run" | "path">): Promise<string[]> {
  const { tools } = await chooseWithReason(backend, deps.run, deps.path);
  const problems: string[] = [];
  for (const family of families) {
    const saved = await saveFilter(tools[family], deps.run);
    const output = parseOutputRules(saved);
    if (output[0] !== JUMP_RULE) problems.push(`${family}: OUTPUT does not start with "${JUMP_RULE}" (${tools.backend} backend)`);
    const want = renderChain(policy, family);
    const have = saved.split("\n").filter((l) => l.startsWith(`-A ${CHAIN} `));
    const missing = want.filter((r) => !have.includes(r));
    const extra = have.filter((r) => !want.includes(r));
    if (missing.length > 0) problems.push(`${family}: ${missing.length} rule(s) of ${CHAIN} missing, first: ${missing[0]}`);
    if (extra.length > 0) problems.push(`${family}: ${extra.length} rule(s) in ${CHAIN} that the lock does not write, first: ${extra[0]}`);
  }
  return problems;
}
