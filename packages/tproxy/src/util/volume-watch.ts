// Watching files the way Kubernetes updates a ConfigMap or Secret volume. Such a volume holds timestamped
// data directories, a `..data` symlink to the current one, and `<key> -> ..data/<key>` links. An update
// writes a new data directory and swaps `..data` atomically (rename of `..data_tmp`), so a file's own path
// never changes and a watch on its inode would miss it: the directories are watched instead, and any
// event there (debounced), or a slow poll for volumes that deliver no events, asks the owner to look again.
import { dirname } from "node:path";
import { watch, type FSWatcher } from "chokidar";
import type { Logger } from "pino";

export class VolumeWatch {
  readonly #watcher: FSWatcher;
  readonly #poll: NodeJS.Timeout;
  #debounce: NodeJS.Timeout | undefined;

  private constructor(watcher: FSWatcher, poll: NodeJS.Timeout) {
    this.#watcher = watcher;
    this.#poll = poll;
  }

  /** Watches the folders of `paths`; `onChange` runs ~100 ms after events settle, and every `pollMs`. */
  static async start(paths: string[], what: string, log: Logger, onChange: () => void, options: { pollMs?: number } = {}): Promise<VolumeWatch> {
    const watcher = watch([...new Set(paths.map((p) => dirname(p)))], { ignoreInitial: true, depth: 0, followSymlinks: false, persistent: false });
    let self: VolumeWatch | undefined;
    watcher.on("all", () => self?.schedule(onChange));
    watcher.on("error", (err) => log.warn({ err }, `${what} watch error`));
    await new Promise<void>((resolve) => watcher.once("ready", () => resolve()));
    const poll = setInterval(() => self?.schedule(onChange), options.pollMs ?? 10_000);
    poll.unref();
    self = new VolumeWatch(watcher, poll);
    return self;
  }

  schedule(onChange: () => void): void {
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(onChange, 100);
    this.#debounce.unref();
  }

  async close(): Promise<void> {
    clearTimeout(this.#debounce);
    clearInterval(this.#poll);
    await this.#watcher.close();
  }
}
