/** Base class of every error tproxy raises on purpose; `code` is stable and safe to match on. */
export class TproxyError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A flag, environment variable or file given at start is unusable. */
export class ConfigError extends TproxyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_CONFIG", message, options);
  }
}

/** A certificate or key could not be read, parsed or used. */
export class CertificateError extends TproxyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_CERTIFICATE", message, options);
  }
}

/** One thing wrong with a filter, where the compiler or type checker found it. */
export interface FilterDiagnostic {
  /** Absolute path of the file at fault, when known. */
  file: string | undefined;
  line: number | undefined;
  column: number | undefined;
  message: string;
}

/** Why a filter version was refused: unreadable, does not compile, has type errors, or its code fails when evaluated. */
export type FilterLoadReason = "read" | "compile" | "type" | "evaluate";

/** "file:line:col: message" (or less, when the location is not known). */
export function formatDiagnostic(d: FilterDiagnostic): string {
  const at = d.file === undefined ? undefined : d.line === undefined ? d.file : `${d.file}:${d.line}:${d.column ?? 1}`;
  return at === undefined ? d.message : `${at}: ${d.message}`;
}

/** The filter script does not compile or its module does not have the expected shape. */
export class FilterLoadError extends TproxyError {
  /** "file:line:col" of the first error, when the compiler gave one. */
  readonly location: string | undefined;
  readonly reason: FilterLoadReason;
  /** Every error found (compile and type errors), each with its own file:line:col. */
  readonly diagnostics: FilterDiagnostic[];
  constructor(message: string, location?: string, options?: { cause?: unknown; reason?: FilterLoadReason; diagnostics?: FilterDiagnostic[] }) {
    super("ERR_FILTER_LOAD", message, options);
    this.location = location;
    this.reason = options?.reason ?? "evaluate";
    this.diagnostics = options?.diagnostics ?? [];
  }

  /** One error for a list of diagnostics: its message is the first (and how many more), `diagnostics` has them all. */
  static from(reason: FilterLoadReason, diagnostics: FilterDiagnostic[]): FilterLoadError {
    const first = diagnostics[0]!;
    const more = diagnostics.length > 1 ? ` (and ${diagnostics.length - 1} more error${diagnostics.length > 2 ? "s" : ""})` : "";
    const location = first.file !== undefined && first.line !== undefined ? `${first.file}:${first.line}:${first.column ?? 1}` : undefined;
    return new FilterLoadError(`${formatDiagnostic(first)}${more}`, location, { reason, diagnostics });
  }
}

/** A hook threw or rejected while handling one request. */
export class FilterHookError extends TproxyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_FILTER_HOOK", message, options);
  }
}

/** A hook did not finish within the time budget. */
export class FilterTimeoutError extends TproxyError {
  constructor(hook: string, budgetMs: number) {
    super("ERR_FILTER_TIMEOUT", `filter ${hook} hook did not finish within ${budgetMs} ms`);
  }
}

/** Expected: a connection that is neither TLS nor HTTP, or that ended before saying anything. Closed, not a fault. */
export class UnknownProtocolError extends TproxyError {
  constructor(message: string) {
    super("ERR_UNKNOWN_PROTOCOL", message);
  }
}
