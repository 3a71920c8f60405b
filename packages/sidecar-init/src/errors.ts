// Typed errors of sidecar-init. Each carries a stable `code` and the process exit status it maps to,
// so the CLI ends with one line naming the cause and a documented exit code.

/** Exit statuses (also in the README). */
export const EXIT = Object.freeze({
  ok: 0,
  /** A flag or environment value is invalid. */
  config: 2,
  /** The environment cannot apply the rules: binary missing, capability missing, name unresolvable, restore refused. */
  environment: 3,
  /** The rules are in place but the node's interception never answered. */
  waitTimeout: 4,
  /** --mode wait: the pod's namespace is not locked. */
  lockMissing: 5,
});

export abstract class SidecarInitError extends Error {
  abstract readonly code: string;
  abstract readonly exitCode: number;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A flag or environment value is invalid; the message names the flag, the value and what was expected. */
export class ConfigError extends SidecarInitError {
  readonly code = "ERR_CONFIG";
  readonly exitCode = EXIT.config;
}

/** An iptables binary the chosen backend needs is not on PATH. */
export class IptablesMissingError extends SidecarInitError {
  readonly code = "ERR_IPTABLES_MISSING";
  readonly exitCode = EXIT.environment;
}

/** The process lacks a capability iptables needs (NET_ADMIN, or NET_RAW for the legacy backend). */
export class CapabilityError extends SidecarInitError {
  readonly code = "ERR_CAPABILITY";
  readonly exitCode = EXIT.environment;
}

/** The node name given for standard mode does not resolve. */
export class NodeResolveError extends SidecarInitError {
  readonly code = "ERR_NODE_UNRESOLVABLE";
  readonly exitCode = EXIT.environment;
}

/** iptables-save or iptables-restore failed; a failed restore changed nothing (it is one transaction). */
export class IptablesError extends SidecarInitError {
  readonly code = "ERR_IPTABLES";
  readonly exitCode = EXIT.environment;
}

/** The lockdown is in place but the node's proxy did not answer the probe before the deadline. */
export class WaitTimeoutError extends SidecarInitError {
  readonly code = "ERR_WAIT_TIMEOUT";
  readonly exitCode = EXIT.waitTimeout;
}

/** --mode wait found the pod's namespace unlocked (the CNI plugin did not lock it): the app must not start. */
export class LockMissingError extends SidecarInitError {
  readonly code = "ERR_LOCK_MISSING";
  readonly exitCode = EXIT.lockMissing;
}
