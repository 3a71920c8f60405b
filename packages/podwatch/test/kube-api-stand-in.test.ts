// The API stand-in, checked through the real client, and the kubelet stand-in of the tutorial world, so
// the controller's and the end-to-end tests rest on known behaviour.
import { CoreV1Api, KubeConfig, Watch } from "@kubernetes/client-node";
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { KubeApiStandIn } from "../../../test/support/kube-api-stand-in.ts";
import { Netns, must, uniqueName, waitFor } from "../../../test/support/netns.ts";
import { DNS_IP, KubeletStandIn, TutorialWorld } from "../../../test/support/tutorial-world.ts";

interface Seen {
  type: string;
  name: string | undefined;
  rv: string | undefined;
  code?: number;
  /** The object as it came, for checks on its fields. */
  obj: WatchedObject;
}

interface WatchedObject {
  metadata?: { name?: string; resourceVersion?: string; deletionTimestamp?: string; deletionGracePeriodSeconds?: number; labels?: Record<string, string> };
  spec?: { nodeName?: string };
  status?: { phase?: string; podIP?: string };
  code?: number;
}

const brief = (seen: readonly Seen[]) => seen.map(({ obj: _obj, ...rest }) => rest);

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
      (type, obj: WatchedObject) =>
        seen.push({ type, name: obj.metadata?.name, rv: obj.metadata?.resourceVersion, ...(obj.code !== undefined ? { code: obj.code } : {}), obj }),
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
    api.deletePod("default", "unbound", { gracePeriodSeconds: 0 });
    await waitFor("three events", () => seen.length >= 3, 2_000);
    expect(seen.map((e) => `${e.type} ${e.name}`)).to.deep.equal(["ADDED unbound", "MODIFIED unbound", "DELETED unbound"]);
  });

  it("deletes a running pod gracefully: MODIFIED with deletionTimestamp and grace period, DELETED when it is over", async () => {
    api.createPod({ name: "web", nodeName: "node-a", podIP: "10.0.0.7", terminationGracePeriodSeconds: 1 });
    const { seen } = await watch("/api/v1/pods", { resourceVersion: api.resourceVersion, fieldSelector: "spec.nodeName=node-a" });
    const t0 = Date.now();
    api.deletePod("default", "web");
    await waitFor("the MODIFIED event", () => seen.length >= 1, 2_000);
    expect(seen[0]?.type).to.equal("MODIFIED");
    expect(seen[0]?.obj.metadata?.deletionGracePeriodSeconds).to.equal(1);
    const deadline = Date.parse(seen[0]?.obj.metadata?.deletionTimestamp ?? "");
    expect(deadline).to.be.within(t0, t0 + 2_000); // now + the grace period, to the second
    expect(seen[0]?.obj.status?.phase).to.equal("Running"); // it still runs while terminating
    expect(api.getPod("default", "web")?.metadata.deletionTimestamp).to.be.a("string");
    expect(api.terminating).to.deep.equal(["default/web"]);
    await waitFor("the DELETED event after the grace period", () => seen.length >= 2, 3_000);
    expect(seen.map((e) => e.type)).to.deep.equal(["MODIFIED", "DELETED"]);
    expect(api.getPod("default", "web")).to.equal(undefined);

    // Unscheduled pods and gracePeriodSeconds 0 go at once.
    api.createPod({ name: "unbound" });
    api.createPod({ name: "forced", nodeName: "node-a", podIP: "10.0.0.8" });
    const all = await watch("/api/v1/pods", { resourceVersion: api.resourceVersion });
    api.deletePod("default", "unbound");
    api.deletePod("default", "forced", { gracePeriodSeconds: 0 });
    await waitFor("two DELETED events", () => all.seen.length >= 2, 2_000);
    expect(all.seen.map((e) => `${e.type} ${e.name}`)).to.deep.equal(["DELETED unbound", "DELETED forced"]);
  });

  it("sends a pod leaving a selector as DELETED with its previous state, at the new resourceVersion", async () => {
    api.createPod({ name: "moving", nodeName: "node-a", podIP: "10.0.0.9", labels: { app: "web" } });
    api.createPod({ name: "relabelled", nodeName: "node-a", podIP: "10.0.0.10", labels: { app: "web" } });
    const byNode = await watch("/api/v1/pods", { resourceVersion: api.resourceVersion, fieldSelector: "spec.nodeName=node-a" });
    const byLabel = await watch("/api/v1/pods", { resourceVersion: api.resourceVersion, labelSelector: "app=web" });
    const byPhase = await watch("/api/v1/pods", { resourceVersion: api.resourceVersion, fieldSelector: "status.phase=Running" });
    const moved = api.updatePod("default", "moving", { spec: { nodeName: "node-b" } });
    const relabelled = api.updatePod("default", "relabelled", { metadata: { labels: { app: "db" } } });
    const finished = api.updatePod("default", "moving", { status: { phase: "Succeeded" } });
    await waitFor("the events", () => byNode.seen.length >= 2 && byLabel.seen.length >= 3 && byPhase.seen.length >= 3, 2_000);

    expect(brief(byNode.seen)).to.deep.equal([
      { type: "DELETED", name: "moving", rv: moved.metadata.resourceVersion },
      { type: "MODIFIED", name: "relabelled", rv: relabelled.metadata.resourceVersion },
    ]);
    expect(byNode.seen[0]?.obj.spec?.nodeName).to.equal("node-a"); // the state it matched in
    expect(brief(byLabel.seen)).to.deep.equal([
      { type: "MODIFIED", name: "moving", rv: moved.metadata.resourceVersion },
      { type: "DELETED", name: "relabelled", rv: relabelled.metadata.resourceVersion },
      { type: "MODIFIED", name: "moving", rv: finished.metadata.resourceVersion },
    ]);
    expect(byLabel.seen[1]?.obj.metadata?.labels).to.deep.equal({ app: "web" });
    expect(brief(byPhase.seen)).to.deep.equal([
      { type: "MODIFIED", name: "moving", rv: moved.metadata.resourceVersion },
      { type: "MODIFIED", name: "relabelled", rv: relabelled.metadata.resourceVersion },
      { type: "DELETED", name: "moving", rv: finished.metadata.resourceVersion },
    ]);
    expect(byPhase.seen[2]?.obj.status?.phase).to.equal("Running");
  });

  it("replays history after a resourceVersion, and answers 410 Expired once compacted", async () => {
    const rv = api.resourceVersion;
    api.createPod({ name: "p1", nodeName: "node-a" });
    const replay = await watch("/api/v1/namespaces/default/pods", { resourceVersion: rv });
    await waitFor("replayed event", () => replay.seen.length === 1, 2_000);
    api.compact();
    const expired = await watch("/api/v1/pods", { resourceVersion: rv });
    await expired.done;
    expect(brief(expired.seen)).to.deep.equal([{ type: "ERROR", name: undefined, rv: undefined, code: 410 }]);
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

  it("sends no BOOKMARK to a watch that did not ask (as the informer of @kubernetes/client-node does not)", async () => {
    const plain = await watch("/api/v1/pods", { resourceVersion: api.resourceVersion });
    const asking = await watch("/api/v1/pods", { resourceVersion: api.resourceVersion, allowWatchBookmarks: true });
    await waitFor("three bookmarks on the watch that asked", () => asking.seen.filter((e) => e.type === "BOOKMARK").length >= 3, 2_000);
    api.createPod({ name: "marker" });
    await waitFor("the marker on both watches", () => [plain, asking].every((w) => w.seen.some((e) => e.name === "marker")), 2_000);
    expect(plain.seen.map((e) => `${e.type} ${e.name}`)).to.deep.equal(["ADDED marker"]);
    // sendInitialEvents needs bookmarks (the end of the initial events is one): refused without them.
    const refused = await fetch(`${api.url}/api/v1/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan`, {
      headers: { authorization: `Bearer ${api.token}` },
    });
    expect(refused.status).to.equal(422);
    expect(((await refused.json()) as { message: string }).message).to.include("sendInitialEvents requires setting allowWatchBookmarks to true");
  });

  it("refuses requests without its token and unknown field selectors", async () => {
    const r = await fetch(`${api.url}/api/v1/pods`);
    expect(r.status).to.equal(401);
    const bad = await fetch(`${api.url}/api/v1/pods?fieldSelector=spec.foo%3Dx`, { headers: { authorization: `Bearer ${api.token}` } });
    expect(bad.status).to.equal(400);
    expect(((await bad.json()) as { message: string }).message).to.include('"spec.foo" is not a known field selector');
  });

  it("serves Namespaces and Secrets by name for Helm's lookup (404 when absent), and no token only when started anonymous", async () => {
    const core = kc.makeApiClient(CoreV1Api);
    expect((await core.readNamespace({ name: "kube-system" })).metadata?.name).to.equal("kube-system");
    api.putSecret("ns-a", "ca", { "tls.crt": "CERT" }, { type: "kubernetes.io/tls", annotations: { "helm.sh/resource-policy": "keep" } });
    const secret = await core.readNamespacedSecret({ namespace: "ns-a", name: "ca" });
    expect(secret.type).to.equal("kubernetes.io/tls");
    expect(Buffer.from(secret.data!["tls.crt"]!, "base64").toString()).to.equal("CERT");
    expect(secret.metadata?.annotations).to.deep.equal({ "helm.sh/resource-policy": "keep" });
    api.deleteSecret("ns-a", "ca");
    const gone = await fetch(`${api.url}/api/v1/namespaces/ns-a/secrets/ca`, { headers: { authorization: `Bearer ${api.token}` } });
    expect(gone.status).to.equal(404);
    expect(((await gone.json()) as { reason: string }).reason).to.equal("NotFound");
    const discovery = (await (await fetch(`${api.url}/api/v1`, { headers: { authorization: `Bearer ${api.token}` } })).json()) as { resources: { name: string; namespaced: boolean }[] };
    expect(discovery.resources.find((r) => r.name === "namespaces")?.namespaced).to.equal(false);
    expect((await fetch(`${api.url}/api/v1/namespaces/kube-system`)).status).to.equal(401);
    const open = await KubeApiStandIn.start({ anonymous: true });
    try {
      expect((await fetch(`${open.url}/api/v1/namespaces/kube-system`)).status).to.equal(200);
      expect((await fetch(`${open.url}/api/v1/namespaces/kube-system`, { headers: { authorization: "Bearer wrong" } })).status).to.equal(401);
      expect(open.requests, "the refused request is not among those served").to.deep.equal(["GET /api/v1/namespaces/kube-system"]);
    } finally {
      await open.close();
    }
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

  it("has lost its event history after a restart: a watch from before it gets 410 Gone", async () => {
    const before = api.resourceVersion;
    api.createPod({ name: "p1" });
    await api.restart();
    api.createPod({ name: "p2" });
    const old = await watch("/api/v1/pods", { resourceVersion: before });
    await old.done;
    expect(brief(old.seen)).to.deep.equal([{ type: "ERROR", name: undefined, rv: undefined, code: 410 }]);
    const current = await watch("/api/v1/pods", { resourceVersion: api.resourceVersion });
    api.createPod({ name: "p3" });
    await waitFor("an event after the restart", () => current.seen.length >= 1, 2_000);
    expect(current.seen.map((e) => `${e.type} ${e.name}`)).to.deep.equal(["ADDED p3"]);
  });
});

describe("kubelet stand-in of the tutorial world", () => {
  let api: KubeApiStandIn;
  let kubelet: KubeletStandIn;
  const children: ChildProcess[] = [];

  beforeEach(async () => {
    api = await KubeApiStandIn.start();
    kubelet = new KubeletStandIn(api, "node-k");
  });
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await api.close();
  });

  /** An init container that exits with `code` when told to (a line on stdin). */
  function initProcess(code: number): { child: ChildProcess; finish: () => Promise<void> } {
    const child = spawn("sh", ["-c", `read line; exit ${code}`], { stdio: ["pipe", "ignore", "ignore"] });
    children.push(child);
    return { child, finish: async () => void (child.stdin?.end("go\n"), await once(child, "exit")) };
  }

  const phase = (name: string) => api.getPod("default", name)?.status.phase;

  it("keeps a pod Pending, with its IP, until its init container exited 0; then it runs", async () => {
    kubelet.startPod({ name: "locked", ip: "10.0.0.3", annotations: { a: "true" }, initContainers: ["sidecar-init"] });
    const init = initProcess(0);
    kubelet.follow("default", "locked", "sidecar-init", init.child);
    expect(phase("locked")).to.equal("Pending");
    expect(api.getPod("default", "locked")?.status.podIP).to.equal("10.0.0.3");
    expect(api.getPod("default", "locked")?.spec.initContainers?.map((c) => c.name)).to.deep.equal(["sidecar-init"]);
    await init.finish();
    expect(phase("locked")).to.equal("Running");
    expect(kubelet.pendingInitContainers("default", "locked")).to.deep.equal([]);
  });

  it("leaves the pod Pending when its init container fails, and lets it run once a rerun exits 0", async () => {
    kubelet.startPod({ name: "locked", ip: "10.0.0.4", initContainers: ["sidecar-init"] });
    const failing = initProcess(3);
    kubelet.follow("default", "locked", "sidecar-init", failing.child);
    await failing.finish();
    expect(phase("locked")).to.equal("Pending");
    expect(api.getPod("default", "locked")?.status.initContainerStatuses).to.deep.include({ name: "sidecar-init", ready: false, state: { terminated: { exitCode: 3, reason: "Error" } } });
    const rerun = initProcess(0);
    kubelet.follow("default", "locked", "sidecar-init", rerun.child);
    await rerun.finish();
    expect(phase("locked")).to.equal("Running");
  });

  it("runs a pod without init containers at once", () => {
    kubelet.startPod({ name: "plain", ip: "10.0.0.5" });
    expect(phase("plain")).to.equal("Running");
    expect(api.getPod("default", "plain")?.spec.nodeName).to.equal("node-k");
  });
});

