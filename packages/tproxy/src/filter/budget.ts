// The time budget of one asynchronous hook call, paused while the hook waits for a message body.
//
// Waiting for bytes is the client's (or the upstream's) time, not the filter's: a 1 MiB upload from a
// slow pod would otherwise eat a 100 ms budget and turn every body-reading filter into a timeout. The wait
// itself is bounded elsewhere: the client's body by --request-timeout (net/bounds.ts closes the
// connection), an upstream's body by the body tap's own wait bound (server/body.ts). The budget counts
// only the filter's own time: its synchronous part, and its async time outside body reads.
export class HookBudget {
  #remaining: number;
  #since = 0;
  /** Milliseconds the thread spent in other work no timer could interrupt (host.ts), read at #since. */
  readonly #stalled: () => number;
  #stalledAt = 0;
  #waits = 0;
  #timer: NodeJS.Timeout | undefined;
  #onExpire: (() => void) | undefined;
  #done = false;

  /**
   * `stalled` tells how long, in all, the thread was held by work no timer could interrupt (evaluating a
   * filter version): that time is the thread's, not the hook's, and is given back to the budget.
   */
  constructor(ms: number, stalled: () => number = () => 0) {
    this.#remaining = ms;
    this.#stalled = stalled;
  }

  /** Starts the clock (the hook returned a promise); `onExpire` runs once the budget is spent. */
  start(onExpire: () => void): void {
    this.#onExpire = onExpire;
    if (this.#waits === 0) this.#run();
  }

  /** The hook settled: the clock stops for good. */
  stop(): void {
    this.#done = true;
    this.#pause();
  }

  /** Wraps a body read: the clock is paused until it settles (and while any other read is pending). */
  readonly wait = <T>(read: Promise<T>): Promise<T> => {
    if (this.#waits++ === 0) this.#pause();
    return read.finally(() => {
      if (--this.#waits === 0) this.#run();
    });
  };

  #run(): void {
    if (this.#done || this.#onExpire === undefined || this.#timer !== undefined) return;
    this.#since = performance.now();
    this.#stalledAt = this.#stalled();
    this.#timer = setTimeout(this.#expire, Math.max(0, this.#remaining));
  }

  readonly #expire = (): void => {
    this.#timer = undefined;
    // The timer may only be due because the thread was held: give that time back and wait on.
    const owed = this.#stalled() - this.#stalledAt;
    if (owed > 0) {
      this.#remaining = owed;
      this.#run();
      return;
    }
    this.#onExpire?.();
  };

  #pause(): void {
    if (this.#timer === undefined) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#remaining -= performance.now() - this.#since - (this.#stalled() - this.#stalledAt);
  }
}
