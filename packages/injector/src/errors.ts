/** Base class of every error the injector raises on purpose; `code` is stable and safe to match on. */
export class InjectorError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A flag, environment variable or the injection config file is unusable (at start). */
export class ConfigError extends InjectorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_CONFIG", message, options);
  }
}
