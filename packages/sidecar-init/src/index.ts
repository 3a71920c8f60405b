// Public surface of @tproxy/sidecar-init: the pieces a caller (or a test) composes.
export { parseConfig, DEFAULTS, OPTION_NAMES, type Config, type RawOptions, type Cidr, type Family, type Backend, type NodeTarget, type DnsAllow, type Resolver } from "./config.ts";
export { parseResolvConf, podResolvers } from "./resolv-conf.ts";
export { ownAddresses, type OwnAddress } from "./addresses.ts";
export { EXIT, SidecarInitError, ConfigError, IptablesMissingError, CapabilityError, NodeResolveError, IptablesError, WaitTimeoutError, LockMissingError } from "./errors.ts";
export { CHAIN, JUMP_RULE, renderChain, restoreInput, parseOutputRules, type Policy } from "./rules.ts";
export { chooseTools, type Tools, type Runner } from "./iptables.ts";
export { probeOnce, waitForInterception, PROBE_HEADER, PROBE_VALUE } from "./probe.ts";
export { sidecarInit, applyLock, lockProblems, type Deps, type ApplyDeps } from "./lockdown.ts";
export { lockRefuses, REFUSED_PORT, type LockCheck } from "./verify-lock.ts";
export { runPlugin, type PluginDeps, type Outcome } from "./cni/plugin.ts";
export { CNI_CODE, CniError, SUPPORTED_VERSIONS, PLUGIN_TYPE } from "./cni/spec.ts";
export { parseSettings, DEFAULT_SOCKET, DEFAULT_EXCLUDED_NAMESPACES, type PluginSettings } from "./cni/settings.ts";
