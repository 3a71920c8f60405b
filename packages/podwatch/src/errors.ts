/** Base class of every error podwatch raises on purpose; `code` is stable and safe to match on. */
export class PodwatchError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A flag or environment variable given at start is unusable. */
export class ConfigError extends PodwatchError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_CONFIG", message, options);
  }
}

/** `iptables-save` or `iptables-restore` failed; `stderr` is what the command printed. */
export class IptablesError extends PodwatchError {
  readonly command: string;
  readonly exitCode: number | null;
  readonly stderr: string;
  constructor(command: string, exitCode: number | null, stderr: string, options?: { cause?: unknown }) {
    super("ERR_IPTABLES", `${command} failed (exit ${exitCode ?? "none"}): ${stderr.trim() || "no output"}`, options);
    this.command = command;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

/** The kernel's nat table could not be understood (not an `iptables-save` listing). */
export class RulesParseError extends PodwatchError {
  constructor(message: string) {
    super("ERR_RULES_PARSE", message);
  }
}
