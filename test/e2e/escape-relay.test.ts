// Relaying through the proxy's transparent port from outside the lock: the port listens on every
// address of the node, so without the node's guard any pod, host-network process or internet host that
// reaches the node could have the filter fetch for it. podwatch's chain TPROXY-GUARD (jumped from INPUT,
// kept whether pods are locked or not) resets every connection to the port that the node did not
// redirect. Each refusal is shown beside its control: the same connection, the guard flushed, answered.
import { expect } from "chai";
import { waitFor } from "../support/netns.ts";
import { METRICS_PORT, TRANSPARENT_PORT } from "../support/world.ts";
import { BUCKET_URL, TutorialWorld } from "../support/tutorial-world.ts";
import type { Netns } from "../support/netns.ts";

/** The node's address on each side: the unlocked pod's link, the internet's link, its loopback. */
const NODE_APP_SIDE = "10.90.1.1";
const NODE_NET_SIDE = "10.90.2.1";

describe("relaying through the proxy's transparent port without the node's redirect (namespaces; Kubernetes API stand-in)", function () {
  this.timeout(60_000);
  let world: TutorialWorld;

  before(async function () {
    this.timeout(120_000);
    world = await TutorialWorld.installed("tpxr");
  });
  after(async () => {
    await world?.close();
  });

  /** Requests the proxy counted, all decisions (its /metrics, on the node's loopback). */
  async function proxied(): Promise<number> {
    const text = await world.node.must("curl", ["-sS", `http://127.0.0.1:${METRICS_PORT}/metrics`]);
    return [...text.matchAll(/^tproxy_requests_total\{[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
  }

  /**
   * An HTTPS request for the bucket the chart's filter allows, its connection made straight to
   * `address`:<transparent port> (`--connect-to`; -k: a relay is what is shown here, not whose certificate).
   */
  async function direct(from: Netns, address: string): Promise<{ code: number; status: string; stderr: string }> {
    const r = await from.run("curl", ["-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "-k", "--connect-to", `storage.googleapis.com:443:${address}:${TRANSPARENT_PORT}`, BUCKET_URL], { timeoutMs: 10_000 });
    return { code: r.code ?? -1, status: r.stdout, stderr: r.stderr };
  }

  const sources = (): Array<[string, Netns, string]> => [
    ["the unlocked pod", world.app.ns, NODE_APP_SIDE],
    ["the internet host", world.internet, NODE_NET_SIDE],
    ["the node itself (loopback)", world.node, "127.0.0.1"],
  ];

  it("refuses (a reset: curl's 'connection refused') a direct connection from an unlocked pod, an internet host and the node; nothing reaches the proxy", async () => {
    await waitFor("the guard chain", async () => (await world.node.must("iptables-save", ["-t", "filter"])).includes("-A INPUT -j TPROXY-GUARD"), 10_000, 100);
    const before = await proxied();
    for (const [who, ns, address] of sources()) {
      const r = await direct(ns, address);
      expect(r.code, `${who}: ${r.stderr}`).to.equal(7); // CURLE_COULDNT_CONNECT
      expect(r.stderr, who).to.match(/Connection refused|Couldn't connect/);
    }
    expect(await proxied()).to.equal(before);
  });

  it("still serves the locked pod, whose connections the node redirects", async () => {
    const before = await proxied();
    const r = await world.curlFrom(world.locked, ["-o", "/dev/null", "-w", "%{http_code}", BUCKET_URL]);
    expect(r.stdout, r.stderr).to.equal("200");
    const denied = await world.curlFrom(world.locked, ["-o", "/dev/null", "-w", "%{http_code}", "http://www.google.com/"]);
    expect(denied.stdout, denied.stderr).to.equal("418");
    expect(await proxied()).to.equal(before + 2);
  });

  it("lets through a connection the node DNATs to one of its addresses (not only REDIRECT): conntrack marks both DNAT", async () => {
    const rule = ["PREROUTING", "-s", world.app.ip, "-p", "tcp", "--dport", "443", "-j", "DNAT", "--to-destination", `${NODE_APP_SIDE}:${TRANSPARENT_PORT}`];
    await world.node.must("iptables", ["-t", "nat", "-I", ...rule]);
    try {
      const before = await proxied();
      const r = await world.curlFrom(world.app, ["-k", "-o", "/dev/null", "-w", "%{http_code}", BUCKET_URL]);
      expect(r.stdout, r.stderr).to.equal("200");
      expect(await proxied()).to.equal(before + 1);
    } finally {
      await world.node.must("iptables", ["-t", "nat", "-D", ...rule]);
    }
  });

  it("control: with the guard chain flushed, the same direct connections are relayed (the bucket's 200); podwatch puts the guard back at its next start", async () => {
    await waitFor("the guard chain", async () => (await world.node.must("iptables-save", ["-t", "filter"])).includes("-A TPROXY-GUARD "), 10_000, 100);
    await world.node.must("iptables", ["-F", "TPROXY-GUARD"]);
    try {
      const before = await proxied();
      for (const [who, ns, address] of sources()) {
        const r = await direct(ns, address);
        expect(r.code, `${who}: ${r.stderr}`).to.equal(0);
        expect(r.status, who).to.equal("200");
      }
      expect(await proxied()).to.equal(before + 3);
    } finally {
      await world.podwatch!.stop("SIGINT"); // SIGINT: a plain stop, the chains stay as they are
      await world.startPodwatch();
      await waitFor("the guard back", async () => (await world.node.must("iptables-save", ["-t", "filter"])).includes("-A TPROXY-GUARD "), 10_000, 100);
    }
    for (const [who, ns, address] of sources()) expect((await direct(ns, address)).code, who).to.equal(7);
  });
});
