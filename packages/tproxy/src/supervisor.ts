// One process per node: a supervisor on the main thread and N serving threads (serve-thread.ts), each
// a whole proxy listening on the same ports with SO_REUSEPORT, so the kernel spreads connections over
// them. One Node baseline instead of one per process, and what all threads share is done once, here: the
// filter is read, compiled and watched once (each version is evaluated by every thread, then put in force
// in all of them together, or refused by all), the admin endpoints (/metrics summed over the threads,
// /healthz, /readyz) are served here, and TLS session-ticket keys are shared, so a client resumes its
// session whichever thread it reaches.
//
// The supervisor is also the serving threads' watchdog: a filter hook runs on the thread that serves
// its request, and one that never yields can only be stopped from outside. Each thread publishes the
// deadline of the filter code it is running and a heartbeat in shared memory (HookWatch); a thread past
// twice its hook budget, or silent for too long, is terminated (its connections are reset, nothing is
// forwarded) and replaced. A thread that dies for any reason is replaced, with a back-off.
import { createHash, randomBytes } from "node:crypto";
import { Worker } from "node:worker_threads";
import type { Logger } from "pino";
import type { RunConfig } from "./config.ts";
import { readCaFiles } from "./certs/check.ts";
import { VolumeWatch } from "./util/volume-watch.ts";
import { newLeafKeyPem } from "./certs/leaf-key.ts";
import { FilterLoadError } from "./errors.ts";
import { buildFilter } from "./filter/build.ts";
import type { CompiledFilter } from "./filter/compile.ts";
import { HookWatch, clock } from "./filter/host.ts";
import { FilterReloader } from "./filter/reloader.ts";
import { trialEvaluate } from "./filter/trial.ts";
import { PodIdentitySource } from "./identity/pods.ts";
import { ClientCounts } from "./net/client-counts.ts";
import { listen } from "./net/listen.ts";
import { createAdminServer } from "./observe/admin.ts";
import type { Logging } from "./observe/log.ts";
import { CONTENT_TYPE, processMetrics, render } from "./observe/exposition.ts";
import { ProxyMetrics, addCounts, type MetricJson } from "./observe/metrics.ts";
import type { ServingState } from "./proxy.ts";
import type { FromThread, ThreadData, ToThread } from "./serve-thread.ts";

/** A thread that ran this long before it died counts as healthy: the back-off starts over. */
export const RESTART_RESET_MS = 60_000;

/**
 * Delay before replacing a dead thread: 200 ms, doubling for each death in a row up to 5 s. A death
 * after a thread ran RESTART_RESET_MS or longer starts the series over, so rare deaths spread over
 * days do not leave every later restart at the longest delay.
 */
