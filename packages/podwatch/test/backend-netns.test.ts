// podwatch's iptables backend on nodes made like kube-proxy's: the real `tproxy-podwatch` with
// `--iptables-backend auto` (its default) in a namespace standing for the node, where the kubelet's
// chains (KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY in mangle) and kube-proxy's nat rules were written
// with iptables-legacy or iptables-nft. Its REDIRECT chain must land in the backend kube-proxy uses,
// which is read back with that backend's own iptables-*-save. Needs root.
import { expect } from "chai";
import { once } from "node:events";
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { DEFAULT_TRANSPARENT_PORT } from "@tproxy/iptables";
import { KubeApiStandIn } from "../../../test/support/kube-api-stand-in.ts";
import { Netns, must, removeStale, uniqueName, waitFor } from "../../../test/support/netns.ts";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = `${ROOT}packages/podwatch/dist/cli.js`;
const ON = { "initializer.kubernetes.io/tproxy": "true" };
const RULE = `-A TPROXY-REDIRECT -s 10.244.0.10/32 -p tcp -m multiport --dports 80,443 -m comment --comment "shop/web" -j REDIRECT --to-ports ${DEFAULT_TRANSPARENT_PORT}`;

type Backend = "legacy" | "nft";

/** The chains the kubelet (1.17 and later) creates in mangle of the backend it uses. */
const KUBELET_CHAINS = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n";

/** kube-proxy-like nat rules: `n` service rules behind the PREROUTING jump (n + 1 rules in all). */
function kubeProxyNat(n: number): string {
  const services = Array.from({ length: n }, (_, i) => `-A KUBE-SERVICES -d 10.96.0.${10 + i}/32 -p tcp -m tcp --dport 443 -j RETURN\n`).join("");
  return `*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n${services}COMMIT\n`;
}

interface NodeLike {
  /** The backend given the kubelet's chains, if any. */
  readonly kubelet?: Backend;
  /** kube-proxy service rules written with each backend (0: none at all). */
  readonly legacyServices: number;
  readonly nftServices: number;
}

