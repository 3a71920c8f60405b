// Connections open per source address, counted once for the whole process: every serving thread counts in
// the same shared memory, so --max-client-connections is one cap per pod, whichever threads the kernel
// spreads its connections over (SO_REUSEPORT hashes each connection; one pod's connections are not split
// evenly, so a share of the cap per thread refused pods below the cap).
//
// A count-min table: each address counts in one slot of each of four rows, chosen by four hashes, and its
// count is the smallest of the four. Another address adds to that count only if it lands in the same slot
// in all four rows: for 1,000 addresses (a node runs a few hundred pods) about 1 in a million per address,
// and then only ever by that address's connections: never past the cap, only to the cap sooner.

const ROWS = 4;
const SLOTS = 1 << 15;
const SEEDS = [0x811c9dc5, 0x01000193, 0x9e3779b9, 0x85ebca6b];

function hash(text: string, seed: number): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i += 1) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // Final mixing (murmur3's): nearby addresses spread over the whole row.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) % SLOTS;
}

export class ClientCounts {
  readonly buffer: SharedArrayBuffer;
  readonly #cells: Int32Array;

  /** The last cell: connections open in all, from every source. */
  readonly #total: number = ROWS * SLOTS;

  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer((ROWS * SLOTS + 1) * 4)) {
    this.buffer = buffer;
    this.#cells = new Int32Array(buffer);
  }

  /** Counts one more connection in all unless `max` are open (0: no cap). False: nothing counted. */
  acquireTotal(max: number): boolean {
    const n = Atomics.add(this.#cells, this.#total, 1) + 1;
    if (max > 0 && n > max) {
      Atomics.sub(this.#cells, this.#total, 1);
      return false;
    }
    return true;
  }

  /** A connection counted by acquireTotal() has closed. */
  releaseTotal(): void {
    Atomics.sub(this.#cells, this.#total, 1);
  }

  #slots(client: string): number[] {
    return SEEDS.map((seed, row) => row * SLOTS + hash(client, seed));
  }

  /** Connections open now from `client` (over all threads). */
  open(client: string): number {
    return Math.min(...this.#slots(client).map((i) => Atomics.load(this.#cells, i)));
  }

  /**
   * Counts one more connection from `client` unless it already holds `max` (0: no cap). Returns the number
   * it holds counting this one, or false (nothing counted) when it is at the cap.
   */
  acquire(client: string, max: number): number | false {
    const slots = this.#slots(client);
    let n = Infinity;
    for (const i of slots) n = Math.min(n, Atomics.add(this.#cells, i, 1) + 1);
    if (max > 0 && n > max) {
      for (const i of slots) Atomics.sub(this.#cells, i, 1);
      return false;
    }
    return n;
  }

  /** A connection from `client` counted by acquire() has closed. */
  release(client: string): void {
    for (const i of this.#slots(client)) Atomics.sub(this.#cells, i, 1);
  }
}
