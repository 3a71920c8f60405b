// Level-based reconcile: from the pod cache compute the wanted chain, compare with the kernel's, apply
// the difference in one transaction per family. Triggers are coalesced; failures retry with backoff.
import type { V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { Backoff, type Clock, type Timer } from "./clock.ts";
import { selectRedirects, type Family, type Redirect } from "./desired.ts";
import { parseFilterSave, planEnforce, renderEnforce } from "./enforce.ts";
import { IptablesError } from "./errors.ts";
import { GUARD_SPEC, parseGuardSave, planGuard, renderGuard } from "./guard.ts";
import { OWNED_CHAINS, removeChain } from "./removal.ts";
import type { IptablesRunner } from "./iptables.ts";
import type { Metrics } from "./metrics.ts";
import { describeRule, parseNatSave, planFamily, renderChain, type RedirectAddresses } from "./rules.ts";

export interface ReconcilerOptions {
  /** The current pods of this node (the informer cache). */
  readonly pods: () => Iterable<V1Pod>;
  readonly runner: IptablesRunner;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics?: Metrics;
  /** Opt-in annotation key. */
  readonly annotation: string;
  /** Name of the lock's init container: a pod whose spec has it is locked whatever its annotations. */
  readonly initContainer?: string;
  readonly nodeName?: string;
  /** Resolvers locked pods may query (canonical IPs); empty: port 53 anywhere. Default empty. */
  readonly allowDns?: readonly string[];
  /** Standard-mode proxy port on the node that locked pods may reach; default none. */
  readonly standardPort?: number;
  /** Transparent proxy port. */
  readonly proxyPort: number;
  /**
   * Keep the guard chain (guard.ts) refusing connections to this port that the node did not redirect,
   * whether pods are locked or not. Default: no guard (library and unit-test use; the CLI always sets it).
   */
  readonly guardPort?: number;
  /** Redirected destination ports; default 80, 443. */
  readonly ports?: readonly number[];
  /** Node address per family to DNAT to instead of REDIRECT; default none (REDIRECT). */
  readonly redirectTo?: RedirectAddresses;
  /** Period of the drift-repairing resync. */
  readonly resyncMs: number;
  /** Events within this window are applied together; default 50 ms. */
  readonly coalesceMs?: number;
  /** Retry delays after a failed apply; default 500 ms doubling to 30 s. */
  readonly retryInitialMs?: number;
  readonly retryMaxMs?: number;
  /** Families to manage; default both. */
  readonly families?: readonly Family[];
}

/** Outcome of one reconcile pass. */
export interface ReconcileResult {
  readonly ok: boolean;
  /** Families whose chain was rewritten. */
  readonly changed: readonly Family[];
  readonly redirects: number;
}

export class Reconciler {
  readonly #o: ReconcilerOptions;
  readonly #families: readonly Family[];
  readonly #retry: Backoff;
  #started = false;
  #dirty = false;
  #running: Promise<void> | undefined;
  #pending: Timer | undefined;
  #resync: Timer | undefined;
  #lastOk: boolean | undefined;
  #lastError: string | undefined;
  #lastSuccessAt: number | undefined;
  #passes = 0;

  constructor(opts: ReconcilerOptions) {
    this.#o = opts;
    this.#families = opts.families ?? ["ipv4", "ipv6"];
    this.#retry = new Backoff(opts.retryInitialMs ?? 500, opts.retryMaxMs ?? 30_000);
  }

  /** Allows passes from now on (call once the initial list is in) and starts the periodic resync. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#scheduleResync();
    this.enqueue("initial sync");
  }

  /** Asks for a pass; many requests within the coalescing window make one pass. */
  enqueue(reason: string): void {
    this.#dirty = true;
    if (!this.#started || this.#pending || this.#running) return;
    this.#o.log.debug({ reason }, "reconcile queued");
    this.#pending = this.#o.clock.after(this.#o.coalesceMs ?? 50, () => {
      this.#pending = undefined;
      this.#kick();
    });
  }

  /** Stops timers and waits for a pass in flight. The kernel's rules stay as they are. */
  async stop(): Promise<void> {
    this.#started = false;
    this.#pending?.cancel();
    this.#pending = undefined;
    this.#resync?.cancel();
    this.#resync = undefined;
    await this.#running;
  }

  /** Resolves when no pass is running or queued to run right now. */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  /** True/false after the last pass; undefined before the first. */
  get lastOk(): boolean | undefined {
    return this.#lastOk;
  }

  get lastError(): string | undefined {
    return this.#lastError;
  }

  get lastSuccessAt(): number | undefined {
    return this.#lastSuccessAt;
  }

  get passes(): number {
    return this.#passes;
  }

  #kick(): void {
    if (this.#running || !this.#started) return;
    this.#dirty = false;
    this.#running = this.reconcileOnce()
      .then((result) => {
        if (!result.ok) {
          this.#dirty = true;
          const ms = this.#retry.next();
          this.#o.log.warn({ retryInMs: ms, failures: this.#retry.failures }, "apply failed, retrying");
          this.#pending = this.#o.clock.after(ms, () => {
            this.#pending = undefined;
            this.#kick();
          });
        } else {
          this.#retry.reset();
        }
      })
      .finally(() => {
        this.#running = undefined;
        if (this.#dirty && this.#started && !this.#pending) this.enqueue("changed during apply");
      });
  }

  #scheduleResync(): void {
    this.#resync = this.#o.clock.after(this.#o.resyncMs, () => {
      this.#resync = undefined;
      if (!this.#started) return;
      this.#scheduleResync();
      this.enqueue("resync");
    });
  }

  /** One pass, whatever the timers say. Never throws: failures are logged, counted and returned. */
  async reconcileOnce(): Promise<ReconcileResult> {
    const { log, metrics } = this.#o;
    const t0 = this.#o.clock.now();
    this.#passes += 1;
    const redirects = selectRedirects(this.#o.pods(), { annotation: this.#o.annotation, initContainer: this.#o.initContainer, nodeName: this.#o.nodeName });
    metrics?.podsSelected.set(redirects.length);
    const changed: Family[] = [];
    const errors: string[] = [];
    for (const family of this.#families) {
      const guarded = this.#o.guardPort !== undefined && (await this.#applyGuard(family, this.#o.guardPort, errors));
      // The node's filter first: a pod newly locked is held to the lock's ports before its redirect exists.
      const enforced = await this.#applyEnforce(family, redirects, errors);
      const nat = await this.#applyNat(family, redirects, errors);
      if (guarded || enforced || nat) changed.push(family);
    }
    const ok = errors.length === 0;
    this.#lastOk = ok;
    this.#lastError = ok ? undefined : errors.join("; ");
    if (ok) this.#lastSuccessAt = this.#o.clock.now();
    const seconds = (this.#o.clock.now() - t0) / 1000;
    metrics?.applyDuration.observe(seconds);
    log.debug({ ok, changed, redirects: redirects.length, ms: Math.round(seconds * 1000) }, "reconciled");
    return { ok, changed, redirects: redirects.length };
  }

  /** Reads the table, plans, applies; true when something was written. Failures go to `errors`. */
  async #applyNat(family: Family, redirects: readonly Redirect[], errors: string[]): Promise<boolean> {
    const { log, metrics, runner } = this.#o;
    const wanted = renderChain(redirects, family, { proxyPort: this.#o.proxyPort, ports: this.#o.ports, toAddress: this.#o.redirectTo });
    const kernelText = await this.#read(family, "nat", wanted.length, errors);
    if (kernelText === undefined) return false;
    try {
      const plan = planFamily(parseNatSave(kernelText), wanted);
      if (plan) {
        await runner.restore(family, plan.input);
        metrics?.applies.inc({ family });
        for (const rule of plan.added) log.info({ family, ...describeRule(rule) }, "redirect added");
        for (const rule of plan.removed) log.info({ family, ...describeRule(rule) }, "redirect removed");
        if (plan.jumpRepaired) log.info({ family }, "PREROUTING jump repaired");
        if (plan.added.length === 0 && plan.removed.length === 0 && !plan.jumpRepaired) log.info({ family }, "chain rewritten");
      }
      metrics?.rules.set({ family }, wanted.length);
      return plan !== undefined;
    } catch (err) {
      this.#failed(family, "applying the chain failed", err, errors);
      return false;
    }
  }

  async #applyEnforce(family: Family, redirects: readonly Redirect[], errors: string[]): Promise<boolean> {
    const { log, metrics, runner } = this.#o;
    const wanted = renderEnforce(redirects, family, { proxyPort: this.#o.proxyPort, allowDns: this.#o.allowDns ?? [], standardPort: this.#o.standardPort });
    const kernelText = await this.#read(family, "filter", wanted.length, errors);
    if (kernelText === undefined) return false;
    try {
      const plan = planEnforce(parseFilterSave(kernelText), wanted);
      if (plan) {
        await runner.restore(family, plan.input);
        metrics?.enforceApplies.inc({ family });
        log.info({ family, added: plan.added, removed: plan.removed, jumpsRepaired: plan.jumpsRepaired }, "enforce chain rewritten");
      }
      metrics?.enforceRules.set({ family }, wanted.length);
      return plan !== undefined;
    } catch (err) {
      this.#failed(family, "applying the enforce chain failed", err, errors);
      return false;
    }
  }

  async #applyGuard(family: Family, port: number, errors: string[]): Promise<boolean> {
    // A node without IPv6 tables has no IPv6 to guard: an unreadable ip6tables filter table is skipped.
    const kernelText = await this.#read(family, "filter", family === "ipv6" ? 0 : 1, errors);
    if (kernelText === undefined) return false;
    try {
      const plan = planGuard(parseGuardSave(kernelText), renderGuard(family, port));
      if (plan) {
        await this.#o.runner.restore(family, plan.input);
        this.#o.log.info({ family, port }, "guard chain written: only redirected connections reach the proxy's port");
      }
      return plan !== undefined;
    } catch (err) {
      this.#failed(family, "applying the guard chain failed", err, errors);
      return false;
    }
  }

  /**
   * Uninstall (the DaemonSet is gone; call after stop()): takes every chain and jump of podwatch's away,
   * unless locked pods still live on this node: then their redirect and enforce rules stay, exactly as a
   * last pass computes them (fail closed: their in-pod lock lets 80/443 out for the node to redirect),
   * and only the guard goes. Returns the locked pods kept (the caller makes sure the pod list is complete).
   */
  async uninstall(): Promise<{ keptFor: string[] }> {
    const redirects = selectRedirects(this.#o.pods(), { annotation: this.#o.annotation, initContainer: this.#o.initContainer, nodeName: this.#o.nodeName });
    const keptFor = [...new Set(redirects.map((r) => r.pod))];
    const errors: string[] = [];
    for (const family of this.#families) {
      const specs = keptFor.length > 0 ? [GUARD_SPEC] : OWNED_CHAINS;
      for (const spec of specs) {
        const text = await this.#read(family, spec.table, family === "ipv6" ? 0 : 1, errors);
        if (text === undefined) continue;
        try {
          if (await removeChain(this.#o.runner, family, spec, text)) this.#o.log.info({ family, chain: spec.chain }, "chain removed");
        } catch (err) {
          this.#failed(family, `removing ${spec.chain} failed`, err, errors);
        }
      }
      if (keptFor.length > 0) {
        await this.#applyEnforce(family, redirects, errors);
        await this.#applyNat(family, redirects, errors);
      }
    }
    if (errors.length > 0) throw new Error(`uninstall left rules behind: ${errors.join("; ")}`);
    return { keptFor };
  }

  async #read(family: Family, table: "nat" | "filter", wanted: number, errors: string[]): Promise<string | undefined> {
    try {
      return await this.#o.runner.save(family, table);
    } catch (err) {
      if (wanted === 0 && family === "ipv6") {
        // A node without IPv6 tables has nothing of ours to keep right while no pod has an IPv6 address.
        this.#o.log.debug({ family, table, err: message(err) }, "table unreadable, nothing wanted: skipped");
        return undefined;
      }
      this.#failed(family, `reading the ${table} table failed`, err, errors);
      return undefined;
    }
  }

  #failed(family: Family, what: string, err: unknown, errors: string[]): void {
    this.#o.metrics?.applyErrors.inc({ family });
    errors.push(message(err));
    this.#o.log.error({ family, err: message(err), stderr: stderrOf(err) }, what);
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function stderrOf(err: unknown): string | undefined {
  return err instanceof IptablesError ? err.stderr.trim() : undefined;
}