describe("podwatch's iptables backend on kube-proxy-like nodes (netns)", function () {
  this.timeout(60_000);
  let api: KubeApiStandIn;
  const nodes: Netns[] = [];
  const children: ChildProcess[] = [];

  before(async () => {
    await must(`${ROOT}node_modules/.bin/tsc`, ["--build", `${ROOT}packages/podwatch`], { timeoutMs: 120_000 });
    await removeStale("tpbk");
    api = await KubeApiStandIn.start();
    api.createPod({ name: "web", namespace: "shop", nodeName: "node-a", annotations: ON });
    api.setPodIP("shop", "web", "10.244.0.10");
  });

  after(async () => {
    for (const c of children) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill("SIGTERM");
        await once(c, "exit");
      }
    }
    await api?.close();
    for (const n of nodes) await n.destroy();
  });

  async function node(like: NodeLike): Promise<Netns> {
    const ns = await Netns.create(uniqueName("tpbk"));
    nodes.push(ns);
    if (like.kubelet) await ns.must(`iptables-${like.kubelet}-restore`, ["--noflush"], { input: KUBELET_CHAINS });
    if (like.legacyServices > 0) await ns.must("iptables-legacy-restore", ["--noflush"], { input: kubeProxyNat(like.legacyServices) });
    if (like.nftServices > 0) await ns.must("iptables-nft-restore", ["--noflush"], { input: kubeProxyNat(like.nftServices) });
    return ns;
  }

  /** Runs podwatch on the node until its rule is in one backend's nat table; returns its log and that backend. */
  async function podwatchOn(ns: Netns, env: Record<string, string> = {}): Promise<{ choice: Record<string, unknown>; landedIn: Backend }> {
    const exposure = await api.exposeIn(ns);
    const child = ns.spawn(process.execPath, [CLI, "--node-name", "node-a", "--resync", "10m", "--metrics-port", "0"], {
      env: { ...process.env, KUBECONFIG: exposure.kubeconfigPath, TPROXY_LOG_LEVEL: "info", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    const logs: Array<Record<string, unknown>> = [];
    let stderr = "";
    let buf = "";
    child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
    child.stdout?.on("data", (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        logs.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
        buf = buf.slice(i + 1);
      }
    });
    const nat = async (b: Backend) => ns.must(`iptables-${b}-save`, ["-t", "nat"]);
    let landedIn: Backend | undefined;
    await waitFor(
      "podwatch's REDIRECT rule in one backend",
      async () => {
        if (child.exitCode !== null) throw new Error(`podwatch exited ${child.exitCode}: ${stderr}`);
        for (const b of ["legacy", "nft"] as const) if ((await nat(b)).includes(RULE)) landedIn = b;
        return landedIn !== undefined;
      },
      15_000,
    );
    // Only there: the other backend has no chain of podwatch's.
    const other = landedIn === "legacy" ? "nft" : "legacy";
    expect(await nat(other), `${other} nat table`).not.to.include("TPROXY-REDIRECT");
    expect(await ns.must(`iptables-${other}-save`, ["-t", "filter"]), `${other} filter table`).not.to.include("TPROXY-ENFORCE");
    expect(await ns.must(`iptables-${landedIn!}-save`, ["-t", "filter"]), `${landedIn} filter table`).to.include("-A TPROXY-ENFORCE");
    child.kill("SIGTERM");
    await once(child, "exit");
    const choice = logs.find((l) => typeof l.msg === "string" && l.msg.startsWith("iptables backend "));
    expect(choice, "podwatch logs its backend choice").to.not.equal(undefined);
    return { choice: choice!, landedIn: landedIn! };
  }

  it("a legacy node (kubelet chains and kube-proxy rules in iptables-legacy): legacy, saying why", async () => {
    const r = await podwatchOn(await node({ kubelet: "legacy", legacyServices: 3, nftServices: 0 }));
    expect(r.landedIn).to.equal("legacy");
    expect(r.choice).to.include({ backend: "legacy", msg: "iptables backend legacy: KUBE-IPTABLES-HINT in the legacy mangle table" });
    expect(r.choice["ipv4"]).to.deep.equal(["/usr/sbin/iptables-legacy-save", "/usr/sbin/iptables-legacy-restore"]);
  });

  it("an nft node (the same with iptables-nft): nft, saying why", async () => {
    const r = await podwatchOn(await node({ kubelet: "nft", legacyServices: 0, nftServices: 3 }));
    expect(r.landedIn).to.equal("nft");
    expect(r.choice).to.include({ backend: "nft", msg: "iptables backend nft: KUBE-IPTABLES-HINT in the nft mangle table" });
    expect(r.choice["ipv6"]).to.deep.equal(["/usr/sbin/ip6tables-nft-save", "/usr/sbin/ip6tables-nft-restore"]);
  });

  it("controls: the kubelet's chains decide against the rule counts, whichever backend holds them", async () => {
    // Most rules in nft, but the kubelet's chains in legacy: legacy.
    const toLegacy = await podwatchOn(await node({ kubelet: "legacy", legacyServices: 0, nftServices: 5 }));
    expect(toLegacy.landedIn).to.equal("legacy");
    expect(toLegacy.choice["reason"]).to.equal("KUBE-IPTABLES-HINT in the legacy mangle table");
    // Most rules in legacy, but the kubelet's chains in nft: nft.
    const toNft = await podwatchOn(await node({ kubelet: "nft", legacyServices: 5, nftServices: 0 }));
    expect(toNft.landedIn).to.equal("nft");
    expect(toNft.choice["reason"]).to.equal("KUBE-IPTABLES-HINT in the nft mangle table");
  });

  it("no kubelet chains: the backend holding more rules, legacy only when it holds more", async () => {
    const legacy = await podwatchOn(await node({ legacyServices: 3, nftServices: 1 }));
    expect(legacy.landedIn).to.equal("legacy");
    expect(legacy.choice["reason"]).to.equal("no kubelet chain in either backend; legacy holds more rules (4 against nft's 2)");
    const nft = await podwatchOn(await node({ legacyServices: 1, nftServices: 3 }));
    expect(nft.landedIn).to.equal("nft");
    const tie = await podwatchOn(await node({ legacyServices: 2, nftServices: 2 }));
    expect(tie.landedIn).to.equal("nft");
    expect(tie.choice["reason"]).to.equal("no kubelet chain in either backend; legacy does not hold more rules (3 against nft's 3), and nft is the default");
  });

  it("--iptables-backend names the backend whatever the node holds", async () => {
    const ns = await node({ kubelet: "nft", legacyServices: 0, nftServices: 3 });
    const named = await podwatchOn(ns, { TPROXY_IPTABLES_BACKEND: "legacy" });
    expect(named.landedIn).to.equal("legacy");
    expect(named.choice).to.include({ msg: "iptables backend legacy: as configured" });
    const exposure = await api.exposeIn(ns);
    const r = await ns.run("timeout", ["10", process.execPath, CLI, "--node-name", "node-a", "--iptables-backend", "iptables"], { env: { ...process.env, KUBECONFIG: exposure.kubeconfigPath } });
    expect(r.code).to.equal(2);
    expect(r.stderr).to.equal('tproxy-podwatch: --iptables-backend "iptables" is not a backend (expected auto, nft, legacy)\n');
  });
});
