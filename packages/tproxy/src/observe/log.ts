// Logging: pino everywhere. `json` writes pino's lines as they are; `text` turns each into one line a
// person can read in `kubectl logs`, in the spirit of mitmdump's output. The per-request line, written
// thousands of times a second, is formatted directly in text mode (not serialised by pino and parsed back).
import pino, { type DestinationStream, type Logger } from "pino";
import { Batcher } from "../util/batcher.ts";

/** Writes of at most this many bytes to a pipe are atomic (PIPE_BUF): lines of two threads never mix. */
export const ATOMIC_WRITE = 4096;

/**
 * Gathers the lines written during one turn of the event loop and writes them with one call at its
 * end: one syscall for many request lines under load, no delay when idle, no thread-pool hop. A batch
 * longer than ATOMIC_WRITE is written in several calls, each of whole lines.
 */
export class LineBuffer {
  readonly #lines: Batcher<string>;
  constructor(out: { write(chunk: string): unknown }) {
    this.#lines = new Batcher((lines) => {
      let chunk = "";
      for (const line of lines) {
        if (chunk.length > 0 && chunk.length + line.length > ATOMIC_WRITE) {
          out.write(chunk);
          chunk = "";
        }
        chunk += line;
      }
      if (chunk.length > 0) out.write(chunk);
    });
  }
  write(line: string): boolean {
    this.#lines.push(line);
    return true;
  }
  flush(): void {
    this.#lines.flush();
  }
}

/**
 * Standard output as a serving thread should write it: straight to file descriptor 1, synchronously
 * (pino's own destination). A worker thread's process.stdout would post every write to the main thread.
 */
export function stdoutFd(): { write(chunk: string): unknown; flushSync?(): void } {
  return pino.destination({ dest: 1, sync: true });
}

export type LogFormat = "text" | "json";

/** What the proxy logs about each request. */
export interface RequestRecord {
  id: string;
  client: string;
  method: string | undefined;
  url: string;
  status: number | string;
  bytes: number;
  ms: number;
  /** "would-deny": the filter answered under audit (flow.audit, --filter-audit) and the request went on. */
  decision: "allowed" | "denied" | "would-deny";
  reason: string | undefined;
  filter: string | undefined;
  /** "h2": the request was one stream of an HTTP/2 connection (absent: HTTP/1.x). */
  protocol?: "h2";
  /**
   * A gRPC call's status: the one the proxy's own answer carried (its HTTP status is `status`), or the server's
   * (its trailers' grpc-status, or a trailers-only answer's).
   */
  grpc?: number;
}

export type RequestLog = (record: RequestRecord) => void;

export interface Logging {
  log: Logger;
  requests: RequestLog;
  /** Writes out whatever is buffered (call before exit). */
  flush(): void;
}

const LEVELS: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL" };
const SKIP = new Set(["level", "time", "msg", "pid", "hostname"]);

function value(v: unknown): string {
  if (typeof v === "string") return /[\s"=]/.test(v) ? JSON.stringify(v) : v;
  return JSON.stringify(v);
}

/** One request as a text line. */
export function formatRequest(r: RequestRecord, time = Date.now()): string {
  const reason = r.reason ? ` (${r.reason})` : "";
  // Last, so that the line reads as before up to it.
  const protocol = (r.protocol ? ` ${r.protocol}` : "") + (r.grpc !== undefined ? ` grpc-status=${r.grpc}` : "");
  return `${isoTime(time)} ${r.client} ${r.method} ${r.url} -> ${r.status} ${r.bytes}b ${r.ms}ms ${r.decision}${reason}${protocol}\n`;
}

// Many request lines share their millisecond under load: format each millisecond once.
let lastTime = -1;
let lastIso = "";
function isoTime(time: number): string {
  if (time !== lastTime) {
    lastTime = time;
    lastIso = new Date(time).toISOString();
  }
  return lastIso;
}

/** Formats one pino JSON record as text. */
export function formatText(record: Record<string, unknown>): string {
  const time = new Date(record.time as number).toISOString();
  const level = LEVELS[record.level as number] ?? String(record.level);
  let line = `${time} ${level} ${String(record.msg ?? "")}`;
  for (const [k, v] of Object.entries(record)) {
    if (!SKIP.has(k) && k !== "thread" && v !== undefined) line += ` ${k}=${value(k === "err" && v && typeof v === "object" ? (v as { message?: unknown }).message : v)}`;
  }
  // Which serving thread wrote the line: last, so that the fields of the message come first.
  if (record.thread !== undefined) line += ` thread=${value(record.thread)}`;
  return line + "\n";
}

export function createLogging(format: LogFormat, options: { level?: string; destination?: { write(chunk: string): unknown }; bindings?: Record<string, unknown> } = {}): Logging {
  const out = new LineBuffer(options.destination ?? process.stdout);
  // Each serving thread's lines say which thread wrote them (bindings).
  const base = { base: options.bindings, level: options.level ?? process.env.LOG_LEVEL ?? "info" };
  const flush = (): void => out.flush();
  if (format === "json") {
    const log = pino(base, out as DestinationStream);
    return { log, flush, requests: (r) => log.info({ kind: "request", ...r }, "request") };
  }
  const log = pino(base, { write: (line: string) => out.write(formatText(JSON.parse(line) as Record<string, unknown>)) });
  return { log, flush, requests: (r) => out.write(formatRequest(r)) };
}

/** A pino logger alone (for parts that log no requests). */
export function createLogger(format: LogFormat, options: { level?: string; destination?: { write(chunk: string): unknown } } = {}): Logger {
  return createLogging(format, options).log;
}