describe("tutorial world: pods and their namespaces", function () {
  this.timeout(60_000);
  const PREFIX = "tpwt";

  it("an annotated pod runs only after the real sidecar-init exited 0; an added pod's namespace goes with the world", async () => {
    await TutorialWorld.removeLeftovers(PREFIX);
    const world = await TutorialWorld.create(PREFIX);
    let extra: string;
    try {
      const pod = await world.addPod("extra");
      extra = pod.ns.name;
      world.schedulePod(pod, true);
      expect(world.api.getPod("default", "extra")?.status).to.include({ phase: "Pending", podIP: pod.ip });
      const init = world.sidecarInit(pod, ["--no-wait", "--allow-dns", DNS_IP]);
      await once(init.child, "exit");
      expect(init.child.exitCode, init.output).to.equal(0);
      expect(world.api.getPod("default", "extra")?.status.phase).to.equal("Running");
      world.schedulePod(world.app, false);
      expect(world.api.getPod("default", "debian-app")?.status.phase).to.equal("Running");
    } finally {
      await world.close();
    }
    expect(await namespaces(PREFIX)).to.deep.equal([]);
    expect(existsSync(`/etc/netns/${extra}`)).to.equal(false);

    // A crashed run's extra namespace is removed by the next run's leftover cleanup.
    const stale = await Netns.create(uniqueName(`${PREFIX}x`));
    expect(await namespaces(PREFIX)).to.deep.equal([stale.name]);
    await TutorialWorld.removeLeftovers(PREFIX);
    expect(await namespaces(PREFIX)).to.deep.equal([]);
  });
});

async function namespaces(prefix: string): Promise<string[]> {
  return (await must("ip", ["netns", "list"])).split("\n").map((l) => l.split(" ")[0] ?? "").filter((n) => n.startsWith(prefix));
}
