// Watches the filter's directory the way Kubernetes updates a ConfigMap volume (util/volume-watch.ts) and
// loads each new version: any event leads to re-reading every file of the directory and comparing hashes,
// so a change to an imported file alone is a new version. Each version is compiled and type-checked
// (build.ts) before the target evaluates it.
import type { Logger } from "pino";
import { FilterLoadError, formatDiagnostic } from "../errors.ts";
import { buildSnapshot } from "./build.ts";
import { filterEntry, readFilterSnapshot } from "./compile.ts";
import { VolumeWatch } from "../util/volume-watch.ts";
import type { CompiledFilter } from "./compile.ts";

/** Where loaded versions go: a FilterHost, or the supervisor that hands them to every serving thread. */
export interface FilterTarget {
  load(compiled: CompiledFilter): Promise<unknown>;
  readonly current: { readonly hash: string } | undefined;
}

export interface ReloaderEvents {
  onLoaded?(hash: string): void;
  onError?(err: FilterLoadError): void;
}

export class FilterReloader {
  readonly #path: string;
  readonly #host: FilterTarget;
  readonly #log: Logger;
  readonly #events: ReloaderEvents;
  #watch: VolumeWatch | undefined;
  #running: Promise<void> = Promise.resolve();
  /** Hash of the last source we tried (loaded or failed), so a broken file is reported once, not on every event. */
  #lastSeen: string | undefined;

  constructor(path: string, host: FilterTarget, log: Logger, events: ReloaderEvents = {}) {
    this.#path = path;
    this.#host = host;
    this.#log = log;
    this.#events = events;
  }

  /** Loads the filter once (a failure leaves no filter: every request is denied), then watches it. */
  async start(options: { pollMs?: number } = {}): Promise<void> {
    await this.check();
    // --filter may name the directory: watch inside it (the watch is on the folder of the path it gets).
    const entry = await filterEntry(this.#path).catch(() => this.#path);
    this.#watch = await VolumeWatch.start([entry], "filter", this.#log, () => { void this.check(); }, options);
    // A swap between the first load and the watch becoming ready produced no event: look once more.
    await this.check();
  }

  /** Re-reads the filter and loads it if it changed. Serialised: one check at a time. */
  check(): Promise<void> {
    this.#running = this.#running.then(() => this.#check());
    return this.#running;
  }

  async #check(): Promise<void> {
    try {
      const snap = await readFilterSnapshot(this.#path);
      if (snap.hash === this.#lastSeen) return;
      this.#lastSeen = snap.hash;
      // Already in force (the supervisor's head start at startup, or a file put back after a refused
      // version): nothing to check or evaluate again.
      if (snap.hash === this.#host.current?.hash) {
        this.#log.info({ filter: this.#path, hash: snap.hash, files: snap.files.size }, "filter loaded (the version in force)");
        this.#events.onLoaded?.(snap.hash);
        return;
      }
      const started = performance.now();
      const compiled = await buildSnapshot(snap, this.#path, {
        onCheckSkipped: (why) => this.#log.warn({ filter: this.#path, hash: snap.hash }, `filter not type-checked: ${why}; it is compiled and its shape checked when evaluated (raise the limit to have it checked)`),
      });
      const checked = performance.now();
      await this.#host.load(compiled);
      this.#log.info({ filter: this.#path, hash: compiled.hash, files: snap.files.size, checkMs: Math.round(checked - started), ms: Math.round(performance.now() - checked) }, "filter loaded");
      this.#events.onLoaded?.(compiled.hash);
    } catch (err) {
      const e = err instanceof FilterLoadError ? err : new FilterLoadError(String(err));
      if (e.message.startsWith("cannot read filter")) this.#lastSeen = undefined; // try again on the next event
      const current = this.#host.current;
      // Every error on a line of its own, each with its file:line:col: the summary below names only the first.
      if (e.diagnostics.length > 1) {
        for (const d of e.diagnostics) this.#log.error({ filter: this.#path, reason: e.reason, file: d.file, line: d.line, column: d.column }, formatDiagnostic(d));
      }
      this.#log.error(
        { filter: this.#path, location: e.location, reason: e.reason, kept: current?.hash ?? null },
        current ? `filter not loaded, previous version stays in force: ${e.message}` : `filter not loaded, no filter in force (every request is denied): ${e.message}`,
      );
      this.#events.onError?.(e);
    }
  }

  async close(): Promise<void> {
    await this.#watch?.close();
  }
}
