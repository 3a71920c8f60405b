// The pod identity map podwatch publishes for the proxy (flow.client.pod): which pods it names, and
// when the file is written, refreshed and deleted.
import { expect } from "chai";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { V1Pod } from "@kubernetes/client-node";
import { IdentityPublisher, identitySnapshot, type IdentitySnapshot } from "../src/identity.ts";
import { FakeClock, pod, silentLog } from "./helpers.ts";

function labelled(p: V1Pod, labels: Record<string, string>, serviceAccount?: string): V1Pod {
  return { ...p, metadata: { ...p.metadata, labels }, spec: { ...p.spec!, ...(serviceAccount ? { serviceAccountName: serviceAccount } : {}) } };
}

describe("pod identity map", () => {
  it("names each pod of the node by every address it has, with labels, annotations and service account", () => {
    const web = labelled(pod({ name: "web", namespace: "payments", ip: ["10.244.0.5", "FD00:0:0::5"], annotations: { team: "pay", "kubectl.kubernetes.io/last-applied-configuration": "{...}" } }), { app: "web" }, "web-sa");
    const s = identitySnapshot([web], "node-a", 1234);
    expect(s).to.deep.equal({
      version: 1,
      node: "node-a",
      generatedAt: 1234,
      pods: {
        "10.244.0.5": { namespace: "payments", name: "web", uid: "", labels: { app: "web" }, annotations: { "initializer.kubernetes.io/tproxy": "true", team: "pay" }, serviceAccount: "web-sa", node: "node-a" },
        "fd00::5": { namespace: "payments", name: "web", uid: "", labels: { app: "web" }, annotations: { "initializer.kubernetes.io/tproxy": "true", team: "pay" }, serviceAccount: "web-sa", node: "node-a" },
      },
    });
  });

  it("names unlocked pods too, Pending ones with an IP and terminating ones, but not host-network, terminal, IP-less or other nodes' pods", () => {
    const terminating = pod({ name: "going", ip: "10.244.0.7" });
    terminating.metadata!.deletionTimestamp = new Date();
    const s = identitySnapshot(
      [
        pod({ name: "plain", ip: "10.244.0.1", annotated: false }),
        pod({ name: "starting", ip: "10.244.0.2", phase: "Pending" }),
        pod({ name: "host", ip: "10.0.0.1", hostNetwork: true }),
        pod({ name: "done", ip: "10.244.0.3", phase: "Succeeded" }),
        pod({ name: "failed", ip: "10.244.0.4", phase: "Failed" }),
        pod({ name: "noip" }),
        pod({ name: "elsewhere", ip: "10.244.1.9", node: "node-b" }),
        terminating,
      ],
      "node-a",
      0,
    );
    expect(Object.entries(s.pods).map(([ip, p]) => `${ip} ${p.name}`)).to.deep.equal(["10.244.0.1 plain", "10.244.0.2 starting", "10.244.0.7 going"]);
    expect(s.pods["10.244.0.1"]?.serviceAccount).to.equal("default");
  });

  it("names no pod for an address two pods claim (a stale entry beside the pod that got its address)", () => {
    const s = identitySnapshot([pod({ name: "old", ip: "10.244.0.9" }), pod({ name: "new", ip: "10.244.0.9" }), pod({ name: "other", ip: "10.244.0.10" })], "node-a", 0);
    expect(Object.keys(s.pods)).to.deep.equal(["10.244.0.10"]);
  });

  describe("IdentityPublisher", () => {
    let dir: string;
    let file: string;
    let clock: FakeClock;
    let pods: V1Pod[];
    let watching: boolean;
    let wall: number;
    let publisher: IdentityPublisher;
    const tick = async (ms: number): Promise<void> => {
      await clock.advance(ms);
      await publisher.idle();
    };
    const read = (): IdentitySnapshot => JSON.parse(readFileSync(file, "utf8")) as IdentitySnapshot;

    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), "podwatch-identity-"));
      file = join(dir, "pods.json");
      clock = new FakeClock();
      pods = [];
      watching = true;
      wall = 1_000_000;
      publisher = new IdentityPublisher({ path: file, nodeName: "node-a", pods: () => pods, watching: () => watching, clock, log: silentLog, wallClock: () => wall });
    });
    afterEach(async () => {
      await publisher.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    it("writes once per burst of changes, after the coalescing window", async () => {
      pods = [pod({ name: "a", ip: "10.244.0.1" })];
      publisher.changed();
      pods = [...pods, pod({ name: "b", ip: "10.244.0.2" })];
      publisher.changed();
      await tick(100);
      expect(existsSync(file)).to.equal(false);
      await tick(100);
      expect(Object.keys(read().pods)).to.deep.equal(["10.244.0.1", "10.244.0.2"]);
      pods = [pods[1]!];
      publisher.changed();
      await tick(200);
      expect(Object.keys(read().pods)).to.deep.equal(["10.244.0.2"]);
      // Only the file itself: temporary files are renamed over it.
      expect(readFileSync(file, "utf8").endsWith("\n")).to.equal(true);
    });

    it("rewrites the file (a new generatedAt) while watching, and stops refreshing while the watch is down", async () => {
      publisher.changed();
      await tick(200);
      expect(read().generatedAt).to.equal(1_000_000);
      wall += 5000;
      await tick(5000);
      expect(read().generatedAt).to.equal(1_005_000);
      watching = false;
      wall += 5000;
      await tick(5000);
      publisher.changed();
      await tick(200);
      expect(read().generatedAt, "not refreshed while the cache does not follow the API").to.equal(1_005_000);
      watching = true;
      wall += 5000;
      await tick(5000);
      expect(read().generatedAt).to.equal(1_015_000);
    });

    it("deletes the file when it stops (nothing follows the pods any more)", async () => {
      publisher.changed();
      await tick(200);
      expect(existsSync(file)).to.equal(true);
      await publisher.stop();
      expect(existsSync(file)).to.equal(false);
    });
  });
});
