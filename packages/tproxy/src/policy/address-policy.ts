// Decides whether the proxy may open a connection to an address and port.
//
// The proxy runs in the node's network namespace, so a pod whose requests it forwards must not be able to use it
// to reach what only the node can reach. Judged in this order (the first rule that applies decides):
//
//  1. Not an IP address at all: denied ("not-an-address").
//  2. The address a connection would really reach is worked out first: an IPv4-mapped IPv6 address
//     (::ffff:a.b.c.d, which the kernel sends over IPv4) and a NAT64 well-known-prefix address (64:ff9b::a.b.c.d,
//     RFC 6052, which a translator on the path sends to a.b.c.d) are judged as the IPv4 address they embed. A zone
//     index (fe80::1%eth0) is dropped before judging.
//  3. A node-local address (loopback, unspecified, an address of this node) on one of the proxy's own listener
//     ports: denied ("proxy-listener"), even inside an allowed CIDR: it would only loop back into the proxy.
//  4. Inside an explicitly allowed CIDR (--allow-upstream-cidr): allowed, whatever the classes below say.
//  5. Denied classes: unspecified (0.0.0.0/8, ::), loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16 with the
//     cloud metadata service 169.254.169.254, fe80::/10), cloud metadata outside link-local (fd00:ec2::254 on AWS,
//     100.100.100.200 on Alibaba Cloud), multicast (224.0.0.0/4, ff00::/8), broadcast (255.255.255.255),
//     IPv4-compatible IPv6 (::a.b.c.d, deprecated by RFC 4291 and never a legitimate upstream), an address of this
//     node (from the provider, re-read by refreshNodeAddresses()), and the blocked CIDRs (e.g. the Service range).
//  6. Anything else: allowed.
//
// CIDRs match addresses of their own family only: an IPv6 CIDR such as ::/0 does not cover IPv4 addresses (node's
// BlockList would say it does). An IPv6 CIDR inside ::ffff:0:0/96 is read as the IPv4 CIDR it maps. A NAT64
// address is checked against the CIDRs both as itself and as its embedded IPv4 address.
import { BlockList, isIP } from "node:net";
import { networkInterfaces } from "node:os";
import { ConfigError } from "../errors.ts";

export type DenyReason =
  | "not-an-address"
  | "proxy-listener"
  | "unspecified"
  | "loopback"
  | "link-local"
  | "metadata"
  | "multicast"
  | "broadcast"
  | "ipv4-compatible"
  | "node-address"
  | "blocked-cidr";

export type Verdict = { allowed: true } | { allowed: false; reason: DenyReason; message: string };

export interface Cidr {
  family: 4 | 6;
  /** Network address, canonical text. */
  address: string;
  prefix: number;
  /** As written by the user, for messages. */
  text: string;
}

export interface AddressPolicyOptions {
  /** Ranges a pod must not reach (e.g. the cluster's Service range). Default: none. */
  blockedCidrs?: readonly string[];
  /** Ranges that may be reached even if a deny class or a blocked CIDR covers them (--allow-upstream-cidr). Default: none. */
  allowedCidrs?: readonly string[];
  /** Returns the node's own addresses; called at construction and by refreshNodeAddresses(). Default: nodeInterfaceAddresses. */
  nodeAddresses?: () => Iterable<string>;
  /** Ports the proxy itself listens on. Default: none. */
  listenerPorts?: readonly number[];
  /** Flag names used in CIDR error messages. Default: "--block-cidr" and "--allow-upstream-cidr". */
  blockedFlag?: string;
  allowedFlag?: string;
}

/** Every address of every interface of this host (os.networkInterfaces()). */
export function nodeInterfaceAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) out.push(i.address);
  return out;
}

/** Eight 16-bit words of a valid IPv6 address (as accepted by net.isIP, zone already removed). */
function ipv6Words(text: string): number[] {
  let s = text;
  const tail: number[] = [];
  const lastColon = s.lastIndexOf(":");
  if (s.indexOf(".", lastColon) >= 0) {
    const [a, b, c, d] = s.slice(lastColon + 1).split(".").map(Number) as [number, number, number, number];
    tail.push((a << 8) | b, (c << 8) | d);
    s = s.slice(0, lastColon + 1) + "0"; // placeholder word, removed below
  }
  const parse = (part: string): number[] => (part === "" ? [] : part.split(":").map((h) => parseInt(h, 16)));
  let words: number[];
  const gap = s.indexOf("::");
  if (gap >= 0) {
    const head = parse(s.slice(0, gap));
    const rest = parse(s.slice(gap + 2));
    const restLen = rest.length + (tail.length > 0 ? 1 : 0);
    words = [...head, ...new Array<number>(8 - head.length - restLen).fill(0), ...rest];
  } else {
    words = parse(s);
  }
  if (tail.length > 0) words = [...words.slice(0, words.length - 1), ...tail];
  return words;
}

