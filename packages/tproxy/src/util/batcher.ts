// Hands items over in batches: all those pushed during one turn of the event loop go together at its end.
/** Collects items and hands them over in one batch at the end of the current event-loop turn. */
export class Batcher<T> {
  #items: T[] = [];
  #scheduled = false;
  readonly #send: (items: T[]) => void;
  constructor(send: (items: T[]) => void) {
    this.#send = send;
  }
  push(item: T): void {
    this.#items.push(item);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.flush());
    }
  }
  /** Forgets what is waiting (the caller sends it again some other way). */
  clear(): void {
    this.#items = [];
  }
  flush(): void {
    this.#scheduled = false;
    if (this.#items.length === 0) return;
    const items = this.#items;
    this.#items = [];
    this.#send(items);
  }
}
