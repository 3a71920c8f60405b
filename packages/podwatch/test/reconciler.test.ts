import type { V1Pod } from "@kubernetes/client-node";
import { expect } from "chai";
import { createMetrics } from "../src/metrics.ts";
import { Reconciler } from "../src/reconciler.ts";
import { JUMP_RULE } from "../src/rules.ts";
import { FakeClock, FakeIptables, pod, silentLog, ANNOTATION } from "./helpers.ts";

describe("podwatch reconciler", () => {
  let clock: FakeClock;
  let ipt: FakeIptables;
  let pods: V1Pod[];
  let r: Reconciler;
  const make = (extra: Partial<ConstructorParameters<typeof Reconciler>[0]> = {}) =>
    new Reconciler({ pods: () => pods, runner: ipt, clock, log: silentLog, annotation: ANNOTATION, nodeName: "node-a", proxyPort: 8080, resyncMs: 60_000, ...extra });

  beforeEach(() => {
    clock = new FakeClock();
    ipt = new FakeIptables();
    pods = [];
    r = make();
  });
  afterEach(() => r.stop());

  const rulesOf = (family: "ipv4" | "ipv6" = "ipv4") => (ipt.tables[family].chain ?? []).map((l) => /-s (\S+)/.exec(l)?.[1]);

  it("does nothing before start (the initial list is not in yet)", async () => {
    pods = [pod({ name: "a", ip: "10.0.0.1" })];
    r.enqueue("pod add");
    await clock.advance(10_000);
    expect(ipt.saves).to.deep.equal([]);
  });

  it("coalesces a burst of events into one transaction", async () => {
    pods = [pod({ name: "a", ip: "10.0.0.1" })];
    r.start();
    for (let i = 2; i < 200; i++) {
      pods.push(pod({ name: `p${i}`, ip: `10.0.${i >> 8}.${i & 255}` }));
      r.enqueue("pod add");
    }
    await clock.advance(50);
    expect(ipt.natRestores("ipv4")).to.have.length(1);
    expect(rulesOf()).to.have.length(199);
    expect(ipt.tables.ipv4.prerouting).to.deep.equal([JUMP_RULE.slice("-A PREROUTING ".length)]);
    // IPv6: nothing wanted and nothing there → not touched at all.
    expect(ipt.restores.filter((x) => x.family === "ipv6")).to.deep.equal([]);
  });

  it("applies nothing when the kernel already matches", async () => {
    pods = [pod({ name: "a", ip: "10.0.0.1" })];
    r.start();
    await clock.advance(50);
    r.enqueue("pod update");
    await clock.advance(50);
    expect(ipt.restores.map((x) => x.input.split("\n")[0])).to.deep.equal(["*filter", "*nat"]);
    expect(r.passes).to.equal(2);
  });

  it("repairs a flushed chain and a deleted jump on the next resync", async () => {
    pods = [pod({ name: "a", ip: "10.0.0.1" })];
    r.start();
    await clock.advance(50);
    ipt.flush();
    ipt.tables.ipv4.prerouting = [];
    await clock.advance(59_000);
    expect(rulesOf()).to.deep.equal([]);
    await clock.advance(1_100);
    expect(rulesOf()).to.deep.equal(["10.0.0.1/32"]);
    expect(ipt.tables.ipv4.prerouting).to.have.length(1);
  });

  it("removes rules of pods that are gone at the first sync (kernel state from before a restart)", async () => {
    ipt.tables.ipv4.chain = [
      '-A TPROXY-REDIRECT -s 10.0.0.99/32 -p tcp -m multiport --dports 80,443 -m comment --comment "default/gone" -j REDIRECT --to-ports 8080',
    ];
    ipt.tables.ipv4.prerouting = ["-j TPROXY-REDIRECT"];
    pods = [pod({ name: "a", ip: "10.0.0.1" })];
    r.start();
    await clock.advance(50);
    expect(rulesOf()).to.deep.equal(["10.0.0.1/32"]);
  });

  it("retries a failed restore with exponential backoff and reports the failure until it succeeds", async () => {
    const metrics = createMetrics({ defaults: false });
    r = make({ metrics });
    pods = [pod({ name: "a", ip: "10.0.0.1" })];
    ipt.failRestores = 3;
    r.start();
    await clock.advance(50);
    expect(r.lastOk).to.equal(false);
    expect(r.lastError).to.include("line 3 failed");
    const at = () => ipt.natRestores().length;
    expect(at()).to.equal(1);
    await clock.advance(499);
    expect(at()).to.equal(1);
    await clock.advance(1); // 500 ms
    expect(at()).to.equal(2);
    await clock.advance(1000); // 1 s
    expect(at()).to.equal(3);
    await clock.advance(1999);
    expect(at()).to.equal(3);
    await clock.advance(1); // 2 s
    expect(at()).to.equal(4);
    expect(r.lastOk).to.equal(true);
    expect(rulesOf()).to.deep.equal(["10.0.0.1/32"]);
    const text = await metrics.registry.metrics();
    expect(text).to.match(/tproxy_podwatch_apply_errors_total\{family="ipv4"\} 3/);
    expect(text).to.match(/tproxy_podwatch_rules\{family="ipv4"\} 1/);
    expect(text).to.match(/tproxy_podwatch_pods_selected 1/);
  });

  it("a jump deleted by someone else between reading and writing: the refused transaction changes nothing and is retried", async () => {
    const metrics = createMetrics({ defaults: false });
    r = make({ metrics });
    const rule = (ip: string, name: string) =>
      `-A TPROXY-REDIRECT -s ${ip}/32 -p tcp -m multiport --dports 80,443 -m comment --comment "default/${name}" -j REDIRECT --to-ports 8080`;
    ipt.tables.ipv4.chain = [rule("10.0.0.1", "a")];
    ipt.tables.ipv4.prerouting = ["-j TPROXY-REDIRECT", "-s 10.0.0.0/8 -j TPROXY-REDIRECT"];
    pods = [pod({ name: "a", ip: "10.0.0.1" }), pod({ name: "b", ip: "10.0.0.2" })];
    const save = ipt.save.bind(ipt);
    let raced = false;
    ipt.save = async (family, table) => {
      const text = await save(family, table);
      if (family === "ipv4" && table !== "filter" && !raced) {
        raced = true;
        ipt.tables.ipv4.prerouting = ["-j TPROXY-REDIRECT"]; // an admin removes the extra jump meanwhile
      }
      return text;
    };
    r.start();
    await clock.advance(50);
    expect(r.lastOk).to.equal(false);
    expect(r.lastError).to.include("Bad rule (does a matching rule exist in that chain?)");
    expect(rulesOf()).to.deep.equal(["10.0.0.1/32"]); // nothing of the refused transaction was applied
    await clock.advance(500);
    expect(r.lastOk).to.equal(true);
    expect(rulesOf()).to.deep.equal(["10.0.0.1/32", "10.0.0.2/32"]);
    expect(ipt.tables.ipv4.prerouting).to.deep.equal(["-j TPROXY-REDIRECT"]);
    const text = await metrics.registry.metrics();
    expect(text).to.match(/^tproxy_podwatch_apply_errors_total\{family="ipv4"\} 1$/m);
    expect(text).to.match(/^tproxy_podwatch_applies_total\{family="ipv4"\} 1$/m);
  });

  it("an unreadable IPv6 table is no failure while no pod has an IPv6 address", async () => {
    const failing = new FakeIptables();
    const saveV4 = failing.save.bind(failing);
    failing.save = async (family, table) => {
      if (family === "ipv6") throw new Error(`ip6tables-save: table ${table ?? "nat"} does not exist`);
      return saveV4(family, table);
    };
    ipt = failing;
    r = make();
    pods = [pod({ name: "a", ip: "10.0.0.1" })];
    r.start();
    await clock.advance(50);
    expect(r.lastOk).to.equal(true);
    pods = [pod({ name: "a", ip: ["10.0.0.1", "fd00::1"] })];
    r.enqueue("pod update");
    await clock.advance(50);
    expect(r.lastOk).to.equal(false);
  });

  describe("the enforce chain", () => {
    const ids = (family: "ipv4" | "ipv6" = "ipv4") => (ipt.filters[family].chain ?? []).map((l) => /--comment "tproxy:\S+ ([^"]*)"/.exec(l)?.[1] + " " + (/-s (\S+)/.exec(l)?.[1] ?? "*") + " " + /-j (\S+)$/.exec(l)?.[1]);

    it("holds every locked address to the lock, jumped from INPUT and FORWARD, written before the redirect", async () => {
      r = make({ initContainer: "tproxy", allowDns: ["10.96.0.10"] });
      pods = [pod({ name: "a", ip: "10.0.0.1" }), pod({ name: "b", ip: "10.0.0.2", annotated: false, initContainers: ["tproxy"] }), pod({ name: "c", ip: "10.0.0.3", annotated: false })];
      r.start();
      await clock.advance(50);
      expect(ipt.restores.map((x) => `${x.family} ${x.input.split("\n")[0]}`)).to.deep.equal(["ipv4 *filter", "ipv4 *nat"]);
      expect(ipt.filters.ipv4.input).to.deep.equal(["-j TPROXY-ENFORCE"]);
      expect(ipt.filters.ipv4.forward).to.deep.equal(["-j TPROXY-ENFORCE"]);
      expect(ids().filter((l) => l.endsWith(" DROP"))).to.deep.equal(["default/a 10.0.0.1/32 DROP", "default/b 10.0.0.2/32 DROP"]);
      expect(ids()[0]).to.equal("replies * RETURN");
      expect(rulesOf()).to.deep.equal(["10.0.0.1/32", "10.0.0.2/32"]);
    });

    it("keeps a pod locked when its annotation goes, if its spec has the init container; releases it when the pod is gone", async () => {
      r = make({ initContainer: "tproxy" });
      const locked = pod({ name: "a", ip: "10.0.0.1", initContainers: ["tproxy"] });
      pods = [locked];
      r.start();
      await clock.advance(50);
      locked.metadata!.annotations = {};
      r.enqueue("pod update");
      await clock.advance(50);
      expect(rulesOf()).to.deep.equal(["10.0.0.1/32"]);
      expect(ids().filter((l) => l.endsWith(" DROP"))).to.deep.equal(["default/a 10.0.0.1/32 DROP"]);
      pods = [];
      r.enqueue("pod delete");
      await clock.advance(50);
      expect(rulesOf()).to.deep.equal([]);
      expect(ipt.filters.ipv4.chain).to.deep.equal([]);
    });

    it("repairs a flushed enforce chain and deleted jumps at the next resync", async () => {
      pods = [pod({ name: "a", ip: "10.0.0.1" })];
      r.start();
      await clock.advance(50);
      const good = [...(ipt.filters.ipv4.chain ?? [])];
      ipt.filters.ipv4.chain = [];
      ipt.filters.ipv4.forward = [];
      await clock.advance(60_000);
      expect(ipt.filters.ipv4.chain).to.deep.equal(good);
      expect(ipt.filters.ipv4.forward).to.deep.equal(["-j TPROXY-ENFORCE"]);
    });

    it("a failed enforce transaction fails the pass (health) and is retried; the redirect is still applied meanwhile", async () => {
      pods = [pod({ name: "a", ip: "10.0.0.1" })];
      ipt.failFilterRestores = 1;
      r.start();
      await clock.advance(50);
      expect(r.lastOk).to.equal(false);
      expect(r.lastError).to.include("line 5 failed (filter)");
      expect(rulesOf()).to.deep.equal(["10.0.0.1/32"]);
      await clock.advance(500);
      expect(r.lastOk).to.equal(true);
      expect(ids().filter((l) => l.endsWith(" DROP"))).to.deep.equal(["default/a 10.0.0.1/32 DROP"]);
    });
  });
});
