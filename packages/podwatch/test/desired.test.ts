import { expect } from "chai";
import { canonicalIp, selectRedirects } from "../src/desired.ts";
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

  it("gives a reused IP to the newer pod: an unannotated newcomer takes the rule away", () => {
    const old = pod({ name: "old", ip: "10.0.0.8", created: "2026-01-01T00:00:00Z" });
    const newcomer = pod({ name: "new", ip: "10.0.0.8", annotated: false, created: "2026-01-01T00:05:00Z" });
    expect(select([old, newcomer])).to.deep.equal([]);
    expect(select([newcomer, old])).to.deep.equal([]);
    const sameSecond = pod({ name: "same", ip: "10.0.0.8", annotated: false, rv: "9" });
    expect(select([pod({ name: "old", ip: "10.0.0.8", rv: "3" }), sameSecond])).to.deep.equal([]);
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
