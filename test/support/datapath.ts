// How a pod's namespace is wired to its node, the way clusters' CNIs do it. REDIRECT, podwatch's default
// nat target, rewrites to the primary address of the interface a packet came in on, so what matters is
// whether the node's side of the pod link has an address:
//
//   "veth"        a veth pair with an address on each side (the tests' own minimal wiring).
//   "bridge-cni"  the reference CNI plugins (Debian's containernetworking-plugins): `bridge` with
//                 `host-local` IPAM, run in the node's namespace as a container runtime runs them (env
//                 CNI_COMMAND/CNI_CONTAINERID/CNI_NETNS/CNI_IFNAME/CNI_PATH, the network's config on stdin,
//                 the result on stdout). The bridge holds the pods' gateway address, as kubenet's cbr0 does.
//   "calico"      as Calico sets up a workload: the node's `cali*` veth has no address, a /32 route to the
//                 pod's address points at it and it answers ARP by proxy; the pod has its address as a /32
//                 and its default route via 169.254.1.1 onlink (an address nobody has: proxy ARP answers).
//                 IPv6 likewise: a /128, the default via the link-local of the node's veth (MAC ee:ee:ee:ee:ee:ee).
//
// TutorialWorld takes the datapath as an option, else from env TPROXY_TEST_DATAPATH (default "veth"). The
// suites written for the tutorial's addresses (escape*, tutorial; escape-proxy pins "veth") run on
// "calico" too, which keeps them: `TPROXY_TEST_DATAPATH=calico npx mocha test/e2e/escape*.test.ts ...`.
// "bridge-cni" gives the pods host-local's addresses of one node range (a bridge holds one IPv4 gateway),
// so only test/e2e/datapath.test.ts, which reads the pods' addresses from the world, runs it.
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { type Netns, uniqueName } from "./netns.ts";

export type Datapath = "veth" | "bridge-cni" | "calico";

/** Where the reference plugins live (Debian's containernetworking-plugins). */
export const CNI_PATH = "/usr/lib/cni";
/** The node's pod range for the reference bridge (one range per node, as with kubenet). */
export const BRIDGE_SUBNET = "10.90.8.0/24";
export const BRIDGE_GATEWAY = "10.90.8.1";
export const BRIDGE_NAME = "cni0";
/** The address Calico's pods route through; no host has it, the node's veth answers ARP for it. */
export const CALICO_GATEWAY = "169.254.1.1";

/** A pod wired to the node: its IPv4 address, and the node's device that is its next hop (whose MAC frames go to). */
export interface PodLink {
  readonly ip: string;
  /** The pod's interface. */
  readonly podIf: string;
  /** The node's device the pod's gateway MAC belongs to: the bridge, or the host-side veth. */
  readonly nodeDevice: string;
  /** Undoes the wiring the way it was made (CNI DEL for the plugins). */
  readonly remove: () => Promise<void>;
}

/** The reference `bridge` + `host-local` network of one node; its IPAM state in its own folder. */
export class BridgeCni {
  readonly #node: Netns;
  readonly #dataDir: string;
  /** The result JSON of each ADD, by container ID, as the plugins printed it. */
  readonly results = new Map<string, CniResult>();

