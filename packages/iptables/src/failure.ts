// Why an iptables program failed, told from its exit status and what it printed, so each caller can
// say the one useful thing: install the package, add the capability, retry later, or fix the rules.

/**
 * - `missing`: the program is not there (not on PATH, or could not be started).
 * - `permission`: the kernel refused: the process lacks NET_ADMIN (or NET_RAW for legacy).
 * - `lock`: another program held the xtables lock longer than the wait allowed.
 * - `rules`: the kernel or the parser refused the input (a bad rule, a missing chain or module).
 * - `timeout`: the program ran longer than the time given to it and was killed.
 * - `other`: anything else (output kept in the message).
 */
export type FailureKind = "missing" | "permission" | "lock" | "rules" | "timeout" | "other";

/** An iptables program failed. `command` is the command line, `stderr` what it printed. */
export class IptablesFailure extends Error {
  readonly kind: FailureKind;
  readonly command: string;
  /** Exit status; null when it did not exit on its own (not started, or killed). */
  readonly exitCode: number | null;
  readonly stderr: string;
  constructor(kind: FailureKind, command: string, exitCode: number | null, stderr: string, options?: { cause?: unknown }) {
    super(`${command} failed (${exitCode === null ? "no exit status" : `exit ${exitCode}`}, ${kind}): ${firstLine(stderr)}`, options);
    this.name = new.target.name;
    this.kind = kind;
    this.command = command;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

/** The first non-empty line of a program's output, for one-line messages. */
export function firstLine(text: string): string {
  return text.split("\n").map((l) => l.trim()).find((l) => l !== "") ?? "(no output)";
}

// iptables' exit statuses (xtables.h): 1 OTHER_PROBLEM, 2 PARAMETER_PROBLEM, 3 VERSION_PROBLEM,
// 4 RESOURCE_PROBLEM. The lock and a refused permission are both 4 (and sometimes 1), so the message
// decides between them; a shell's 126/127 mean the program could not be run at all.
const PERMISSION = /permission denied|operation not permitted|you must be root|can't initialize .*: permission/i;
const LOCK = /xtables lock|another app is currently holding/i;
const RULES = /line \d+ failed|bad argument|unknown option|no chain\/target\/match|invalid argument|does not exist|couldn't load|can't find|not found|parameter problem|try `[^`]*--help'/i;

/** Classifies a finished run. `killed` tells a run stopped by its timeout. */
export function classify(exitCode: number | null, stderr: string, killed = false): FailureKind {
  if (killed) return "timeout";
  if (exitCode === 126 || exitCode === 127) return "missing";
  if (LOCK.test(stderr)) return "lock";
  if (PERMISSION.test(stderr)) return "permission";
  if (exitCode === 2 || RULES.test(stderr)) return "rules";
  return "other";
}
