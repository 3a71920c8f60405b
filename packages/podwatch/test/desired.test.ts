import { expect } from "chai";
import { canonicalIp, isLocked, selectRedirects } from "../src/desired.ts";
import { ANNOTATION, pod } from "./helpers.ts";

const select = (pods: Parameters<typeof selectRedirects>[0]) => selectRedirects(pods, { annotation: ANNOTATION, nodeName: "node-a" });

describe("podwatch desired state", () => {
  it("selects annotated, running pods with an IP on this node", () => {
    expect(select([pod({ name: "a", ip: "10.0.0.1" })])).to.deep.equal([{ ip: "10.0.0.1", family: "ipv4", pod: "default/a" }]);
  });

  it("leaves out other nodes, unannotated, wrong value, no IP, hostNetwork and finished pods", () => {
    const out = select([
      pod({ name: "other-node", node: "node-b", ip: "10.0.0.2" }),
      pod({ name: "unannotated", ip: "10.0.0.3", annotated: false }),
      pod({ name: "false", ip: "10.0.0.4", annotated: false, annotations: { [ANNOTATION]: "True" } }),
      pod({ name: "pending", phase: "Pending" }),
      pod({ name: "host", ip: "192.168.0.10", hostNetwork: true }),
      pod({ name: "done", ip: "10.0.0.5", phase: "Succeeded" }),
      pod({ name: "failed", ip: "10.0.0.6", phase: "Failed" }),
    ]);
    expect(out).to.deep.equal([]);
  });

  it("keeps a pending pod that already has its IP (init containers run then)", () => {
    expect(select([pod({ name: "init", ip: "10.0.0.7", phase: "Pending" })])).to.have.length(1);
  });

  it("keeps a terminating pod (deletionTimestamp set): its containers run and send until they stop", () => {
    const terminating = pod({ name: "leaving", ip: "10.0.0.10" });
    terminating.metadata = { ...terminating.metadata, deletionTimestamp: new Date("2026-01-01T00:00:30Z"), deletionGracePeriodSeconds: 30 };
    expect(select([terminating])).to.deep.equal([{ ip: "10.0.0.10", family: "ipv4", pod: "default/leaving" }]);
  });

  it("a locked claim on a reused IP wins (fail closed): an unlocked newcomer does not take the rule away", () => {
    const old = pod({ name: "old", ip: "10.0.0.8", created: "2026-01-01T00:00:00Z" });
    const newcomer = pod({ name: "new", ip: "10.0.0.8", annotated: false, created: "2026-01-01T00:05:00Z" });
    expect(select([old, newcomer])).to.deep.equal([{ ip: "10.0.0.8", family: "ipv4", pod: "default/old" }]);
    expect(select([newcomer, old])).to.deep.equal([{ ip: "10.0.0.8", family: "ipv4", pod: "default/old" }]);
    // Among locked claims the newest names the rule.
    const lockedNewcomer = pod({ name: "locked-new", ip: "10.0.0.8", created: "2026-01-01T00:06:00Z" });
    expect(select([old, newcomer, lockedNewcomer])).to.deep.equal([{ ip: "10.0.0.8", family: "ipv4", pod: "default/locked-new" }]);
    const sameSecond = pod({ name: "same", ip: "10.0.0.8", rv: "9" });
    expect(select([pod({ name: "older-rv", ip: "10.0.0.8", rv: "3" }), sameSecond])).to.deep.equal([{ ip: "10.0.0.8", family: "ipv4", pod: "default/same" }]);
    // Only unlocked claims: no rule.
    expect(select([pod({ name: "a", ip: "10.0.0.8", annotated: false }), pod({ name: "b", ip: "10.0.0.8", annotated: false, rv: "2" })])).to.deep.equal([]);
  });

  describe("keyed on the pod's spec, not only its annotation", () => {
    const withInit = (opts: Parameters<typeof pod>[0]) => pod({ initContainers: ["tproxy"], ...opts });
    const selectInit = (pods: Parameters<typeof selectRedirects>[0], initContainer = "tproxy") =>
      selectRedirects(pods, { annotation: ANNOTATION, initContainer, nodeName: "node-a" });

    it("a pod whose spec has the lock's init container stays locked with its annotation removed, \"false\" or another value", () => {
      const pods = [
        withInit({ name: "removed", ip: "10.0.1.1", annotated: false }),
        withInit({ name: "false", ip: "10.0.1.2", annotated: false, annotations: { [ANNOTATION]: "false" } }),
        withInit({ name: "yes", ip: "10.0.1.3", annotated: false, annotations: { [ANNOTATION]: "yes" } }),
      ];
      expect(selectInit(pods).map((r) => r.pod)).to.deep.equal(["default/false", "default/removed", "default/yes"]);
      expect(isLocked(pods[0]!, { annotation: ANNOTATION, initContainer: "tproxy" })).to.equal(true);
    });

    it("matches the init container by name only (any image), and the name is the configured one", () => {
      const mirrored = pod({ name: "mirrored", ip: "10.0.1.4", annotated: false, initContainers: ["tproxy"] });
      mirrored.spec!.initContainers![0]!.image = "registry.example.com/mirror/lock:1";
      const other = pod({ name: "other-init", ip: "10.0.1.5", annotated: false, initContainers: ["migrate", "sidecar-init"] });
      const appNamed = pod({ name: "app-named-tproxy", ip: "10.0.1.6", annotated: false });
      appNamed.spec!.containers = [{ name: "tproxy", image: "x" }]; // an app container of that name locks nothing
      expect(selectInit([mirrored, other, appNamed]).map((r) => r.pod)).to.deep.equal(["default/mirrored"]);
      expect(selectInit([mirrored, other, appNamed], "sidecar-init").map((r) => r.pod)).to.deep.equal(["default/other-init"]);
      // Without an init container name (library default) only the annotation counts.
      expect(select([mirrored, other])).to.deep.equal([]);
    });

    it("an unannotated newcomer whose spec has the init container locks a reused IP (its claim names the rule)", () => {
      const old = pod({ name: "old", ip: "10.0.1.7", annotated: false, created: "2026-01-01T00:00:00Z" });
      const newcomer = withInit({ name: "new", ip: "10.0.1.7", annotated: false, created: "2026-01-01T00:05:00Z" });
      expect(selectInit([old, newcomer])).to.deep.equal([{ ip: "10.0.1.7", family: "ipv4", pod: "default/new" }]);
    });
  });

  it("handles dual-stack pods and canonicalises IPv6 as iptables prints it", () => {
    expect(select([pod({ name: "d", ip: ["10.0.0.9", "FD00:0:0::0009"] })])).to.deep.equal([
      { ip: "10.0.0.9", family: "ipv4", pod: "default/d" },
      { ip: "fd00::9", family: "ipv6", pod: "default/d" },
    ]);
    expect(canonicalIp("not-an-ip")).to.equal(undefined);
    expect(canonicalIp("2001:db8:0:0:1:0:0:1")?.ip).to.equal("2001:db8::1:0:0:1");
  });

  it("sorts by pod so equal inputs render equal chains", () => {
    const a = select([pod({ name: "z", ip: "10.0.0.1" }), pod({ name: "a", ip: "10.0.0.2" })]);
    expect(a.map((r) => r.pod)).to.deep.equal(["default/a", "default/z"]);
  });
});
