// The API stand-in, checked through the real client, so the controller's tests rest on known behaviour.
import { CoreV1Api, KubeConfig, Watch } from "@kubernetes/client-node";
import { expect } from "chai";
import { KubeApiStandIn } from "../../../test/support/kube-api-stand-in.ts";
import { waitFor } from "../../../test/support/netns.ts";

interface Seen {
  type: string;
  name: string | undefined;
  rv: string | undefined;
  code?: number;
}

describe("Kubernetes API stand-in (through @kubernetes/client-node)", () => {
  let api: KubeApiStandIn;
  let kc: KubeConfig;
  const aborts: AbortController[] = [];

  beforeEach(async () => {
    api = await KubeApiStandIn.start({ bookmarkIntervalMs: 100 });
    kc = new KubeConfig();
    kc.loadFromFile(api.kubeconfigPath);
  });
  afterEach(async () => {
    for (const a of aborts.splice(0)) a.abort();
    await api.close();
  });

  async function watch(path: string, params: Record<string, string | number | boolean | undefined>): Promise<{ seen: Seen[]; done: Promise<unknown> }> {
    const seen: Seen[] = [];
    let finish: (err: unknown) => void = () => undefined;
    const done = new Promise<unknown>((r) => (finish = r));
    const ctl = await new Watch(kc).watch(
      path,
      params,
      (type, obj: { metadata?: { name?: string; resourceVersion?: string }; code?: number }) =>
        seen.push({ type, name: obj.metadata?.name, rv: obj.metadata?.resourceVersion, ...(obj.code !== undefined ? { code: obj.code } : {}) }),
      (err) => finish(err ?? "closed"),
    );
    aborts.push(ctl);
    return { seen, done };
  }

  it("lists with a resourceVersion and filters by spec.nodeName", async () => {
    api.createPod({ name: "a", nodeName: "node-a" });
    api.createPod({ name: "b", nodeName: "node-b" });
    const list = await kc.makeApiClient(CoreV1Api).listPodForAllNamespaces({ fieldSelector: "spec.nodeName=node-a" });
    expect(list.items.map((p) => p.metadata?.name)).to.deep.equal(["a"]);
    expect(list.metadata?.resourceVersion).to.equal(api.resourceVersion);
  });

  it("streams ADDED/MODIFIED/DELETED from a resourceVersion, as seen through a field selector", async () => {
    const rv = api.resourceVersion;
    const { seen } = await watch("/api/v1/pods", { resourceVersion: rv, fieldSelector: "spec.nodeName=node-a" });
    api.createPod({ name: "unbound" });
    api.updatePod("default", "unbound", { spec: { nodeName: "node-a" } }); // enters the selector: ADDED
    api.setPodIP("default", "unbound", "10.0.0.1");
    api.createPod({ name: "other", nodeName: "node-b" });
    api.deletePod("default", "unbound");
    await waitFor("three events", () => seen.length >= 3, 2_000);
    expect(seen.map((e) => `${e.type} ${e.name}`)).to.deep.equal(["ADDED unbound", "MODIFIED unbound", "DELETED unbound"]);
  });

  it("replays history after a resourceVersion, and answers 410 Expired once compacted", async () => {
    const rv = api.resourceVersion;
    api.createPod({ name: "p1", nodeName: "node-a" });
    const replay = await watch("/api/v1/namespaces/default/pods", { resourceVersion: rv });
    await waitFor("replayed event", () => replay.seen.length === 1, 2_000);
    api.compact();
    const expired = await watch("/api/v1/pods", { resourceVersion: rv });
    await expired.done;
    expect(expired.seen).to.deep.equal([{ type: "ERROR", name: undefined, rv: undefined, code: 410 }]);
  });

  it("force410 ends open watches with an ERROR 410 event", async () => {
    const w = await watch("/api/v1/pods", { resourceVersion: api.resourceVersion });
    await waitFor("the watch to be open", () => api.openWatches === 1, 2_000);
    api.force410();
    await w.done;
    expect(w.seen.map((e) => `${e.type} ${e.code}`)).to.deep.equal(["ERROR 410"]);
  });

  it("sends BOOKMARKs when asked, and ends a watch at its timeoutSeconds", async () => {
    const w = await watch("/api/v1/pods", { resourceVersion: api.resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 1 });
    const t0 = Date.now();
    expect(await w.done).to.equal("closed");
    expect(Date.now() - t0).to.be.within(800, 2_000);
    expect(w.seen.filter((e) => e.type === "BOOKMARK").length).to.be.at.least(3);
  });

  it("refuses requests without its token and unknown field selectors", async () => {
    const r = await fetch(`${api.url}/api/v1/pods`);
    expect(r.status).to.equal(401);
    const bad = await fetch(`${api.url}/api/v1/pods?fieldSelector=spec.foo%3Dx`, { headers: { authorization: `Bearer ${api.token}` } });
    expect(bad.status).to.equal(400);
    expect(((await bad.json()) as { message: string }).message).to.include('"spec.foo" is not a known field selector');
  });

  it("refuses connections while stopped and serves the same state on the same port after restart", async () => {
    api.createPod({ name: "kept" });
    const port = api.port;
    await api.stop();
    let refused = false;
    await fetch(`${api.url}/version`).catch(() => (refused = true));
    expect(refused).to.equal(true);
    await api.restart();
    expect(api.port).to.equal(port);
    const list = await kc.makeApiClient(CoreV1Api).listNamespacedPod({ namespace: "default" });
    expect(list.items.map((p) => p.metadata?.name)).to.deep.equal(["kept"]);
  });
});
