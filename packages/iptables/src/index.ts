// Public surface of @tproxy/iptables: what podwatch and sidecar-init share about iptables.
export { PROBE_ADDRESS, PROBE_HEADER, PROBE_VALUE, REDIRECTED_PORTS, DEFAULT_TRANSPARENT_PORT, POD_IDENTITY_FORMAT, POD_IDENTITY_REFRESH_MS, POD_IDENTITY_MAX_AGE_MS, CNI_UNINSTALL_MARKER_SUFFIX, type PodIdentityFile } from "./contract.ts";
export { FAMILIES, which, programNames, locate, type Family, type Backend, type Variant, type FamilyTools, type Tools } from "./tools.ts";
export { execRunner, save, restore, DEFAULT_LOCK_WAIT_SECONDS, type Runner, type RunResult, type ExecRunnerOptions, type RestoreOptions } from "./exec.ts";
export { IptablesFailure, classify, firstLine, type FailureKind } from "./failure.ts";
export { detectBackend, chooseTools, otherTools, countRules, ToolsMissing, KUBELET_CHAINS, BACKEND_CHOICES, type BackendChoice, type Detection, type BothTools, type Chosen } from "./detect.ts";
