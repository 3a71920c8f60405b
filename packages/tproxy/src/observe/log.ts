// Logging: pino everywhere. `json` writes pino's lines as they are; `text` turns each into one line a
// person can read in `kubectl logs`, in the spirit of mitmdump's output.
import pino, { type Logger } from "pino";

export type LogFormat = "text" | "json";

const LEVELS: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL" };
const SKIP = new Set(["level", "time", "msg", "pid", "hostname", "kind"]);

function value(v: unknown): string {
  if (typeof v === "string") return /[\s"=]/.test(v) ? JSON.stringify(v) : v;
  if (v instanceof Object && "message" in v) return JSON.stringify((v as { message: unknown }).message);
  return JSON.stringify(v);
}

/** Formats one pino JSON record as text. Request records (kind=request) get the request-line layout. */
export function formatText(record: Record<string, unknown>): string {
  const time = new Date(record.time as number).toISOString();
  if (record.kind === "request") {
    const r = record as Record<string, string | number | undefined>;
    const reason = r.reason ? ` (${r.reason})` : "";
    return `${time} ${r.client} ${r.method} ${r.url} -> ${r.status} ${r.bytes}b ${r.ms}ms ${r.decision}${reason}\n`;
  }
  const level = LEVELS[record.level as number] ?? String(record.level);
  let line = `${time} ${level} ${String(record.msg ?? "")}`;
  for (const [k, v] of Object.entries(record)) {
    if (!SKIP.has(k) && v !== undefined) line += ` ${k}=${value(k === "err" && v && typeof v === "object" ? (v as { message?: unknown }).message : v)}`;
  }
  return line + "\n";
}

export function createLogger(format: LogFormat, options: { level?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  const out = options.destination ?? process.stdout;
  const base = { base: undefined, level: options.level ?? process.env.LOG_LEVEL ?? "info" };
  if (format === "json") return pino(base, options.destination ?? pino.destination({ dest: 1, sync: false }));
  return pino(base, {
    write(line: string) {
      out.write(formatText(JSON.parse(line) as Record<string, unknown>));
    },
  });
}
