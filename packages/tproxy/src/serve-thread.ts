// A serving thread: one TproxyServer on the shared ports (SO_REUSEPORT), its filter versions handed over by
// the supervisor (supervisor.ts), its counters collected by it. Messages are small and rare: filter
// versions, metrics scrapes, drain; requests never cross threads.
import { BroadcastChannel, parentPort, workerData } from "node:worker_threads";
import type { CertificateShare } from "./certs/leaf-cache.ts";
import type { RunConfig } from "./config.ts";
import type { CompiledFilter } from "./filter/compile.ts";
import { HookWatch, type FilterVersion } from "./filter/host.ts";
import { PodDirectory, type PodSnapshot } from "./identity/pods.ts";
import { createLogging, stdoutFd } from "./observe/log.ts";
import type { MetricJson } from "./observe/metrics.ts";
import { TproxyServer, type ServingState } from "./proxy.ts";

export interface ThreadData {
  index: number;
  config: RunConfig;
  ticketKeys: Uint8Array;
  leafKeyPem: string;
  /** The CA in force, as the supervisor read and checked it. */
  ca: { certPem: string; keyPem: string };
  clientCounts: SharedArrayBuffer;
  watch: SharedArrayBuffer;
  filter: CompiledFilter | undefined;
  /** podwatch's pod map as the supervisor read it last (with --pod-identity-file). */
  pods?: PodSnapshot | undefined;
}

/** Supervisor → thread. */
export type ToThread =
  | { type: "prepare"; id: number; filter: CompiledFilter }
  | { type: "commit"; id: number }
  | { type: "discard"; id: number }
  | { type: "load"; filter: CompiledFilter }
  | { type: "metrics"; id: number }
  | { type: "ca"; certPem: string; keyPem: string }
  | { type: "pods"; snapshot: PodSnapshot | undefined }
  | { type: "drain" };

/** Thread → supervisor. */
export type FromThread =
  | { type: "started"; ports: { transparent: number; standard: number | undefined } }
  | { type: "state"; state: ServingState }
  | { type: "prepared"; id: number; error: string | undefined }
  | { type: "metrics"; id: number; metrics: MetricJson[] }
  | { type: "stopped" };

/** The channel serving threads announce minted leaf certificates on. */
export const LEAF_CHANNEL = "tproxy-leaf-certificates";

/** How often a serving thread proves it is not stuck. */
export const HEARTBEAT_MS = 100;

if (!parentPort) throw new Error("serve-thread.ts runs in a worker thread");
const port = parentPort;
const data = workerData as ThreadData;
const send = (m: FromThread): void => port.postMessage(m);

const logging = createLogging(data.config.logFormat, { destination: stdoutFd(), bindings: { thread: data.index } });
const watch = new HookWatch(data.watch);
watch.beat();
setInterval(() => watch.beat(), HEARTBEAT_MS).unref();

// Certificates one thread mints, the others use without signing again.
const certificates = new BroadcastChannel(LEAF_CHANNEL);
certificates.unref();
const pods = new PodDirectory();
pods.set(data.pods);
const server = new TproxyServer(data.config, logging, {
  reusePort: true,
  ticketKeys: Buffer.from(data.ticketKeys),
  leafKeyPem: data.leafKeyPem,
  ca: data.ca,
  clientCounts: data.clientCounts,
  pods,
  certificateShare: certificates as unknown as CertificateShare,
  supervised: { watch, initialFilter: data.filter, onState: (state) => send({ type: "state", state }) },
});
const staged = new Map<number, FilterVersion>();
// Counters also go to the supervisor unasked, so that those of a thread that is replaced (stuck, or
// gone) are kept as of at most this long before.
export const METRICS_PUSH_MS = 1000;
setInterval(() => send({ type: "metrics", id: 0, metrics: server.metrics.toJSON() }), METRICS_PUSH_MS).unref();

port.on("message", (msg: ToThread) => {
  switch (msg.type) {
    case "prepare":
      try {
        staged.set(msg.id, server.prepareFilter(msg.filter));
        send({ type: "prepared", id: msg.id, error: undefined });
      } catch (err) {
        send({ type: "prepared", id: msg.id, error: (err as Error).message });
      }
      return;
    case "commit": {
      const v = staged.get(msg.id);
      staged.delete(msg.id);
      if (v) server.commitFilter(v);
      return;
    }
    case "discard":
      staged.delete(msg.id);
      return;
    case "load":
      try {
        server.commitFilter(server.prepareFilter(msg.filter));
      } catch (err) {
        logging.log.error({ err: (err as Error).message }, "the filter in force did not load in this thread; its requests are denied");
      }
      return;
    case "metrics":
      send({ type: "metrics", id: msg.id, metrics: server.metrics.toJSON() });
      return;
    case "ca":
      try {
        server.reloadCa(msg.certPem, msg.keyPem);
      } catch (err) {
        logging.log.error({ err: (err as Error).message }, "the new CA did not load in this thread; it signs with the previous one");
      }
      return;
    case "pods":
      pods.set(msg.snapshot);
      return;
    case "drain":
      server.stop().then(() => {
        send({ type: "stopped" });
        process.exit(0);
      });
      return;
  }
});

try {
  const ports = await server.start();
  send({ type: "started", ports });
} catch (err) {
  logging.log.error({ err: (err as Error).message }, "serving thread could not start");
  logging.flush();
  process.exit(1);
}
