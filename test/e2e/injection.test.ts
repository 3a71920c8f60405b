// The tutorial's third act: a namespace labelled tproxy.io/lock=enabled, the unmodified
// examples/debian-app.yaml applied into it, and the pod is locked by the chart's injection webhook, with
// the real parts: the chart rendered by helm (webhook configurations, injection config, certificate), the
// real tproxy-injector over HTTPS, podwatch, the proxy and sidecar-init in network namespaces. The API
// server's admission and the kubelet are stand-ins (test/support/admission-stand-in.ts, injection.ts).
import { expect } from "chai";
import { join } from "node:path";
import { AdmissionDenied } from "../support/admission-stand-in.ts";
import { applyUnmodified, cniNode, dropsNetRaw, installInjector, LOCK_LABEL, podOfDeployment, type CniNode, type InjectorRun } from "../support/injection.ts";
import { BUCKET_URL, NODE_NAME, TutorialWorld, type PodNs } from "../support/tutorial-world.ts";
import { REPO } from "../support/world.ts";

const EXAMPLE = join(REPO, "examples/debian-app.yaml");

describe("injection: an unmodified Deployment in a locked namespace (namespaces; API and kubelet stand-ins)", function () {
  this.timeout(120_000);
  let world: TutorialWorld;
  let injector: InjectorRun;

  before(async () => {
    await TutorialWorld.removeLeftovers("tpinj");
    world = await TutorialWorld.create("tpinj");
    await world.installTproxy();
    injector = await installInjector(world);
    world.api.createNamespace("team-a", { [LOCK_LABEL]: "enabled" });
    world.api.createNamespace("team-b");
  });
  after(async () => {
    await world?.close();
  });

  let locked: PodNs;
  it("locks the pod: the webhook added the annotation, the init container, the root certs and NET_RAW dropped; 418, 200, ping refused", async () => {
    locked = await world.addPod("debian-app");
    const applied = await applyUnmodified(world, "team-a", locked, EXAMPLE);
    const pod = applied.pod;
    expect(pod.metadata.annotations?.["initializer.kubernetes.io/tproxy"]).to.equal("true");
    expect((pod.spec.initContainers ?? []).map((c) => c.name)).to.deep.equal(["tproxy"]);
    expect(dropsNetRaw(pod)).to.equal(true);
    const init = applied.inits[0]!.proc;
    expect(init.child.exitCode, init.output).to.equal(0);
    expect(world.api.getPod("team-a", pod.metadata.name)?.status.phase).to.equal("Running");
    const round = await world.appRound(locked);
    expect(round[0]).to.equal("https://www.google.com: 418");
    expect(round[1]).to.equal(`${BUCKET_URL}: 200`);
    expect(round.join("\n")).to.match(/ping: .*(Operation not permitted|sendmsg)/);
  });

  it("leaves the same manifest in a namespace without the label as it is: not locked (control)", async () => {
    const free = await world.addPod("debian-app-free");
    const applied = await applyUnmodified(world, "team-b", free, EXAMPLE);
    expect(applied.pod.spec.initContainers ?? []).to.deep.equal([]);
    expect(applied.pod.metadata.annotations ?? {}).to.not.have.property("initializer.kubernetes.io/tproxy");
    const round = await world.appRound(free);
    expect(round[0]).to.equal("https://www.google.com: 200");
  });

  it("refuses a pod of a locked namespace whose tproxy init container was tampered with, naming it", async () => {
    const pod = podOfDeployment(EXAMPLE);
    const spec = pod.spec as { initContainers?: unknown[] };
    spec.initContainers = [{ name: "tproxy", image: "busybox", command: ["true"] }];
    const err = await world.api.createPodObject("team-a", pod, { nodeName: NODE_NAME }).then(() => undefined, (e: unknown) => e);
    expect(err).to.be.instanceOf(AdmissionDenied);
    expect((err as Error).message).to.match(/tproxy/);
  });

  it("refuses pods of a locked namespace while the webhook is down (failurePolicy Fail); other namespaces' pods are created", async () => {
    await injector.proc.stop("SIGKILL");
    const err = await world.api.createPodObject("team-a", podOfDeployment(EXAMPLE), { nodeName: NODE_NAME }).then(() => undefined, (e: unknown) => e);
    expect(err).to.be.instanceOf(AdmissionDenied);
    expect((err as Error).message).to.match(/failed calling webhook/);
    const other = await world.api.createPodObject("team-b", podOfDeployment(EXAMPLE), { nodeName: NODE_NAME });
    expect(other.metadata.name).to.match(/^debian-app-/);
  });
});

describe("injection in lock.mode cni: the same manifest, locked at sandbox creation, no capability in the pod (namespaces; API, kubelet and runtime stand-ins)", function () {
  this.timeout(120_000);
  let world: TutorialWorld;
  let node: CniNode;

  before(async () => {
    await TutorialWorld.removeLeftovers("tpinc");
    world = await TutorialWorld.create("tpinc");
    await world.installTproxy();
    node = await cniNode(world);
    await installInjector(world, { "lock.mode": "cni" });
    world.api.createNamespace("team-a", { [LOCK_LABEL]: "enabled" });
    world.api.createNamespace("team-b");
  });
  after(async () => {
    await world?.close();
  });

  it("locks the pod through the CNI chain; its init container adds no capability, runs as non-root and only waits; 418, 200, ping refused", async () => {
    const applied = await applyUnmodified(world, "team-a", node.sandbox, EXAMPLE);
    const init = (applied.pod.spec.initContainers ?? [])[0] as unknown as { name: string; args?: string[]; command?: string[]; securityContext: { capabilities?: { add?: string[]; drop?: string[] }; runAsNonRoot?: boolean; seccompProfile?: { type: string } } };
    expect(init.name).to.equal("tproxy");
    expect([...(init.command ?? []), ...(init.args ?? [])].join(" ")).to.match(/--mode wait/);
    expect(init.securityContext.capabilities?.add ?? []).to.deep.equal([]);
    expect(init.securityContext.capabilities?.drop).to.deep.equal(["ALL"]);
    expect(init.securityContext.runAsNonRoot).to.equal(true);
    expect(dropsNetRaw(applied.pod)).to.equal(true);
    const proc = applied.inits[0]!.proc;
    expect(proc.child.exitCode, proc.output).to.equal(0);
    // The lock is the plugin's: written at sandbox creation, before the (capability-less) init container ran.
    expect(await applied.podNs.ns.must("iptables-save", ["-t", "filter"])).to.include(":TPROXY-EGRESS");
    const round = await world.appRound(applied.podNs);
    expect(round[0]).to.equal("https://www.google.com: 418");
    expect(round[1]).to.equal(`${BUCKET_URL}: 200`);
    expect(round.join("\n")).to.match(/ping: .*(Operation not permitted|sendmsg)/);
  });

  it("passes a pod of a namespace without the label through the same chain unlocked (control)", async () => {
    const applied = await applyUnmodified(world, "team-b", node.sandbox, EXAMPLE);
    expect(applied.pod.spec.initContainers ?? []).to.deep.equal([]);
    expect(await applied.podNs.ns.must("iptables-save", ["-t", "filter"])).to.not.include("TPROXY-EGRESS");
    const round = await world.appRound(applied.podNs);
    expect(round[0]).to.equal("https://www.google.com: 200");
  });
});
