// The node-local answer tproxy-cni (the chained CNI plugin) needs before it locks a pod's namespace:
// is this pod locked? `GET /v1/pods/<namespace>/<name>` on a unix socket (a hostPath only root on the
// node reaches), answered from the informer cache with the same `isLocked` that decides the redirects.
import { chmod, mkdir, rename, rm, stat } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { dirname } from "node:path";
import type { V1Pod } from "@kubernetes/client-node";
import { isLocked } from "./desired.ts";

export interface CniSocketOptions {
  readonly path: string;
  readonly pods: () => readonly V1Pod[];
  /** False until the informers listed once: a pod missing then is not known to be absent. */
  readonly synced: () => boolean;
  readonly annotation: string;
  readonly initContainer: string;
  /** Namespaces watched; empty: all. */
  readonly namespaces: readonly string[];
}

export interface CniSocket {
  close(): Promise<void>;
}

/** Numbers the sockets of this process (tests start several). */
let serial = 0;

const ROUTE = /^\/v1\/pods\/([^/]+)\/([^/]+)$/;

export async function startCniSocket(opts: CniSocketOptions): Promise<CniSocket> {
  const server: Server = createServer((req, res) => {
    const m = ROUTE.exec((req.url ?? "/").split("?")[0] ?? "");
    const json = (status: number, body: object) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body) + "\n");
    if (req.method !== "GET" || !m) return json(404, { error: "not found: GET /v1/pods/<namespace>/<name>" });
    const namespace = decodeURIComponent(m[1] ?? "");
    const name = decodeURIComponent(m[2] ?? "");
    // A namespace podwatch does not watch gets no redirect: locking its pods would only cut them off.
    if (opts.namespaces.length > 0 && !opts.namespaces.includes(namespace)) return json(200, { uid: "", lock: false, watched: false });
    if (!opts.synced()) return json(503, { error: "podwatch has not listed this node's pods yet" });
    const pod = opts.pods().find((p) => p.metadata?.namespace === namespace && p.metadata?.name === name);
    if (!pod) return json(404, { error: `pod ${namespace}/${name} is not on this node (as far as podwatch's cache knows yet)` });
    return json(200, { uid: pod.metadata?.uid ?? "", lock: isLocked(pod, opts), watched: true });
  });
  await mkdir(dirname(opts.path), { recursive: true });
  // During a rolling update two podwatches of one node serve at once, and a closing unix-socket server
  // unlinks the path it listened on. So each listens on a path of its own and renames that socket over the
  // shared one (atomic: the plugin always finds one that answers); the old podwatch's close then unlinks
  // only its own, already renamed-away, path. A socket left by a crash is replaced the same way.
  const own = `${opts.path}.${process.pid}.${(serial += 1)}`;
  await rm(own, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(own, () => {
      server.off("error", reject);
      resolve();
    });
  });
  await chmod(own, 0o600);
  await rename(own, opts.path);
  const ino = (await stat(opts.path)).ino;
  return {
    async close() {
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
      // Still ours (no newer podwatch took the path): no socket left that nothing answers on.
      if ((await stat(opts.path).catch(() => undefined))?.ino === ino) await rm(opts.path, { force: true });
    },
  };
}
