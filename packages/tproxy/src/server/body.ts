// Buffering a message body on request of a filter hook (`flow.request.body()`, `flow.response.peek(n)`).
//
// A BodyTap is made only when a hook asks: a request whose hooks never read its body is relayed as a
// stream, untouched, with flat memory. Once asked, the tap reads from the stream only as far as the
// pending reads need (the whole body up to the limit, or a prefix) and pauses it again, so what it holds
// is at most the limit plus one chunk. When the hook is done the interceptor takes back what was read
// (release) and sends it on first, followed by the rest of the stream, if any.
//
// Fail-closed: a whole-body read of a body larger than the limit does not hand the hook a prefix that
// it might take for the whole (a JSON field past the limit would go unseen); it marks the tap refused,
// and the interceptor refuses the message whatever the hook then does (413 for a request, 502 for a
// response). A hook that wants only the first bytes asks for them by name: peek(n).
import type { Readable } from "node:stream";

/** Default of `--max-body`: 1 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

/** Why the tap's message must not go on, whatever the hook decided. */
export interface BodyRefusal {
  kind: "too-large" | "timeout" | "broken";
  message: string;
}

/**
 * What a message refused for its body gets: a request 413 (too large), 408 (the client was too slow) or
 * 400; a response 504 (the upstream was too slow) or 502.
 */
export function refusalAnswer(which: "request" | "response", refusal: BodyRefusal, maxBytes: number): { status: number; body: string; headers: Record<string, string> } {
  const status = which === "request"
    ? (refusal.kind === "too-large" ? 413 : refusal.kind === "timeout" ? 408 : 400)
    : (refusal.kind === "timeout" ? 504 : 502);
  const why = refusal.kind === "too-large" ? `the ${which} body is larger than the ${maxBytes} bytes the filter may read (--max-body)` : refusal.message;
  return { status, body: `tproxy: ${why}; ${which} refused\n`, headers: {} };
}

export class BodyTooLargeError extends Error {
  constructor(which: string, limit: number) {
    super(`the ${which} body is larger than ${limit} bytes (--max-body); the ${which} is refused. To look at the first bytes of a large body, use peek(n)`);
    this.name = "BodyTooLargeError";
  }
}

interface Waiter {
  /** Bytes wanted: a prefix of this length, or undefined for the whole body. */
  want: number | undefined;
  resolve: (bytes: Buffer) => void;
  reject: (err: Error) => void;
}

export interface Held {
  /** The chunks read from the stream so far, in order. */
  chunks: Buffer[];
  /** Their total length. */
  size: number;
  /** True when the stream ended: the chunks are the whole body. */
  ended: boolean;
}

export interface BodyTapOptions {
  /** "request" or "response": named in error messages. */
  which: "request" | "response";
  /** Most bytes a whole-body read may buffer (`--max-body`). */
  maxBytes: number;
  /**
   * Longest wait for the bytes a read needs, in ms (0: none). The client's request body is bounded by the
   * connection bounds (--request-timeout, net/bounds.ts) already; an upstream's response body is not.
   */
  waitMs?: number;
}

export class BodyTap {
  readonly #stream: Readable;
  readonly #opts: BodyTapOptions;
  readonly #chunks: Buffer[] = [];
  #size = 0;
  #ended = false;
  #attached = false;
  #released = false;
  #waiters: Waiter[] = [];
  #timer: NodeJS.Timeout | undefined;
  /** Set when the message must be refused, whatever the hook decides. */
  refusal: BodyRefusal | undefined;

  constructor(stream: Readable, opts: BodyTapOptions) {
    this.#stream = stream;
    this.#opts = opts;
  }