export class RestartBackoff {
  #streak = 0;
  next(ranMs: number): number {
    if (ranMs >= RESTART_RESET_MS) this.#streak = 0;
    this.#streak += 1;
    return Math.min(5000, 100 * 2 ** Math.min(this.#streak, 6));
  }
}

/** A serving thread silent this long (no heartbeat, no filter code running) is stuck: replaced. */
export const STALL_MS = 5_000;

/** Budget of a version's top-level code (the trial's and each serving thread's). */
const LOAD_BUDGET_MS = 2000;
/** Top-level code slower than this on the trial thread gets a warning: each serving thread pauses as long. */
const SLOW_LOAD_MS = 50;
const THREAD_URL = new URL(`./serve-thread${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url);

interface Thread {
  index: number;
  worker: Worker;
  watch: HookWatch;
  spawnedAt: number;
  state: ServingState | undefined;
  /** Set once it was terminated on purpose (stuck): its exit is not reported again. */
  killed: boolean;
  /** Its counters as last reported (pushed every second, or asked for by a scrape). */
  metrics: MetricJson[];
}

export class Supervisor {
  #config: RunConfig;
  readonly #log: Logger;
  readonly #logging: Logging;
  /** The supervisor's own counters (reloads, the filter in force, thread replacements). */
  readonly metrics = new ProxyMetrics();
  readonly #process = processMetrics();
  /** Counters of serving threads that are gone, as they last reported them. */
  readonly #retired: MetricJson[] = [];
  readonly #ticketKeys = randomBytes(48);
  readonly #leafKeyPem = newLeafKeyPem();
  /** Connections per source address, one count for all threads (--max-client-connections is per pod). */
  readonly #clientCounts = new ClientCounts();
  readonly #threads = new Map<number, Thread>();
  readonly #backoff = new RestartBackoff();
  readonly #pending = new Map<number, (msg: FromThread) => void>();
  #nextId = 1;
  #current: CompiledFilter | undefined;
  /** The filter compiled at start, before any thread exists: what the first threads start with. */
  #initial: CompiledFilter | undefined;
  #reloader: FilterReloader | undefined;
  #stopping = false;
  /** The CA in force, read and checked here once and handed to every thread (a new one too). */
  #ca: { certPem: string; keyPem: string } | undefined;
  /** What the mounted CA files held when last read (a pair's hash, or why they cannot be used): each change is reported once. */
  #caSeen: string | undefined;
  #caWatch: VolumeWatch | undefined;
  #watchdog: NodeJS.Timeout | undefined;
  /** podwatch's pod map (--pod-identity-file), read here once for all threads. */
  #pods: PodIdentitySource | undefined;

  constructor(config: RunConfig, logging: Logging) {
    this.#config = config;
    this.#logging = logging;
    this.#log = logging.log;
  }

  /** The filter version in force in every thread (the FilterReloader's view). */
  get current(): { hash: string } | undefined {
    return this.#current;
  }

  async start(): Promise<{ metrics: number }> {
    const config = this.#config;
    // Fail at start, once, with one clear line, rather than in every thread.
    const ca = await readCaFiles(config.caCert, config.caKey);
    this.#ca = { certPem: ca.certPem, keyPem: ca.keyPem };
    this.#caSeen = caHash(ca.certPem, ca.keyPem);
    this.metrics.caExpiry.set(Math.floor(ca.notAfter.getTime() / 1000));
    const admin = createAdminServer({
      metrics: async () => ({ contentType: CONTENT_TYPE, body: await this.#scrape() }),
      readiness: () => this.#readiness(),
    });
    // SO_REUSEPORT here too: during a rolling update (maxSurge) the new pod's proxy binds every port on
    // the same node while the old one still serves them, this one as well.
    const metricsPort = await listen(admin, config.metricsPort, config.metricsAddress, { reusePort: true });
    this.#admin = admin;
    // A replacement proxy (a rolling update with maxSurge) shares the ports with the one it replaces, and
    // the kernel hands its listeners connections from the moment they are bound: its threads start with
    // the filter already evaluated, so that none of those connections gets "no filter is loaded". This
    // compile is only a head start: the reloader below loads the file again, and reports what is wrong
    // with it; a version the threads cannot evaluate leaves them without a filter, as it did before. It is
    // type-checked like every version (when the memory limit affords it, as for every version): one with
    // type errors must not get in force by the head start.
    this.#initial = await buildFilter(config.filter, { onCheckSkipped: () => undefined }).catch(() => undefined);
    // Read before the first thread starts, so that it starts knowing the pods.
    if (config.podIdentityFile !== undefined) {
      this.#pods = new PodIdentitySource(config.podIdentityFile, this.#log, (snapshot) => {
        for (const t of this.#threads.values()) t.worker.postMessage({ type: "pods", snapshot } satisfies ToThread);
      });
      await this.#pods.start();
    }
    // Threads only once the admin port is ours: a start that fails, fails before any thread runs. The
    // first binds the ports; the others (and every replacement) bind the same ones, also when the
    // configuration asked for any free port (0).
    this.#spawn(0);
    const bound = await this.#started(this.#threads.get(0)!);
    this.#config = { ...this.#config, transparentPort: bound.transparent, standardPort: bound.standard };
    for (let i = 1; i < config.workers; i += 1) this.#spawn(i);
    await Promise.all([...this.#threads.values()].filter((t) => t.index > 0).map((t) => this.#started(t)));
    // Each thread reported its state before "started": the head start is in force if every one runs it.
    const initial = this.#initial;
    this.#initial = undefined;
    if (initial && [...this.#threads.values()].every((t) => t.state?.filter === initial.hash)) this.#current = initial;
    this.#reloader = new FilterReloader(config.filter, this, this.#log, {
      onLoaded: (hash) => {
        this.metrics.filterReloads.inc({ result: "success" });
        this.metrics.setFilter(hash);
      },
      onError: (err) => {
        this.metrics.filterReloads.inc({ result: "error" });
        this.metrics.filterLoadFailures.inc({ reason: err.reason });
      },
    });
    await this.#reloader.start();
    this.#caWatch = await VolumeWatch.start([config.caCert, config.caKey], "CA", this.#log, () => { void this.#checkCa(); });
    const tick = Math.max(10, Math.min(100, Math.floor(config.filterTimeoutMs / 4)));
    this.#watchdog = setInterval(() => this.#patrol(), tick);
    this.#watchdog.unref();
    this.#log.info({ workers: config.workers, transparent: this.#config.transparentPort, standard: this.#config.standardPort, metrics: metricsPort, filter: config.filter, hash: this.#current?.hash ?? null }, "tproxy listening");
    return { metrics: metricsPort };
  }

  #admin: import("node:http").Server | undefined;

  #spawn(index: number): void {
    const watch = new HookWatch();
    const data: ThreadData = { index, config: this.#config, ticketKeys: this.#ticketKeys, leafKeyPem: this.#leafKeyPem, ca: this.#ca!, clientCounts: this.#clientCounts.buffer, watch: watch.buffer, filter: this.#current ?? this.#initial, pods: this.#pods?.snapshot };
    const worker = new Worker(THREAD_URL, {
      workerData: data,
      // Young-generation space is what grows with throughput in each isolate; bounded, throughput stays
      // the same (npm run bench) and each thread costs a few MiB less.
      resourceLimits: { maxYoungGenerationSizeMb: 8 },
    });
    const thread: Thread = { index, worker, watch, spawnedAt: clock(), state: undefined, killed: false, metrics: [] };
    this.#threads.set(index, thread);
    worker.on("message", (msg: FromThread) => this.#onMessage(thread, msg));
    worker.on("error", (err) => this.#log.error({ thread: index, err: err.stack ?? err.message }, "serving thread failed"));
    worker.on("exit", (code) => this.#onExit(thread, code));
  }

  #started(thread: Thread): Promise<{ transparent: number; standard: number | undefined }> {
    return new Promise((resolve, reject) => {
      const onMessage = (msg: FromThread): void => {
        if (msg.type !== "started") return;
        thread.worker.off("message", onMessage);
        thread.worker.off("exit", onExit);
        resolve(msg.ports);
      };
      const onExit = (code: number): void => reject(new Error(`serving thread ${thread.index} exited with ${code} while starting (see the lines above)`));
      thread.worker.on("message", onMessage);
      thread.worker.once("exit", onExit);
    });
  }

  #onMessage(thread: Thread, msg: FromThread): void {
    if (msg.type === "metrics") thread.metrics = msg.metrics;
    if (msg.type === "state") thread.state = msg.state;
    // Answers carry the id of their question (ids are unique over all threads); a pushed report has id 0.
    else if (msg.type === "prepared" || msg.type === "metrics") this.#pending.get(msg.id)?.(msg);
  }

  #onExit(thread: Thread, code: number): void {
    if (this.#threads.get(thread.index) === thread) this.#threads.delete(thread.index);
    addCounts(this.#retired, thread.metrics);
    if (this.#stopping) {
      if (this.#threads.size === 0) this.#finish();
      return;
    }
    const ranMs = clock() - thread.spawnedAt;
    if (!thread.killed) {
      this.metrics.workerRestarts.inc({ reason: "exited" });
      this.#log.error({ thread: thread.index, code, ranMs: Math.round(ranMs) }, "serving thread exited; starting another");
    }
    const delay = thread.killed ? 0 : this.#backoff.next(ranMs);
    setTimeout(() => {
      if (!this.#stopping && !this.#threads.has(thread.index)) this.#spawn(thread.index);
    }, delay).unref();
  }

  /** The watchdog: a thread past twice its hook budget, or without a heartbeat for STALL_MS, is replaced. */
  #patrol(): void {
    const now = clock();
    const budget = this.#config.filterTimeoutMs;
    for (const t of this.#threads.values()) {
      if (t.killed) continue;
      const deadline = t.watch.deadline;
      if (deadline > 0 && now > deadline + Math.max(budget, 50)) {
        this.#kill(t, "hook-stuck", `filter code ran more than ${Math.round(now - deadline + budget)} ms without yielding (budget ${budget} ms)`);
      } else if (deadline === 0 && now - Math.max(t.watch.lastBeat, t.spawnedAt) > STALL_MS) {
        this.#kill(t, "stalled", `no heartbeat for ${Math.round(now - Math.max(t.watch.lastBeat, t.spawnedAt))} ms`);
      }
    }
  }

  #kill(thread: Thread, reason: "hook-stuck" | "stalled", why: string): void {
    thread.killed = true;
    this.metrics.workerRestarts.inc({ reason });
    this.#log.error({ thread: thread.index, reason }, `serving thread replaced: ${why}; its connections were reset`);
    void thread.worker.terminate();
  }

  #ask<T extends FromThread>(thread: Thread, make: (id: number) => ToThread, timeoutMs: number): Promise<T | undefined> {
    const id = this.#nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(undefined), timeoutMs);
      const onExit = (): void => done(undefined);
      const done = (msg: T | undefined): void => {
        clearTimeout(timer);
        this.#pending.delete(id);
        thread.worker.off("exit", onExit);
        resolve(msg);
      };
      this.#pending.set(id, (msg) => done(msg as T));
      thread.worker.once("exit", onExit);
      thread.worker.postMessage(make(id));
    });
  }

  /**
   * FilterReloader's target: every thread evaluates the version; only if all that answered succeed (and at
   * least one did) is it put in force, in all of them; otherwise it is refused and the previous one stays
   * everywhere.
   */
  async load(compiled: CompiledFilter): Promise<void> {
    // First on a thread of its own (filter/trial.ts): top-level code that loops or outlasts the budget is
    // refused there, and never holds up a serving thread.
    const trialMs = await trialEvaluate(compiled, LOAD_BUDGET_MS);
    if (trialMs > SLOW_LOAD_MS) {
      this.#log.warn({ filter: compiled.path, hash: compiled.hash, ms: Math.round(trialMs) }, `the filter's top-level code took ${Math.round(trialMs)} ms on its trial thread: each serving thread pauses that long once to evaluate it (requests wait, none fails); move slow work out of the top level`);
    }
    const threads = [...this.#threads.values()].filter((t) => !t.killed);
    const timeout = LOAD_BUDGET_MS + this.#config.filterTimeoutMs * 2 + 1000;
    const ids = new Map<Thread, number>();
    const answers = await Promise.all(threads.map((t) => this.#ask<Extract<FromThread, { type: "prepared" }>>(t, (id) => {
      ids.set(t, id);
      return { type: "prepare", id, filter: compiled };
    }, timeout)));
    // A thread that was replaced meanwhile has no say (its replacement starts with the version in force, and
    // is brought up to date below); one that evaluated the version and failed refuses it for all.
    let failure = answers.find((a) => a?.error !== undefined)?.error;
    if (failure === undefined && !answers.some((a) => a !== undefined)) failure = "no serving thread evaluated it (they were replaced meanwhile; see the lines above)";
    for (const [t, id] of ids) t.worker.postMessage({ type: failure === undefined ? "commit" : "discard", id } satisfies ToThread);
    if (failure !== undefined) throw new FilterLoadError(failure);
    this.#current = compiled;
    // A thread started while this version was being evaluated runs the one before: bring it up to date.
    for (const t of this.#threads.values()) if (!ids.has(t)) t.worker.postMessage({ type: "load", filter: compiled } satisfies ToThread);
  }

