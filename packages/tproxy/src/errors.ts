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

/** The filter script does not compile or its module does not have the expected shape. */
export class FilterLoadError extends TproxyError {
  /** "file:line:col" of the first error, when the compiler gave one. */
  readonly location: string | undefined;
  constructor(message: string, location?: string, options?: { cause?: unknown }) {
    super("ERR_FILTER_LOAD", message, options);
    this.location = location;
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
