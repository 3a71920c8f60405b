// Public surface of @tproxy/sidecar-init: the pieces a caller (or a test) composes.
export { parseConfig, DEFAULTS, OPTION_NAMES, type Config, type RawOptions, type Cidr, type Family, type Backend, type NodeTarget, type DnsAllow, type Resolver } from "./config.ts";
export { parseResolvConf, podResolvers } from "./resolv-conf.ts";
export { ownAddresses, type OwnAddress } from "./addresses.ts";
export { EXIT, SidecarInitError, ConfigError, IptablesMissingError, CapabilityError, NodeResolveError, IptablesError, WaitTimeoutError } from "./errors.ts";
export { CHAIN, JUMP_RULE, renderChain, restoreInput, parseOutputRules, type Policy } from "./rules.ts";
export { chooseTools, type Tools, type Runner } from "./iptables.ts";
export { probeOnce, waitForInterception, PROBE_HEADER, PROBE_VALUE } from "./probe.ts";
export { sidecarInit, type Deps } from "./lockdown.ts";
