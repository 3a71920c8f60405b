// tproxy-cni's decisions without a namespace: the runtime's variables and config read as the spec says,
// the opt-in asked of podwatch (fail closed when it cannot say), prevResult passed through unchanged,
// and the lock built from the plugin's settings and the namespace's addresses with sidecar-init's rules.
import { expect } from "chai";
import { pino } from "pino";
import type { RunResult } from "@tproxy/iptables";
import { runPlugin, type PluginDeps } from "../src/cni/plugin.ts";
import { parseCniArgs, parseInvocation, parseNetConf } from "../src/cni/spec.ts";
import { parseSettings } from "../src/cni/settings.ts";
import { askPodwatch, type AskResult } from "../src/cni/podwatch-client.ts";
import { renderChain } from "../src/rules.ts";

const PREV = { cniVersion: "1.0.0", interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }], ips: [{ address: "10.1.0.5/24", gateway: "10.1.0.1", interface: 0 }], dns: { nameservers: ["10.96.0.10"] } };
const ENV = { CNI_COMMAND: "ADD", CNI_CONTAINERID: "c1", CNI_NETNS: "/var/run/netns/x", CNI_IFNAME: "eth0", CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_UID=u-1" };
const conf = (extra: Record<string, unknown> = {}) => JSON.stringify({ cniVersion: "1.0.0", name: "k8s", type: "tproxy-cni", prevResult: PREV, ...extra });
const log = pino({ level: "silent" });

/** A fake namespace: records restore input, answers saves with what was restored. */
function fakeNetns() {
  const restored: string[] = [];
  const run = async (file: string, args: readonly string[], input?: string): Promise<RunResult> => {
    if (file.endsWith("-restore")) {
      if (!args.includes("--test")) restored.push(input ?? "");
      return { code: 0, stdout: "", stderr: "" };
    }
    return { code: 0, stdout: "*filter\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n", stderr: "" };
  };
  return { restored, run };
}

function deps(answer: AskResult | undefined, ns = fakeNetns()): PluginDeps & { ns: ReturnType<typeof fakeNetns>; asked: string[] } {
  const asked: string[] = [];
  return {
    ns,
    asked,
    log,
    path: "/usr/sbin:/usr/bin:/sbin:/bin",
    ipv6Available: () => false,
    runIn: () => ns.run,
    interfacesIn: async () => ({ lo: [{ address: "127.0.0.1", family: "IPv4", internal: true }], eth0: [{ address: "10.1.0.5", family: "IPv4", internal: false }] }),
    ask: async (o) => {
      asked.push(`${o.namespace}/${o.name}@${o.uid}`);
      return answer ?? { ok: false, why: "no answer" };
    },
  };
}

describe("tproxy-cni: the plugin's decisions", () => {
  it("reads CNI_ARGS, the variables each command needs, and refuses unknown versions (codes 4, 1)", () => {
    expect(parseCniArgs("IgnoreUnknown=1;K8S_POD_NAME=a;K8S_POD_NAMESPACE=b")).to.deep.equal({ IgnoreUnknown: "1", K8S_POD_NAME: "a", K8S_POD_NAMESPACE: "b" });
    expect(() => parseInvocation({ CNI_COMMAND: "ADD", CNI_CONTAINERID: "c" })).to.throw(/without CNI_NETNS, CNI_IFNAME/);
    expect(parseInvocation({ CNI_COMMAND: "DEL", CNI_CONTAINERID: "c", CNI_IFNAME: "eth0" }).netns).to.equal("");
    expect(() => parseNetConf('{"cniVersion":"9.9.9","name":"n","type":"tproxy-cni"}')).to.throw(/cniVersion "9.9.9" is not supported/);
  });

  it("ADD of a locked pod applies sidecar-init's chain for its own addresses and the allowed DNS, then prints prevResult unchanged", async () => {
    const d = deps({ ok: true, pod: { uid: "u-1", lock: true } });
    const out = await runPlugin(ENV, conf({ allowDns: ["10.96.0.10"], blockCidrs: ["10.96.0.0/12"] }), d);
    expect(out.code).to.equal(0);
    expect(JSON.parse(out.stdout)).to.deep.equal(PREV);
    expect(d.asked).to.deep.equal(["shop/web-1@u-1"]);
    const policy = parseSettings(parseNetConf(conf({ allowDns: ["10.96.0.10"], blockCidrs: ["10.96.0.0/12"] })));
    const chain = renderChain({ allowDns: policy.allowDns!, blockCidrs: policy.blockCidrs, nodeAddresses: [], standardPort: 0, ports: [80, 443], ipv6Intercepted: false, ownAddresses: [{ ip: "10.1.0.5", family: "ipv4" }] }, "ipv4");
    expect(d.ns.restored).to.have.length(1);
    expect(d.ns.restored[0]).to.equal(["*filter", ":TPROXY-EGRESS - [0:0]", "-I OUTPUT 1 -j TPROXY-EGRESS", ...chain, "COMMIT", ""].join("\n"));
  });

  it("without allowDns in its settings the lock allows the resolvers of prevResult.dns; with neither, ADD fails (7)", async () => {
    const d = deps({ ok: true, pod: { uid: "u-1", lock: true } });
    expect((await runPlugin(ENV, conf(), d)).code).to.equal(0);
    expect(d.ns.restored[0]).to.include("-s 10.1.0.5/32 -d 10.96.0.10/32 -p udp -m udp --dport 53 -j ACCEPT");
    const noDns = await runPlugin(ENV, JSON.stringify({ cniVersion: "1.0.0", name: "k8s", type: "tproxy-cni", prevResult: { ...PREV, dns: {} } }), deps({ ok: true, pod: { uid: "u-1", lock: true } }));
    expect(noDns.code).to.equal(1);
    expect(JSON.parse(noDns.stdout)).to.include({ code: 7 });
  });

  it("ADD of an unlocked pod writes nothing and prints prevResult unchanged", async () => {
    const d = deps({ ok: true, pod: { uid: "u-1", lock: false } });
    const out = await runPlugin(ENV, conf(), d);
    expect([out.code, JSON.parse(out.stdout)]).to.deep.equal([0, PREV]);
    expect(d.ns.restored).to.deep.equal([]);
  });

  it("fails closed with 11 when podwatch cannot say; passes an excluded namespace without asking", async () => {
    const d = deps(undefined);
    const out = await runPlugin(ENV, conf(), d);
    expect(out.code).to.equal(1);
    expect(JSON.parse(out.stdout)).to.deep.include({ cniVersion: "1.0.0", code: 11, msg: "cannot tell whether pod shop/web-1 must be locked: no answer" });
    expect(d.ns.restored).to.deep.equal([]);
    const excluded = deps(undefined);
    const ok = await runPlugin(ENV, conf({ excludeNamespaces: ["shop"] }), excluded);
    expect([ok.code, JSON.parse(ok.stdout)]).to.deep.equal([0, PREV]);
    expect(excluded.asked).to.deep.equal([]);
  });

  it("is chained only: ADD without prevResult fails (7); DEL, GC and STATUS succeed with nothing to do", async () => {
    const d = deps({ ok: true, pod: { uid: "u-1", lock: true } });
    const out = await runPlugin(ENV, JSON.stringify({ cniVersion: "1.0.0", name: "k8s", type: "tproxy-cni" }), d);
    expect(JSON.parse(out.stdout)).to.include({ code: 7 });
    for (const command of ["DEL", "GC", "STATUS"]) {
      expect(await runPlugin({ ...ENV, CNI_COMMAND: command, CNI_NETNS: "" }, conf(), d)).to.deep.equal({ code: 0, stdout: "" });
    }
  });

  it("asks again while podwatch does not know the pod or knows another of its name, up to its timeout", async () => {
    const answers: AskResult[] = [{ ok: false, why: "404" }, { ok: true, pod: { uid: "old", lock: false } }, { ok: true, pod: { uid: "new", lock: true } }];
    const r = await askPodwatch({ socket: "/x", namespace: "a", name: "b", uid: "new", timeoutMs: 5_000, intervalMs: 1, ask: async () => answers.shift()! });
    expect(r).to.deep.equal({ ok: true, pod: { uid: "new", lock: true } });
    const late = await askPodwatch({ socket: "/x", namespace: "a", name: "b", uid: "new", timeoutMs: 30, intervalMs: 5, ask: async () => ({ ok: true, pod: { uid: "old", lock: false } }) });
    expect(late).to.deep.equal({ ok: false, why: "podwatch knows pod a/b with uid old, not the uid new being created" });
  });
});
