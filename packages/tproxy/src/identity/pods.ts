// Which pod is asking (`flow.client.pod`): the pods of this node by IP, as podwatch publishes them in a
// file of a volume both containers of the DaemonSet pod share (podwatch's identity.ts writes it). The
// proxy holds no API token and opens no watch: the supervisor reads the file when it changes (and on a
// poll) and hands it to every serving thread, which looks each request's source address up in a Map.
//
// Fail closed: an identity is only as good as the map is fresh. A pod deleted while nothing updates the
// file leaves its address to the next pod, which the stale map would name wrongly. So a file older than
// MAX_AGE_MS (podwatch rewrites it every 5 s while it watches, and deletes it when it stops), missing,
// unreadable or of another format makes every address unknown: `flow.client.pod` is undefined, as it
// is for addresses no pod of this node has (host-network pods, the node, other nodes' pods).
import { readFile } from "node:fs/promises";
import { POD_IDENTITY_FORMAT, POD_IDENTITY_MAX_AGE_MS, type PodIdentityFile } from "@tproxy/iptables";
import type { Logger } from "pino";
import type { PodIdentity } from "../filter/types.ts";
import { Gauge } from "../observe/metrics.ts";
import type { MetricJson } from "../observe/metrics.ts";
import { VolumeWatch } from "../util/volume-watch.ts";

/** A map older than this names no pod (the node-pod contract's limit). */
export const MAX_AGE_MS = POD_IDENTITY_MAX_AGE_MS;

/** The parsed file, as the supervisor hands it to the serving threads (structured-clone friendly). */
export type PodSnapshot = Omit<PodIdentityFile<PodIdentity>, "version">;

/** Parses the file's text; throws an Error naming what is wrong. */
export function parseSnapshot(text: string): PodSnapshot {
  const data = JSON.parse(text) as unknown;
  if (!isObject(data)) throw new Error("not a JSON object");
  if (data.version !== POD_IDENTITY_FORMAT) throw new Error(`format version ${JSON.stringify(data.version)}, expected ${POD_IDENTITY_FORMAT}`);
  if (typeof data.generatedAt !== "number" || !Number.isFinite(data.generatedAt)) throw new Error("generatedAt is not a number");
  if (typeof data.node !== "string") throw new Error("node is not a string");
  if (!isObject(data.pods)) throw new Error("pods is not an object");
  const pods: Record<string, PodIdentity> = {};
  for (const [ip, p] of Object.entries(data.pods)) {
    if (!isObject(p) || typeof p.namespace !== "string" || typeof p.name !== "string") throw new Error(`pods[${JSON.stringify(ip)}] has no namespace and name`);
    pods[ip] = {
      namespace: p.namespace,
      name: p.name,
      uid: typeof p.uid === "string" ? p.uid : "",
      labels: strings(p.labels),
      annotations: strings(p.annotations),
      serviceAccount: typeof p.serviceAccount === "string" ? p.serviceAccount : "default",
      node: typeof p.node === "string" ? p.node : data.node,
    };
  }
  return { node: data.node, generatedAt: data.generatedAt, pods };
}

function isObject(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === "object" && !Array.isArray(x);
}

function strings(x: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (isObject(x)) for (const [k, v] of Object.entries(x)) if (typeof v === "string") out[k] = v;
  return out;
}

/** The form podwatch writes addresses in: IPv4 as is, IPv6 compressed lower case; IPv4-mapped IPv6 as IPv4. */
export function canonicalAddress(address: string): string {
  const lower = address.toLowerCase();
  if (lower.startsWith("::ffff:") && lower.includes(".")) return lower.slice(7);
  return lower;
}

/** A serving thread's view: O(1) lookups, each checking the map's age (fail closed when it is too old). */
export class PodDirectory {
  #map = new Map<string, PodIdentity>();
  #generatedAt = 0;
  readonly #maxAgeMs: number;
  readonly #now: () => number;

  constructor(options: { maxAgeMs?: number; now?: () => number } = {}) {
    this.#maxAgeMs = options.maxAgeMs ?? MAX_AGE_MS;
    this.#now = options.now ?? Date.now;
  }

  /** Replaces the map (undefined: none, every address unknown). */
  set(snapshot: PodSnapshot | undefined): void {
    this.#map = new Map(Object.entries(snapshot?.pods ?? {}));
    this.#generatedAt = snapshot?.generatedAt ?? 0;
  }

