// podwatch's answer to tproxy-cni on its unix socket, from the informer cache: locked by annotation or by
// the lock's init container in the spec, 404 for a pod it does not know, 503 before the first list.
import { expect } from "chai";
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { V1Pod } from "@kubernetes/client-node";
import { startCniSocket, type CniSocket } from "../src/cni-socket.ts";

const pod = (namespace: string, name: string, uid: string, extra: Partial<V1Pod> = {}): V1Pod => ({ metadata: { namespace, name, uid, ...(extra.metadata ?? {}) }, spec: { containers: [], ...(extra.spec ?? {}) } });

function get(socketPath: string, path: string): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    request({ socketPath, path }, (res) => {
      let text = "";
      res.on("data", (d: Buffer) => (text += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown }));
    }).on("error", reject).end();
  });
}

describe("podwatch --cni-socket", () => {
  let dir: string;
  let server: CniSocket;
  let synced = false;
  const pods = [
    pod("shop", "annotated", "u1", { metadata: { annotations: { "initializer.kubernetes.io/tproxy": "true" } } }),
    pod("shop", "snippet", "u2", { spec: { containers: [], initContainers: [{ name: "tproxy", image: "x" }] } }),
    pod("shop", "plain", "u3", { metadata: { annotations: { "initializer.kubernetes.io/tproxy": "false" } } }),
  ];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "podwatch-cni-"));
    // A socket file left by an earlier podwatch is replaced.
    mkdirSync(join(dir, "sock"));
    writeFileSync(join(dir, "sock", "cni.sock"), "stale");
    server = await startCniSocket({ path: join(dir, "sock", "cni.sock"), pods: () => pods, synced: () => synced, annotation: "initializer.kubernetes.io/tproxy", initContainer: "tproxy", namespaces: [] });
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("answers 503 until the informers listed, then from the cache: locked by annotation or init container, 404 for an unknown pod", async () => {
    const sock = join(dir, "sock", "cni.sock");
    expect(statSync(sock).mode & 0o777).to.equal(0o600);
    expect((await get(sock, "/v1/pods/shop/annotated")).status).to.equal(503);
    synced = true;
    expect(await get(sock, "/v1/pods/shop/annotated")).to.deep.equal({ status: 200, body: { uid: "u1", lock: true, watched: true } });
    expect(await get(sock, "/v1/pods/shop/snippet")).to.deep.equal({ status: 200, body: { uid: "u2", lock: true, watched: true } });
    expect(await get(sock, "/v1/pods/shop/plain")).to.deep.equal({ status: 200, body: { uid: "u3", lock: false, watched: true } });
    expect((await get(sock, "/v1/pods/shop/nobody")).status).to.equal(404);
    expect((await get(sock, "/v1/pods/shop")).status).to.equal(404);
  });

  it("keeps answering when an older podwatch of the node stops after a newer one took the socket (a rolling update)", async () => {
    const path = join(dir, "surge", "cni.sock");
    const opts = { path, pods: () => pods, synced: () => true, annotation: "initializer.kubernetes.io/tproxy", initContainer: "tproxy", namespaces: [] };
    const old = await startCniSocket(opts);
    const newer = await startCniSocket({ ...opts, pods: () => pods.slice(1) });
    await old.close();
    expect((await get(path, "/v1/pods/shop/snippet")).status).to.equal(200);
    expect((await get(path, "/v1/pods/shop/annotated")).status, "answered by the newer podwatch").to.equal(404);
    await newer.close();
    expect(() => statSync(path)).to.throw(/ENOENT/);
  });

  it("says not locked, not watched, for a namespace outside --namespace (no redirect would come for it)", async () => {
    const other = await startCniSocket({ path: join(dir, "other.sock"), pods: () => pods, synced: () => true, annotation: "initializer.kubernetes.io/tproxy", initContainer: "tproxy", namespaces: ["web"] });
    try {
      expect(await get(join(dir, "other.sock"), "/v1/pods/shop/annotated")).to.deep.equal({ status: 200, body: { uid: "", lock: false, watched: false } });
    } finally {
      await other.close();
    }
  });
});