  /**
   * The mounted CA changed (the kubelet swapped the Secret volume's `..data`): check the new pair and hand
   * it to every thread, which signs with it from its next new connection on. A pair that does not check
   * (half written, key of another certificate, expired) is logged and the CA in force stays.
   */
  async #checkCa(): Promise<void> {
    let files;
    try {
      files = await readCaFiles(this.#config.caCert, this.#config.caKey);
    } catch (err) {
      const seen = `error:${(err as Error).message}`;
      if (seen === this.#caSeen) return;
      this.#caSeen = seen;
      this.metrics.caReloads.inc({ result: "error" });
      this.#log.error({ err: (err as Error).message }, "the mounted CA changed but cannot be used; the CA in force stays");
      return;
    }
    const hash = caHash(files.certPem, files.keyPem);
    if (hash === this.#caSeen) return;
    this.#caSeen = hash;
    if (this.#ca && caHash(this.#ca.certPem, this.#ca.keyPem) === hash) return; // back to the pair in force after a broken one
    this.#ca = { certPem: files.certPem, keyPem: files.keyPem };
    this.metrics.caReloads.inc({ result: "success" });
    this.metrics.caExpiry.set(Math.floor(files.notAfter.getTime() / 1000));
    for (const t of this.#threads.values()) t.worker.postMessage({ type: "ca", ...this.#ca } satisfies ToThread);
    this.#log.info({ notAfter: files.notAfter.toISOString(), fingerprint: hash.slice(0, 16) }, "CA reloaded: new connections get certificates it signs");
  }

  async #scrape(): Promise<string> {
    const parts = await Promise.all([...this.#threads.values()].map((t) => this.#ask<Extract<FromThread, { type: "metrics" }>>(t, (id) => ({ type: "metrics", id }), 2000)));
    return render(this.#process, [this.metrics.toJSON(), this.#retired, this.#pods?.metrics() ?? [], ...parts.filter((p) => p !== undefined).map((p) => p.metrics)]);
  }

  // Ready: every thread up, not draining, and running the filter in force (without one, every request is denied).
  #readiness(): { ready: boolean; text: string } {
    const all = [...this.#threads.values()];
    const current = this.#current?.hash;
    const readyOnes = all.filter((t) => !t.killed && t.state?.ready && t.state.filter === current);
    const ready = !this.#stopping && current !== undefined && readyOnes.length === this.#config.workers;
    if (ready) return { ready, text: `ready filter=${current}\n` };
    if (this.#stopping) return { ready, text: "not ready: draining\n" };
    if (current === undefined) return { ready, text: "not ready: no filter loaded\n" };
    return { ready, text: `not ready: ${readyOnes.length}/${this.#config.workers} serving threads ready\n` };
  }

  /** SIGTERM: /readyz turns 503, every thread drains (requests in flight finish), then the process exits. */
  stop(signal: string): void {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#log.info({ signal }, "draining serving threads");
    clearInterval(this.#watchdog);
    void this.#reloader?.close();
    void this.#caWatch?.close();
    void this.#pods?.close();
    if (this.#threads.size === 0) return this.#finish();
    for (const t of this.#threads.values()) t.worker.postMessage({ type: "drain" } satisfies ToThread);
    // Threads that do not finish draining in time are ended with the process.
    setTimeout(() => this.#finish(), this.#config.drainTimeoutMs + 2000).unref();
  }

  #finish(): void {
    this.#admin?.close();
    this.#admin?.closeAllConnections();
    this.#log.info("tproxy stopped");
    this.#logging.flush();
    process.exit(0);
  }
}

function caHash(certPem: string, keyPem: string): string {
  return createHash("sha256").update(certPem).update("\0").update(keyPem).digest("hex");
}
