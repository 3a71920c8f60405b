// Waiting for interception: a plain HTTP request to a TEST-NET address on port 80 reaches nothing but
// the node's proxy, and only once the node redirects this pod's traffic; the proxy answers it itself.
import { request } from "node:http";
import { PROBE_HEADER, PROBE_VALUE } from "@tproxy/iptables";
import type { Logger } from "pino";
import { WaitTimeoutError } from "./errors.ts";

export { PROBE_HEADER, PROBE_VALUE };
/** Pause between two attempts. */
export const PROBE_INTERVAL_MS = 250;
/** Longest single attempt. */
export const PROBE_ATTEMPT_TIMEOUT_MS = 2_000;

/** Outcome of one attempt: `ok`, or what was seen instead (for the log and the final message). */
export type ProbeResult = { readonly ok: true } | { readonly ok: false; readonly seen: string };

/** One attempt: GET http://<address>/; success is status 200 with `x-tproxy-probe: ok`. */
export function probeOnce(address: string, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const req = request({ host: address, port: 80, path: "/", method: "GET", agent: false, timeout: timeoutMs, headers: { "user-agent": "tproxy-sidecar-init" } }, (res) => {
      const header = res.headers[PROBE_HEADER];
      res.resume();
      res.once("end", () => undefined);
      req.destroy();
      if (res.statusCode === 200 && header === PROBE_VALUE) resolve({ ok: true });
      else resolve({ ok: false, seen: `HTTP ${res.statusCode ?? "?"} ${header === undefined ? `without ${PROBE_HEADER}` : `with ${PROBE_HEADER}: ${String(header)}`} (not the node's proxy)` });
    });
    req.once("timeout", () => {
      req.destroy();
      resolve({ ok: false, seen: `no answer within ${timeoutMs} ms` });
    });
    req.once("error", (err: NodeJS.ErrnoException) => resolve({ ok: false, seen: `${err.code ?? err.message}` }));
    req.end();
  });
}

export interface WaitOptions {
  readonly address: string;
  readonly timeoutMs: number;
  readonly intervalMs?: number;
  readonly probe?: (address: string, timeoutMs: number) => Promise<ProbeResult>;
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** Probes until the proxy answers; throws WaitTimeoutError saying what was expected and what to check. */
export async function waitForInterception(opts: WaitOptions, log: Logger): Promise<{ attempts: number; elapsedMs: number }> {
  const probe = opts.probe ?? probeOnce;
  const interval = opts.intervalMs ?? PROBE_INTERVAL_MS;
  const started = Date.now();
  const deadline = started + opts.timeoutMs;
  let attempts = 0;
  let last = "";
  let nextReport = started;
  for (;;) {
    attempts += 1;
    const r = await probe(opts.address, Math.max(1, Math.min(PROBE_ATTEMPT_TIMEOUT_MS, deadline - Date.now())));
    const now = Date.now();
    if (r.ok) return { attempts, elapsedMs: now - started };
    last = r.seen;
    if (now >= nextReport) {
      log.info({ probe: `http://${opts.address}/`, seen: r.seen, attempts }, "waiting for the node to intercept this pod's traffic");
      nextReport = now + 10_000;
    } else {
      log.debug({ seen: r.seen, attempts }, "probe not answered yet");
    }
    if (now >= deadline) break;
    await new Promise((res) => setTimeout(res, Math.min(interval, deadline - now)));
    if (Date.now() >= deadline) break;
  }
  throw new WaitTimeoutError(
    `interception not live after ${seconds(opts.timeoutMs)}: expected HTTP 200 with "${PROBE_HEADER}: ${PROBE_VALUE}" from http://${opts.address}/, which only the node's tproxy answers once it redirects this pod, but the last attempt saw ${last}; ` +
      `check that the tproxy DaemonSet has a running pod on this node and that this pod carries the opt-in annotation (default initializer.kubernetes.io/tproxy: "true")`,
  );
}
