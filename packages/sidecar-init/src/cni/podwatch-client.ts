// Asking the node's podwatch whether a pod is locked: `GET /v1/pods/<namespace>/<name>` over its unix
// socket, answered from its informer cache. The plugin cannot read the pod's annotation itself (it has no
// API credentials, and runs before the kubelet has anything but the pod's name), and podwatch is the
// component that decides the node's redirects from the same pod object, so both agree on "locked".
import { request } from "node:http";

/** podwatch's answer for a pod it knows. */
export interface PodAnswer {
  readonly uid: string;
  readonly lock: boolean;
}

/** One attempt's outcome: the answer, or why there is none yet (for the retry and the final message). */
export type AskResult = { readonly ok: true; readonly pod: PodAnswer } | { readonly ok: false; readonly why: string };

/** One request; never rejects. */
export function askOnce(socket: string, namespace: string, name: string, timeoutMs = 2_000): Promise<AskResult> {
  return new Promise((resolve) => {
    const req = request({ socketPath: socket, path: `/v1/pods/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`, method: "GET", timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => {
        if (res.statusCode === 404) return resolve({ ok: false, why: `podwatch does not know pod ${namespace}/${name} (yet)` });
        if (res.statusCode !== 200) return resolve({ ok: false, why: `podwatch answered HTTP ${res.statusCode}: ${body.trim().slice(0, 200)}` });
        try {
          const v = JSON.parse(body) as { uid?: unknown; lock?: unknown };
          if (typeof v.uid !== "string" || typeof v.lock !== "boolean") throw new Error(`unexpected answer ${body.trim().slice(0, 200)}`);
          resolve({ ok: true, pod: { uid: v.uid, lock: v.lock } });
        } catch (err) {
          resolve({ ok: false, why: `podwatch's answer is unreadable: ${(err as Error).message}` });
        }
      });
      res.on("error", (err) => resolve({ ok: false, why: `reading podwatch's answer failed: ${err.message}` }));
    });
    req.once("timeout", () => {
      req.destroy();
      resolve({ ok: false, why: `podwatch did not answer within ${timeoutMs} ms` });
    });
    req.once("error", (err: NodeJS.ErrnoException) => resolve({ ok: false, why: `cannot reach podwatch at ${socket}: ${err.code ?? err.message}` }));
    req.end();
  });
}

export interface AskOptions {
  readonly socket: string;
  readonly namespace: string;
  readonly name: string;
  /** The uid the runtime gave (K8S_POD_UID); an answer about another pod of that name is not taken. */
  readonly uid?: string | undefined;
  readonly timeoutMs: number;
  readonly intervalMs?: number;
  readonly ask?: typeof askOnce;
}

/**
 * Asks until podwatch answers about this very pod or `timeoutMs` has passed. A new pod may not be in
 * podwatch's cache yet, and a pod recreated under the same name may still be the old one there: both
 * are retried. Resolves with the answer, or with the last reason there was none.
 */
export async function askPodwatch(opts: AskOptions): Promise<AskResult> {
  const ask = opts.ask ?? askOnce;
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    let r = await ask(opts.socket, opts.namespace, opts.name);
    if (r.ok && opts.uid !== undefined && opts.uid !== "" && r.pod.uid !== opts.uid) {
      r = { ok: false, why: `podwatch knows pod ${opts.namespace}/${opts.name} with uid ${r.pod.uid}, not the uid ${opts.uid} being created` };
    }
    if (r.ok || Date.now() >= deadline) return r;
    await new Promise((res) => setTimeout(res, Math.min(opts.intervalMs ?? 250, Math.max(0, deadline - Date.now()))));
  }
}
