// Desired-state edges: where a pod's IPs come from, ties between pods claiming one IP, node filtering
// and the order rules are rendered in. Cases found by `npm run mutation`.
import type { V1Pod } from "@kubernetes/client-node";
import { expect } from "chai";
import { selectRedirects } from "../src/desired.ts";
import { ANNOTATION, pod } from "./helpers.ts";

const select = (pods: V1Pod[]) => selectRedirects(pods, { annotation: ANNOTATION, nodeName: "node-a" });

describe("podwatch desired state edges", () => {
  it("falls back to status.podIP when podIPs is missing or holds no address", () => {
    const single = pod({ name: "single", ip: "10.0.0.1" });
    delete single.status?.podIPs;
    const blank = pod({ name: "blank", ip: "10.0.0.2" });
    blank.status!.podIPs = [{ ip: "" }];
    const unset = pod({ name: "unset", ip: "10.0.0.4" });
    unset.status!.podIPs = [{} as { ip: string }];
    expect(select([single, blank, unset])).to.deep.equal([
      { ip: "10.0.0.2", family: "ipv4", pod: "default/blank" },
      { ip: "10.0.0.1", family: "ipv4", pod: "default/single" },
      { ip: "10.0.0.4", family: "ipv4", pod: "default/unset" },
    ]);
  });

  it("skips blank entries of podIPs", () => {
    const p = pod({ name: "dual", ip: "10.0.0.3" });
    p.status!.podIPs = [{ ip: "" }, { ip: "fd00::3" }];
    expect(select([p]).map((r) => r.ip)).to.deep.equal(["fd00::3"]);
  });

  it("takes pods of every node when no node name is given", () => {
    const pods = [pod({ name: "a", node: "node-a", ip: "10.0.0.1" }), pod({ name: "b", node: "node-b", ip: "10.0.0.2" })];
    expect(selectRedirects(pods, { annotation: ANNOTATION }).map((r) => r.pod)).to.deep.equal(["default/a", "default/b"]);
  });

  it("gives an IP claimed by two pods created in the same second to the higher resourceVersion, in any order", () => {
    // Both claims are locked (a locked claim always wins over an unlocked one): the newest names the rule.
    const older = pod({ name: "older", ip: "10.0.0.8", rv: "12" });
    const newer = pod({ name: "newer", ip: "10.0.0.8", rv: "3" });
    // resourceVersions compare as numbers: 12 is newer than 3
    expect(select([older, newer])).to.deep.equal([{ ip: "10.0.0.8", family: "ipv4", pod: "default/older" }]);
    expect(select([newer, older])).to.deep.equal([{ ip: "10.0.0.8", family: "ipv4", pod: "default/older" }]);
    const unversioned = pod({ name: "unversioned", ip: "10.0.0.8" });
    delete unversioned.metadata!.resourceVersion;
    expect(select([pod({ name: "versioned", ip: "10.0.0.8", rv: "5" }), unversioned])).to.deep.equal([{ ip: "10.0.0.8", family: "ipv4", pod: "default/versioned" }]);
  });

  it("orders by pod, then by address, whatever the input order", () => {
    const pods = [pod({ name: "m", ip: ["fd00::1", "10.0.0.9"] }), pod({ name: "z", ip: "10.0.0.1" }), pod({ name: "a", ip: "10.0.0.2" })];
    const want = [
      { ip: "10.0.0.2", family: "ipv4", pod: "default/a" },
      { ip: "10.0.0.9", family: "ipv4", pod: "default/m" },
      { ip: "fd00::1", family: "ipv6", pod: "default/m" },
      { ip: "10.0.0.1", family: "ipv4", pod: "default/z" },
    ];
    expect(select(pods)).to.deep.equal(want);
    expect(select([...pods].reverse())).to.deep.equal(want);
  });
});
