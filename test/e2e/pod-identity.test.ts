// "Which pod is asking", end to end: the real podwatch writes this node's pods by IP to a file (a
// stand-in for the chart's shared emptyDir), the real proxy reads it (no API access of its own) and runs
// examples/filters/per-pod.ts, which allows by namespace and by label. Labels changed through the API
// reach the next request; an address no pod has, or a map nothing keeps fresh, is denied.
import { expect } from "chai";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeConfigMap } from "../support/configmap.ts";
import { waitFor } from "../support/netns.ts";
import { ANNOTATION, TutorialWorld, type PodNs } from "../support/tutorial-world.ts";
import { REPO, TPROXY_CLI } from "../support/world.ts";

const FILTER = join(REPO, "examples/filters/per-pod.ts");
const STANDARD_PORT = 15174;
const LABEL = "egress.tproxy/google";

describe("flow.client.pod end to end (podwatch's map, the proxy, a per-pod filter)", function () {
  this.timeout(60_000);
  let world: TutorialWorld;
  let identityFile: string;
  let payments: PodNs;

  before(async function () {
    this.timeout(120_000);
    await TutorialWorld.removeLeftovers("tpp");
    world = await TutorialWorld.create("tpp");
    // What the chart sets up: the CA, the filter ConfigMap, and one volume both containers mount.
    world.ca = { cert: join(world.dir, "tproxy-ca.crt"), key: join(world.dir, "tproxy-ca.key") };
    await world.node.must(process.execPath, [TPROXY_CLI, "ca", "create", "--cert", world.ca.cert, "--key", world.ca.key]);
    world.filterDir = join(world.dir, "filter");
    writeConfigMap(world.filterDir, { "filter.ts": readFileSync(FILTER, "utf8") });
    const shared = join(world.dir, "run-tproxy");
    mkdirSync(shared);
    identityFile = join(shared, "pods.json");
    await world.startPodwatch(["--pod-identity-file", identityFile]);
    await world.startProxy(["--pod-identity-file", identityFile, "--standard-port", String(STANDARD_PORT)]);
    // debian-app-locked, in namespace default, locked by its init container.
    const init = await world.deployLocked();
    if (init.child.exitCode !== 0) throw new Error(`sidecar-init exited ${init.child.exitCode}:\n${init.output}`);
    // A locked pod of namespace payments (annotated: podwatch redirects it).
    payments = await world.addPod("checkout");
    world.kubelet.startPod({ name: "checkout", namespace: "payments", ip: payments.ip, annotations: { [ANNOTATION]: "true" } });
    world.mountRootCerts(payments);
    await waitFor("both pods in the identity map", () => {
      const text = existsSync(identityFile) ? readFileSync(identityFile, "utf8") : "";
      return text.includes(payments.ip) && text.includes(world.locked.ip);
    }, 10_000);
    // podwatch's redirect for the new pod, and the proxy's reading of the map (it looks when the folder
    // changes), may come a moment after the file names it.
    await until("the proxy to know checkout", payments, /^(?!000 )(?!403 tproxy: \S+ is not a known pod)/);
  });
  after(async () => {
    await world?.close();
  });

  /** "status body" of a GET from the pod (through the redirect to the proxy). */
  const get = async (pod: PodNs, url = "https://www.google.com/"): Promise<string> => {
    const r = await world.curlFrom(pod, ["-w", " %{http_code}", url]);
    const body = r.stdout.trim();
    const code = body.slice(body.lastIndexOf(" ") + 1);
    return `${code} ${body.slice(0, body.lastIndexOf(" ")).trim().split("\n")[0]}`;
  };
  const until = async (what: string, pod: PodNs, want: RegExp): Promise<void> => {
    let last = "";
    await waitFor(what, async () => want.test((last = await get(pod))), 10_000, 100).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; last answer: ${last}`);
    });
  };

  it("allows the payments namespace and denies another namespace, naming the pod", async () => {
    expect(await get(payments)).to.match(/^200 /);
    expect(await get(world.locked)).to.equal("403 tproxy: default/debian-app-locked may not reach www.google.com");
    // The namespace's list, not any host: the bucket is on it, the metadata server is not.
    expect(await get(payments, "https://storage.googleapis.com/solutions-public-assets/")).to.match(/^200 /);
  });

  it("follows labels changed through the API: the next request sees them", async () => {
    world.api.updatePod("default", "debian-app-locked", { metadata: { labels: { [LABEL]: "allowed" } } });
    await until("the label to allow debian-app-locked", world.locked, /^200 /);
    expect(await get(world.locked, "https://storage.googleapis.com/solutions-public-assets/")).to.equal("403 tproxy: default/debian-app-locked may not reach storage.googleapis.com");
    world.api.updatePod("default", "debian-app-locked", { metadata: { labels: { [LABEL]: null } } });
    await until("the label's removal to deny again", world.locked, /^403 tproxy: default\/debian-app-locked may not reach/);
  });

  it("names no pod for an address no pod of this node has (the node itself): the filter denies", async () => {
    const r = await world.node.run("curl", ["-sS", "--max-time", "5", "-x", `http://127.0.0.1:${STANDARD_PORT}`, "-w", " %{http_code}", "http://www.google.com/"], { timeoutMs: 10_000 });
    expect(r.stdout.trim()).to.equal("tproxy: 127.0.0.1 is not a known pod of this node; denied\n 403".trim());
  });

  it("fails closed when podwatch stops (its map goes), and names pods again once it is back", async () => {
    await world.podwatch!.stop();
    expect(existsSync(identityFile)).to.equal(false);
    await until("payments to be denied without a map", payments, new RegExp(`^403 tproxy: ${payments.ip.replace(/\./g, "\\.")} is not a known pod of this node; denied$`));
    expect(world.proxy!.output).to.match(/no pod identity map/);
    await world.startPodwatch(["--pod-identity-file", identityFile]);
    await until("payments to be allowed again", payments, /^200 /);
    const metrics = await world.node.must("curl", ["-sS", "http://127.0.0.1:15171/metrics"]);
    expect(metrics).to.match(/^tproxy_pod_identity_addresses [1-9]/m);
    expect(metrics).to.match(/^tproxy_pod_identity_age_seconds \d/m);
  });
});