  constructor(node: Netns, stateDir: string) {
    this.#node = node;
    this.#dataDir = join(stateDir, "cni-host-local");
    mkdirSync(this.#dataDir, { recursive: true });
  }

  /** The network config a runtime would read from /etc/cni/net.d. */
  config(): string {
    return JSON.stringify({
      cniVersion: "1.0.0",
      name: "tproxy-test",
      type: "bridge",
      bridge: BRIDGE_NAME,
      isGateway: true,
      // No masquerade: the internet host sees pod addresses, which the tests' controls rely on.
      ipMasq: false,
      hairpinMode: true,
      ipam: {
        type: "host-local",
        ranges: [[{ subnet: BRIDGE_SUBNET, gateway: BRIDGE_GATEWAY }]],
        routes: [{ dst: "0.0.0.0/0" }],
        dataDir: this.#dataDir,
      },
    });
  }

  /** CNI ADD for the pod's namespace; returns its wiring, with the address host-local gave it. */
  async add(pod: Netns): Promise<PodLink> {
    const id = uniqueName("ctr");
    const out = await this.#invoke("ADD", id, pod);
    const result = JSON.parse(out) as CniResult;
    this.results.set(id, result);
    const ip = result.ips?.find((i) => !i.address.includes(":"))?.address.split("/")[0];
    if (!ip) throw new Error(`the bridge plugin's ADD result has no IPv4 address: ${out}`);
    return { ip, podIf: "eth0", nodeDevice: BRIDGE_NAME, remove: async () => void (await this.#invoke("DEL", id, pod)) };
  }

  async #invoke(command: "ADD" | "DEL", containerId: string, pod: Netns): Promise<string> {
    const plugin = join(CNI_PATH, "bridge");
    if (!existsSync(plugin)) throw new Error(`${plugin} is missing: apt-get install -y containernetworking-plugins`);
    const env = {
      PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: `/var/run/netns/${pod.name}`,
      CNI_IFNAME: "eth0",
      CNI_PATH,
    };
    const r = await this.#node.run(plugin, [], { input: this.config(), env });
    // A plugin reports failure as an error object on stdout, with a non-zero exit.
    if (r.code !== 0) throw new Error(`CNI ${command} of ${pod.name} (bridge) exited ${r.code}: ${r.stdout.trim()} ${r.stderr.trim()}`);
    return r.stdout;
  }
}

/** What the plugins print after ADD (CNI spec 1.0), the part the tests read. */
export interface CniResult {
  cniVersion: string;
  interfaces?: Array<{ name: string; mac?: string; sandbox?: string }>;
  ips?: Array<{ address: string; gateway?: string; interface?: number }>;
  routes?: Array<{ dst: string; gw?: string }>;
}

let calicoHost = 1;

/** The MAC Calico gives every host-side veth, so the pod's IPv6 gateway is the same link-local everywhere. */
export const CALICO_MAC = "ee:ee:ee:ee:ee:ee";
/** The IPv6 default gateway of Calico's pods: the link-local address of CALICO_MAC. */
export const CALICO_GATEWAY6 = "fe80::ecee:eeff:feee:eeee";

/**
 * Wires the pod as Calico does a workload endpoint, with `ip` (a /32 of the node's block) and optionally
 * `ip6` (a /128). Proxy ARP answers only for addresses the node has a route to: 169.254.1.1 needs the
 * node's default route (every real node has one; TutorialWorld adds it).
 */
export async function calicoLike(node: Netns, pod: Netns, ip: string, ip6?: string): Promise<PodLink> {
  const hostIf = `cali${(calicoHost++).toString(16).padStart(4, "0")}${(process.pid % 0xffff).toString(16)}`.slice(0, 15);
  await node.must("ip", ["link", "add", hostIf, "address", CALICO_MAC, "type", "veth", "peer", "name", "eth0", "netns", pod.name]);
  // The node's side: no address (but IPv6's link-local, usable at once); it answers ARP for any address it
  // routes (169.254.1.1 included).
  await node.must("sysctl", ["-qw", `net.ipv6.conf.${hostIf}.accept_dad=0`]);
  await node.must("sysctl", ["-qw", `net.ipv4.conf.${hostIf}.proxy_arp=1`]);
  await node.must("sysctl", ["-qw", `net.ipv4.neigh.${hostIf}.proxy_delay=0`]);
  await node.must("ip", ["link", "set", hostIf, "up"]);
  await node.must("ip", ["route", "add", `${ip}/32`, "dev", hostIf, "scope", "link"]);
  await pod.must("ip", ["addr", "add", `${ip}/32`, "dev", "eth0"]);
  await pod.must("ip", ["link", "set", "eth0", "up"]);
  await pod.must("ip", ["route", "add", "default", "via", CALICO_GATEWAY, "dev", "eth0", "onlink"]);
  if (ip6) {
    await node.must("ip", ["-6", "route", "add", `${ip6}/128`, "dev", hostIf]);
    await pod.must("ip", ["-6", "addr", "add", `${ip6}/128`, "dev", "eth0", "nodad"]);
    await pod.must("ip", ["-6", "route", "add", "default", "via", CALICO_GATEWAY6, "dev", "eth0"]);
  }
  return { ip, podIf: "eth0", nodeDevice: hostIf, remove: async () => void (await node.run("ip", ["link", "del", hostIf])) };
}

/** The datapath the tutorial world uses when a suite does not say: env TPROXY_TEST_DATAPATH, default "veth". */
/** The wiring a suite runs on, for its title: "veth wiring" by default, "calico wiring" under TPROXY_TEST_DATAPATH=calico. */
export function wiringTitle(env: NodeJS.ProcessEnv = process.env): string {
  return `${datapathFromEnv(env)} wiring`;
}

export function datapathFromEnv(env: NodeJS.ProcessEnv = process.env): Datapath {
  const v = env.TPROXY_TEST_DATAPATH ?? "veth";
  if (v !== "veth" && v !== "bridge-cni" && v !== "calico") throw new Error(`TPROXY_TEST_DATAPATH=${JSON.stringify(v)}: expected veth, bridge-cni or calico`);
  return v;
}
