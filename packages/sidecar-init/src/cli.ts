#!/usr/bin/env node
// tproxy-sidecar-init: run once, as an init container, in the pod's network namespace.
import { Command, CommanderError, Option } from "commander";
import { DEFAULTS, OPTION_NAMES, parseConfig, type RawOptions } from "./config.ts";
import { EXIT, SidecarInitError } from "./errors.ts";
import { sidecarInit } from "./lockdown.ts";
import { createLogger } from "./logger.ts";

const NAME = "tproxy-sidecar-init";

function fail(err: unknown): never {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`${NAME}: ${message.replace(/\s*\n\s*/g, " ")}\n`);
  process.exit(err instanceof SidecarInitError ? err.exitCode : 1);
}

const env = (key: keyof typeof OPTION_NAMES): string => `[env: ${OPTION_NAMES[key].env}]`;
const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

const program = new Command(NAME)
  .description(
    "Locks a pod's egress (IPv4 and IPv6) to DNS (the pod's own nameservers by default) and the ports the node redirects to its proxy, in one iptables-restore " +
      "transaction per family (chain TPROXY-EGRESS, jumped from OUTPUT), then waits until the node's proxy intercepts. " +
      "Needs NET_ADMIN (and NET_RAW for the legacy backend), not privileged.",
  )
  .addOption(new Option("--mode <mode>", `lock: write the lock (needs NET_ADMIN), then wait; wait: CNI mode, the tproxy-cni plugin locked the pod: check the lock without any capability, then wait; default lock ${env("mode")}`))
  .addOption(new Option("--allow-dns <ip>", `resolver DNS (udp+tcp 53) may reach, instead of the nameservers of --resolv-conf; repeat or comma-separate; "any": every address (logs a warning) ${env("allowDns")}`).argParser(collect))
  .addOption(new Option("--resolv-conf <path>", `file whose nameservers DNS may reach when --allow-dns is not given (none listed: exit ${EXIT.config}); default ${DEFAULTS.resolvConf} ${env("resolvConf")}`))
  .addOption(new Option("--block-cidr <cidr>", `refuse this block even on the allowed ports (e.g. the service range); repeatable ${env("blockCidr")}`).argParser(collect))
  .addOption(new Option("--node-ip <ip>", `node address whose standard-mode port is allowed ${env("nodeIp")}`))
  .addOption(new Option("--node-name <name>", `node name (or IP) whose standard-mode port is allowed; resolved at start ${env("nodeName")}`))
  .addOption(new Option("--standard-port <port>", `the node's standard (explicit) proxy port; default ${DEFAULTS.standardPort} ${env("standardPort")}`))
  .addOption(new Option("--ports <list>", `TCP ports allowed out, which the node redirects; default ${DEFAULTS.ports.join(",")} ${env("ports")}`))
  .addOption(new Option("--ipv6-intercepted", `the node intercepts this pod's IPv6 too: allow the ports over IPv6 (default: refused) ${env("ipv6Intercepted")}`))
  .addOption(new Option("--wait-timeout <duration>", `how long to wait for interception, e.g. 60s, 500ms, 2m; default 60s ${env("waitTimeout")}`))
  .addOption(new Option("--no-wait", `exit after locking, without waiting for interception ${env("wait")}`))
  .addOption(new Option("--probe-address <ip>", `TEST-NET address whose port 80 only the node's proxy answers; default ${DEFAULTS.probeAddress} ${env("probeAddress")}`))
  .addOption(new Option("--iptables-backend <mode>", `auto, nft or legacy; default auto ${env("iptablesBackend")}`))
  .addOption(new Option("--dry-run", `print the exact iptables-restore input and change nothing ${env("dryRun")}`))
  .addOption(new Option("--log-level <level>", `fatal, error, warn, info, debug, trace or silent; default info ${env("logLevel")}`))
  .addHelpText(
    "after",
    `\nExit status: ${EXIT.ok} locked and intercepted (or locked with --no-wait, or printed with --dry-run); ${EXIT.config} invalid flag or variable;\n` +
      `${EXIT.lockMissing} --mode wait found the pod unlocked; ${EXIT.environment} cannot apply (iptables missing, capability missing, node name unresolvable, rules refused); ${EXIT.waitTimeout} locked but interception never answered.`,
  )
  .exitOverride()
  .configureOutput({ outputError: (text, write) => write(`${NAME}: ${text.replace(/^error: /, "").trim().replace(/\s*\n\s*/g, " ")}\n`) });

try {
  program.parse();
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : EXIT.config);
  fail(err);
}

try {
  const config = parseConfig(program.opts<RawOptions>());
  const log = createLogger(config.logLevel);
  await sidecarInit(config, log);
  process.exit(EXIT.ok);
} catch (err) {
  fail(err);
}