  /** The whole body (`want` undefined, up to maxBytes) or its first `want` bytes (fewer when shorter). */
  read(want?: number): Promise<Buffer> {
    if (want !== undefined && (!Number.isInteger(want) || want < 0 || want > this.#opts.maxBytes)) {
      return Promise.reject(new RangeError(`peek(${String(want)}): the byte count must be a whole number from 0 to ${this.#opts.maxBytes} (--max-body)`));
    }
    if (this.#released) return Promise.reject(new Error(`the ${this.#opts.which} body can no longer be read: the hook has finished`));
    if (this.refusal) return Promise.reject(this.#refusalError());
    return new Promise<Buffer>((resolve, reject) => {
      this.#waiters.push({ want, resolve, reject });
      this.#attach();
      this.#settle();
    });
  }

  #refusalError(): Error {
    return this.refusal!.kind === "too-large" ? new BodyTooLargeError(this.#opts.which, this.#opts.maxBytes) : new Error(this.refusal!.message);
  }

  #attach(): void {
    if (this.#attached) return;
    this.#attached = true;
    const s = this.#stream;
    if (s.readableEnded) this.#ended = true;
    else if (s.destroyed) this.#fail("broken", `the ${this.#opts.which} stream closed before its body was complete`);
    s.on("data", this.#onData);
    s.once("end", this.#onEnd);
    s.once("close", this.#onClose);
    s.once("error", this.#onError);
  }

  #detach(): void {
    if (!this.#attached) return;
    const s = this.#stream;
    s.off("data", this.#onData);
    s.off("end", this.#onEnd);
    s.off("close", this.#onClose);
    s.off("error", this.#onError);
    // Removing the data listener leaves the stream flowing: hold it until someone pipes it on.
    s.pause();
  }

  readonly #onData = (chunk: Buffer): void => {
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    this.#settle();
  };
  readonly #onEnd = (): void => {
    this.#ended = true;
    this.#settle();
  };
  readonly #onClose = (): void => {
    if (!this.#ended) this.#fail("broken", `the ${this.#opts.which} stream closed before its body was complete`);
  };
  readonly #onError = (err: Error): void => {
    this.#fail("broken", `reading the ${this.#opts.which} body failed: ${err.message}`);
  };

  #fail(kind: BodyRefusal["kind"], message: string): void {
    this.refusal ??= { kind, message };
    const err = this.#refusalError();
    for (const w of this.#waiters.splice(0)) w.reject(err);
    this.#stopWaiting();
  }

  /** Answers the reads that can be answered; keeps the stream flowing only while some read still waits. */
  #settle(): void {
    if (this.refusal) return;
    const max = this.#opts.maxBytes;
    // Prefixes first: a peek is answered even when a whole-body read of the same body is refused.
    const answer = (whole: boolean): void => {
      this.#waiters = this.#waiters.filter((w) => {
        if ((w.want === undefined) !== whole) return true;
        const enough = this.#ended || (w.want !== undefined && this.#size >= w.want);
        if (enough) w.resolve(this.#bytes(w.want));
        return !enough;
      });
    };
    answer(false);
    if (this.#size > max && this.#waiters.some((w) => w.want === undefined)) {
      this.#fail("too-large", `the ${this.#opts.which} body is larger than ${max} bytes (--max-body)`);
      this.#stream.pause();
      return;
    }
    answer(true);
    if (this.#waiters.length === 0) {
      this.#stopWaiting();
      this.#stream.pause();
    } else {
      this.#startWaiting();
      this.#stream.resume();
    }
  }

  #bytes(want: number | undefined): Buffer {
    if (this.#chunks.length > 1) this.#chunks.splice(0, this.#chunks.length, Buffer.concat(this.#chunks, this.#size));
    const all = this.#chunks[0] ?? Buffer.alloc(0);
    return want === undefined || want >= all.length ? all : all.subarray(0, want);
  }

  #startWaiting(): void {
    const ms = this.#opts.waitMs ?? 0;
    if (ms > 0 && this.#timer === undefined) {
      this.#timer = setTimeout(() => this.#fail("timeout", `the ${this.#opts.which} body did not arrive within ${ms} ms`), ms);
    }
  }

  #stopWaiting(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /**
   * The hook is done: stops reading and hands over what was read. Reads still pending are dropped, never
   * settled: the hook that did not wait for them has decided without them, and a rejection nobody
   * handles would take the serving thread down.
   */
  release(): Held {
    this.#released = true;
    this.#detach();
    this.#stopWaiting();
    this.#waiters = [];
    const held = { chunks: this.#chunks.splice(0), size: this.#size, ended: this.#ended };
    return held;
  }
}