function v4FromWords(hi: number, lo: number): string {
  return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
}

function v4ToInt(text: string): number {
  return text.split(".").reduce((n, o) => n * 256 + Number(o), 0);
}

function v4FromInt(n: number): string {
  return [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff].join(".");
}

function wordsToV6(words: readonly number[]): string {
  return new URL(`http://[${words.map((w) => w.toString(16)).join(":")}]/`).hostname.slice(1, -1);
}

const V4_MAPPED_PREFIX = [0, 0, 0, 0, 0, 0xffff];
const NAT64_PREFIX = [0x64, 0xff9b, 0, 0, 0, 0];

function startsWith(words: readonly number[], prefix: readonly number[]): boolean {
  return prefix.every((w, i) => words[i] === w);
}

/**
 * Parses "ADDRESS/PREFIX". The prefix is required (write /32 or /128 for one address) and host bits must be zero,
 * so a typo cannot silently widen or narrow a range. Throws ConfigError naming the flag and the value.
 */
export function parseCidr(text: string, flag = "CIDR"): Cidr {
  const fail = (why: string): never => {
    throw new ConfigError(`${flag}: "${text}" is not a valid CIDR (${why}); expected ADDRESS/PREFIX such as 10.96.0.0/12 or fd00::/8`);
  };
  const slash = text.indexOf("/");
  if (slash < 0) return fail("no /PREFIX");
  const address = text.slice(0, slash);
  const prefixText = text.slice(slash + 1);
  const family = isIP(address);
  if (family === 0) return fail(`"${address}" is not an IPv4 or IPv6 address`);
  const max = family === 4 ? 32 : 128;
  if (!/^(?:0|[1-9]\d{0,2})$/.test(prefixText) || Number(prefixText) > max) return fail(`prefix must be a number from 0 to ${max}`);
  const prefix = Number(prefixText);
  if (family === 4) {
    const n = v4ToInt(address);
    const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    const network = (n & mask) >>> 0;
    if (network !== n) return fail(`host bits are set; the network is ${v4FromInt(network)}/${prefix}`);
    return { family: 4, address, prefix, text };
  }
  const words = ipv6Words(address);
  const network = words.map((w, i) => {
    const bits = Math.min(16, Math.max(0, prefix - i * 16));
    return bits === 0 ? 0 : w & ((0xffff << (16 - bits)) & 0xffff);
  });
  if (network.some((w, i) => w !== words[i])) return fail(`host bits are set; the network is ${wordsToV6(network)}/${prefix}`);
  if (prefix >= 96 && startsWith(words, V4_MAPPED_PREFIX)) {
    return { family: 4, address: v4FromWords(words[6] as number, words[7] as number), prefix: prefix - 96, text };
  }
  return { family: 6, address: wordsToV6(words), prefix, text };
}

class CidrSet {
  readonly #entries: { cidr: Cidr; list: BlockList }[] = [];
  constructor(texts: readonly string[], flag: string) {
    for (const text of texts) {
      const cidr = parseCidr(text, flag);
      const list = new BlockList();
      list.addSubnet(cidr.address, cidr.prefix, cidr.family === 4 ? "ipv4" : "ipv6");
      this.#entries.push({ cidr, list });
    }
  }
  /** The first CIDR of the address's own family that contains it. */
  match(address: string, family: 4 | 6): Cidr | undefined {
    const type = family === 4 ? "ipv4" : "ipv6";
    return this.#entries.find((e) => e.cidr.family === family && e.list.check(address, type))?.cidr;
  }
}

function subnets(family: "ipv4" | "ipv6", ...cidrs: [string, number][]): BlockList {
  const list = new BlockList();
  for (const [a, p] of cidrs) list.addSubnet(a, p, family);
  return list;
}

// Each class has its own list per family; an address is only ever checked against its own family's list.
const CLASSES: { reason: Exclude<DenyReason, "not-an-address" | "proxy-listener" | "node-address" | "blocked-cidr">; v4: BlockList; v6: BlockList; what: string }[] = [
  { reason: "unspecified", v4: subnets("ipv4", ["0.0.0.0", 8]), v6: subnets("ipv6", ["::", 128]), what: "is node-local (unspecified address)" },
  { reason: "loopback", v4: subnets("ipv4", ["127.0.0.0", 8]), v6: subnets("ipv6", ["::1", 128]), what: "is node-local (loopback)" },
  { reason: "metadata", v4: subnets("ipv4", ["169.254.169.254", 32], ["100.100.100.200", 32]), v6: subnets("ipv6", ["fd00:ec2::254", 128]), what: "is a cloud metadata service" },
  { reason: "link-local", v4: subnets("ipv4", ["169.254.0.0", 16]), v6: subnets("ipv6", ["fe80::", 10]), what: "is link-local" },
  { reason: "multicast", v4: subnets("ipv4", ["224.0.0.0", 4]), v6: subnets("ipv6", ["ff00::", 8]), what: "is multicast" },
  { reason: "broadcast", v4: subnets("ipv4", ["255.255.255.255", 32]), v6: new BlockList(), what: "is broadcast" },
  { reason: "ipv4-compatible", v4: new BlockList(), v6: subnets("ipv6", ["::", 96]), what: "is an IPv4-compatible IPv6 address (deprecated, never an upstream)" },
];