  /** The pod that has `address`, or undefined: not a pod of this node, or the map is missing or too old. */
  lookup(address: string): PodIdentity | undefined {
    if (this.#map.size === 0 || this.#now() - this.#generatedAt > this.#maxAgeMs) return undefined;
    return this.#map.get(canonicalAddress(address));
  }
}

type SourceState = "usable" | "missing" | "unreadable" | "stale";

/**
 * The supervisor's side: reads the file when its folder changes (and every second, for volumes that
 * deliver no events, and to notice a file that stopped being rewritten), and passes each new content on.
 * State changes (missing, unreadable, stale, usable again) are logged once each.
 */
export class PodIdentitySource {
  readonly #path: string;
  readonly #log: Logger;
  readonly #onSnapshot: (s: PodSnapshot | undefined) => void;
  readonly #maxAgeMs: number;
  #watch: VolumeWatch | undefined;
  #text: string | undefined;
  #snapshot: PodSnapshot | undefined;
  #state: SourceState | undefined;
  readonly #age = new Gauge("tproxy_pod_identity_age_seconds", "Age of the pod identity map podwatch wrote (-1: none); older than the limit, no pod is named");
  readonly #known = new Gauge("tproxy_pod_identity_addresses", "Pod addresses flow.client.pod can name now (0 while the map is missing or too old)");

  constructor(path: string, log: Logger, onSnapshot: (s: PodSnapshot | undefined) => void, options: { maxAgeMs?: number } = {}) {
    this.#path = path;
    this.#log = log;
    this.#onSnapshot = onSnapshot;
    this.#maxAgeMs = options.maxAgeMs ?? MAX_AGE_MS;
  }

  /** What the threads have now (for a thread started later). */
  get snapshot(): PodSnapshot | undefined {
    return this.#snapshot;
  }

  async start(): Promise<void> {
    await this.#read();
    this.#watch = await VolumeWatch.start([this.#path], "pod identity", this.#log, () => { void this.#read(); }, { pollMs: 1000 });
  }

  async #read(): Promise<void> {
    let text: string | undefined;
    let state: SourceState = "usable";
    let why: string | undefined;
    try {
      text = await readFile(this.#path, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      state = code === "ENOENT" ? "missing" : "unreadable";
      why = (err as Error).message;
    }
    let snapshot = this.#snapshot;
    if (text !== undefined && text !== this.#text) {
      try {
        snapshot = parseSnapshot(text);
      } catch (err) {
        state = "unreadable";
        why = `${this.#path}: ${(err as Error).message}`;
      }
    }
    if (state !== "usable") snapshot = undefined;
    else if (snapshot && Date.now() - snapshot.generatedAt > this.#maxAgeMs) state = "stale";
    this.#text = state === "usable" || state === "stale" ? text : undefined;
    this.#report(state, why, snapshot);
    if (snapshot !== this.#snapshot) {
      this.#snapshot = snapshot;
      this.#onSnapshot(snapshot);
    }
  }

  #report(state: SourceState, why: string | undefined, snapshot: PodSnapshot | undefined): void {
    const usable = state === "usable" && snapshot !== undefined;
    this.#known.set(usable ? Object.keys(snapshot.pods).length : 0);
    if (state === this.#state) return;
    const first = this.#state === undefined;
    this.#state = state;
    const path = this.#path;
    if (state === "usable") this.#log.info({ path, addresses: Object.keys(snapshot?.pods ?? {}).length }, "pod identity map in use: flow.client.pod names the pods of this node");
    else if (state === "missing") (first ? this.#log.info.bind(this.#log) : this.#log.warn.bind(this.#log))({ path }, "no pod identity map (podwatch has not written it, or stopped): flow.client.pod is undefined for every address");
    else if (state === "stale") this.#log.warn({ path, ageMs: snapshot ? Date.now() - snapshot.generatedAt : undefined, maxAgeMs: this.#maxAgeMs }, "the pod identity map is too old (podwatch no longer follows the pods): flow.client.pod is undefined for every address until it is fresh again");
    else this.#log.error({ path, err: why }, "the pod identity map cannot be read: flow.client.pod is undefined for every address");
  }

  /** The gauges, computed now. */
  metrics(): MetricJson[] {
    this.#age.set(this.#snapshot ? Math.max(0, (Date.now() - this.#snapshot.generatedAt) / 1000) : -1);
    return [this.#age.toJSON(), this.#known.toJSON()];
  }

  async close(): Promise<void> {
    await this.#watch?.close();
  }
}
