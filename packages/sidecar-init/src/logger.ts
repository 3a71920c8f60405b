// The structured log: pino, JSON lines on stderr (stdout carries --dry-run output), written
// synchronously so nothing is lost when the process exits right after.
import { pino, type Logger } from "pino";
import type { LogLevel } from "./config.ts";

export function createLogger(level: LogLevel): Logger {
  return pino({ name: "tproxy-sidecar-init", level }, pino.destination({ fd: 2, sync: true }));
}