interface Judged {
  /** What the connection reaches: the address itself, or the IPv4 address a mapped/NAT64 address embeds. */
  effective: string;
  family: 4 | 6;
  /** The address as written, zone index removed. */
  written: string;
  /** For NAT64 only: the IPv6 address as written (also matched against the CIDRs). */
  also: string | undefined;
}

function judge(input: string): Judged | undefined {
  const address = input.includes("%") ? input.slice(0, input.indexOf("%")) : input;
  const family = isIP(address);
  if (family === 4) return { effective: address, family: 4, also: undefined, written: address };
  if (family !== 6) return undefined;
  const words = ipv6Words(address);
  if (startsWith(words, V4_MAPPED_PREFIX)) return { effective: v4FromWords(words[6] as number, words[7] as number), family: 4, also: undefined, written: address };
  if (startsWith(words, NAT64_PREFIX)) return { effective: v4FromWords(words[6] as number, words[7] as number), family: 4, also: address, written: address };
  return { effective: address, family: 6, also: undefined, written: address };
}

export class AddressPolicy {
  readonly #blocked: CidrSet;
  readonly #allowed: CidrSet;
  readonly #listenerPorts: ReadonlySet<number>;
  readonly #nodeAddressProvider: () => Iterable<string>;
  #node: { v4: BlockList; v6: BlockList } = { v4: new BlockList(), v6: new BlockList() };

  /** Throws ConfigError if a CIDR is malformed. */
  constructor(opts: AddressPolicyOptions = {}) {
    this.#blocked = new CidrSet(opts.blockedCidrs ?? [], opts.blockedFlag ?? "--block-cidr");
    this.#allowed = new CidrSet(opts.allowedCidrs ?? [], opts.allowedFlag ?? "--allow-upstream-cidr");
    this.#listenerPorts = new Set(opts.listenerPorts ?? []);
    this.#nodeAddressProvider = opts.nodeAddresses ?? nodeInterfaceAddresses;
    this.refreshNodeAddresses();
  }

  /** Re-reads the node's addresses from the provider (call when interfaces may have changed). */
  refreshNodeAddresses(): void {
    const node = { v4: new BlockList(), v6: new BlockList() };
    for (const a of this.#nodeAddressProvider()) {
      const j = judge(a);
      if (j === undefined || j.also !== undefined) continue;
      if (j.family === 4) node.v4.addAddress(j.effective, "ipv4");
      else node.v6.addAddress(j.effective, "ipv6");
    }
    this.#node = node;
  }

  classify(address: string, port: number): Verdict {
    const j = judge(address);
    if (j === undefined) return { allowed: false, reason: "not-an-address", message: `destination ${address} is not an IP address` };
    const via = j.effective !== j.written ? ` (reaches ${j.effective})` : "";
    const deny = (reason: DenyReason, what: string): Verdict => ({ allowed: false, reason, message: `destination ${address}${via} ${what}` });
    const type = j.family === 4 ? "ipv4" : "ipv6";
    const inClass = (c: (typeof CLASSES)[number]) => (j.family === 4 ? c.v4 : c.v6).check(j.effective, type);
    const isNode = (j.family === 4 ? this.#node.v4 : this.#node.v6).check(j.effective, type);
    const nodeLocal = isNode || CLASSES.some((c) => (c.reason === "loopback" || c.reason === "unspecified") && inClass(c));
    if (this.#listenerPorts.has(port) && nodeLocal) return deny("proxy-listener", `is node-local and port ${port} is the proxy's own listener`);
    const allowed = this.#allowed.match(j.effective, j.family) ?? (j.also !== undefined ? this.#allowed.match(j.also, 6) : undefined);
    if (allowed !== undefined) return { allowed: true };
    const cls = CLASSES.find(inClass);
    if (cls !== undefined) return deny(cls.reason, cls.what);
    if (isNode) return deny("node-address", "is node-local (an address of this node)");
    const blocked = this.#blocked.match(j.effective, j.family) ?? (j.also !== undefined ? this.#blocked.match(j.also, 6) : undefined);
    if (blocked !== undefined) return deny("blocked-cidr", `is in the blocked range ${blocked.text}`);
    return { allowed: true };
  }
}
