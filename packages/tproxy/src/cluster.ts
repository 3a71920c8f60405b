// Several proxy processes on one node: every core the pod is given. Each worker is a whole proxy (its
// own listeners on the same ports with SO_REUSEPORT, so the kernel spreads connections; its own filter
// thread and reloader; its own certificate cache). The primary serves /metrics (summed over the
// workers), /healthz and /readyz, restarts a worker that dies, and passes SIGTERM on for draining.
// TLS session-ticket keys are shared, so a client resumes its session whichever worker it reaches.
import cluster, { type Worker } from "node:cluster";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { AggregatorRegistry } from "prom-client";
import type { Logger } from "pino";
import type { RunConfig } from "./config.ts";
import { readCaFiles } from "./certs/check.ts";
import { listen } from "./net/listen.ts";
import { createAdminServer } from "./observe/admin.ts";

/** Message a worker sends the primary when its state changes. */
export interface WorkerState {
  tproxy: "state";
  ready: boolean;
  filter: string | null;
}

export const TICKET_KEYS_ENV = "TPROXY_TICKET_KEYS";

/** A worker that ran this long before it died counts as healthy: the back-off starts over. */
export const RESTART_RESET_MS = 60_000;

/**
 * Delay before replacing a dead worker: 200 ms, doubling for each crash in a row up to 5 s. A crash
 * after a worker ran RESTART_RESET_MS or longer starts the series over, so rare crashes spread over
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

/** CPUs this process may use: the cgroup CPU quota (a pod's CPU limit) when there is one, else the cores it may run on. */
export function cpusAvailable(): number {
  const cores = availableParallelism();
  try {
    const [quota, period] = readFileSync("/sys/fs/cgroup/cpu.max", "utf8").trim().split(/\s+/);
    if (quota && quota !== "max" && period) return Math.max(1, Math.min(cores, Math.ceil(Number(quota) / Number(period))));
  } catch {
    // no cgroup v2 CPU controller visible: use the cores
  }
  return cores;
}

export async function runPrimary(config: RunConfig, log: Logger): Promise<void> {
  // Fail at start, once, with one clear line, rather than in every worker.
  await readCaFiles(config.caCert, config.caKey);
  const ticketKeys = randomBytes(48).toString("hex");
  const states = new Map<number, WorkerState>();
  const metrics = new AggregatorRegistry();
  let stopping = false;
  const backoff = new RestartBackoff();
  const forkedAt = new Map<number, number>();

  // Memory: V8 sizes the young generation for throughput on big machines (up to tens of MiB per
  // process), and glibc gives each thread its own malloc arena. At 1,000 connections these two were
  // most of the workers' RSS (npm run bench, BENCH_DEBUG=1); bounded, throughput stayed the same.
  const execArgv = process.execArgv.some((a) => a.startsWith("--max-semi-space-size")) ? process.execArgv : [...process.execArgv, "--max-semi-space-size=8"];
  cluster.setupPrimary({ execArgv });
  const workerEnv = { [TICKET_KEYS_ENV]: ticketKeys, MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? "2" };
  const fork = (): Worker => {
    const worker = cluster.fork(workerEnv);
    forkedAt.set(worker.id, Date.now());
    worker.on("message", (msg: WorkerState) => {
      if (msg?.tproxy === "state") states.set(worker.id, msg);
    });
    return worker;
  };
  cluster.on("exit", (worker, code, signal) => {
    states.delete(worker.id);
    const ranMs = Date.now() - (forkedAt.get(worker.id) ?? Date.now());
    forkedAt.delete(worker.id);
    if (stopping) return;
    const delay = backoff.next(ranMs);
    log.error({ worker: worker.id, code, signal, ranMs, restartInMs: delay }, "proxy worker exited; starting another");
    setTimeout(fork, delay).unref();
  });
  const admin = createAdminServer({
    metrics: async () => ({ contentType: metrics.contentType, body: await metrics.clusterMetrics() }),
    readiness: () => {
      const all = [...states.values()];
      const ready = !stopping && all.length === config.workers && all.every((s) => s.ready);
      if (ready) return { ready, text: `ready filter=${[...new Set(all.map((s) => s.filter))].join(",")}\n` };
      const missing = all.some((s) => !s.filter) ? " (no filter loaded)" : "";
      return { ready, text: `not ready: ${all.filter((s) => s.ready).length}/${config.workers} workers ready${missing}\n` };
    },
  });
  await listen(admin, config.metricsPort, config.listenAddress);
  // Workers only once the admin port is ours: a start that fails, fails before any worker runs.
  for (let i = 0; i < config.workers; i += 1) fork();
  log.info({ workers: config.workers, metrics: config.metricsPort }, "tproxy primary started");

  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "draining workers");
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill("SIGTERM");
    const check = setInterval(() => {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        clearInterval(check);
        admin.close();
        process.exit(0);
      }
    }, 50);
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}
