import { expect } from "chai";
import { BlockList } from "node:net";
import { AddressPolicy, parseCidr, type DenyReason } from "../src/policy/address-policy.ts";
import { ConfigError } from "../src/errors.ts";

const NODE = ["10.0.0.5", "fe80::1", "2001:db8:1::5", "127.0.0.1"];

function policy(over: ConstructorParameters<typeof AddressPolicy>[0] = {}): AddressPolicy {
  return new AddressPolicy({ blockedCidrs: ["10.96.0.0/12", "fd00:10:96::/112"], nodeAddresses: () => NODE, listenerPorts: [8080, 1080], ...over });
}

describe("policy: address policy", () => {
  describe("refuses what only the node can reach", () => {
    const cases: [string, number, DenyReason][] = [
      ["127.0.0.1", 80, "loopback"],
      ["127.255.255.254", 443, "loopback"],
      ["::1", 80, "loopback"],
      ["0:0:0:0:0:0:0:1", 80, "loopback"],
      ["::ffff:127.0.0.1", 80, "loopback"],
      ["::ffff:7f00:1", 80, "loopback"],
      ["0:0:0:0:0:ffff:7f00:2", 80, "loopback"],
      ["::FFFF:127.0.0.1", 80, "loopback"],
      ["64:ff9b::127.0.0.1", 80, "loopback"],
      ["0.0.0.0", 80, "unspecified"],
      ["0.1.2.3", 80, "unspecified"],
      ["::", 80, "unspecified"],
      ["::ffff:0.0.0.0", 80, "unspecified"],
      ["169.254.169.254", 80, "metadata"],
      ["::ffff:169.254.169.254", 80, "metadata"],
      ["::ffff:a9fe:a9fe", 80, "metadata"],
      ["64:ff9b::a9fe:a9fe", 80, "metadata"],
      ["fd00:ec2::254", 80, "metadata"],
      ["100.100.100.200", 80, "metadata"],
      ["169.254.1.1", 80, "link-local"],
      ["fe80::abcd", 80, "link-local"],
      ["fe80::abcd%eth0", 80, "link-local"],
      ["febf:ffff::1", 80, "link-local"],
      ["224.0.0.1", 80, "multicast"],
      ["239.255.255.250", 1900, "multicast"],
      ["ff02::1", 80, "multicast"],
      ["ff05::1:3", 547, "multicast"],
      ["255.255.255.255", 80, "broadcast"],
      ["::127.0.0.1", 80, "ipv4-compatible"],
      ["::7f00:1", 80, "ipv4-compatible"],
      ["::a00:5", 80, "ipv4-compatible"],
      ["10.0.0.5", 22, "node-address"],
      ["::ffff:10.0.0.5", 22, "node-address"],
      ["2001:db8:1::5", 22, "node-address"],
      ["2001:db8:1:0:0:0:0:5", 22, "node-address"],
      ["10.96.0.1", 443, "blocked-cidr"],
      ["10.111.255.255", 443, "blocked-cidr"],
      ["::ffff:10.96.0.10", 53, "blocked-cidr"],
      ["64:ff9b::10.96.0.10", 53, "blocked-cidr"],
      ["fd00:10:96::1", 443, "blocked-cidr"],
      ["10.0.0.5", 8080, "proxy-listener"],
      ["127.0.0.1", 1080, "proxy-listener"],
      ["::ffff:127.0.0.1", 1080, "proxy-listener"],
      ["0.0.0.0", 8080, "proxy-listener"],
      ["not-an-ip", 80, "not-an-address"],
      ["127.1", 80, "not-an-address"],
      ["", 80, "not-an-address"],
    ];
    for (const [address, port, reason] of cases) {
      it(`${address} port ${port} → ${reason}`, () => {
        const v = policy().classify(address, port);
        expect(v).to.include({ allowed: false, reason });
      });
    }
  });

  describe("allows ordinary upstreams", () => {
    for (const [address, port] of [
      ["93.184.215.14", 443],
      ["10.0.0.6", 80], // another host on the node's network: not node-local, not blocked
      ["10.95.255.255", 80],
      ["10.112.0.0", 80],
      ["::ffff:93.184.215.14", 443],
      ["2606:2800:21f:cb07:6820:80da:af6b:8b2c", 443],
      ["fd00:10:97::1", 443], // just outside the blocked IPv6 range
      ["fec0::1", 80], // just outside fe80::/10
      ["223.255.255.255", 80],
      ["240.0.0.1", 80],
      ["64:ff9b::93.184.215.14", 443],
      ["93.184.215.14", 8080], // a listener port on a remote address is someone else's service
    ] as const) {
      it(`${address} port ${port}`, () => {
        expect(policy().classify(address, port)).to.deep.equal({ allowed: true });
      });
    }
  });

  it("explains a refusal in words a user can act on", () => {
    expect(policy().classify("127.0.0.1", 80)).to.deep.equal({ allowed: false, reason: "loopback", message: "destination 127.0.0.1 is node-local (loopback)" });
    expect(policy().classify("::ffff:127.0.0.1", 80)).to.have.property("message", "destination ::ffff:127.0.0.1 (reaches 127.0.0.1) is node-local (loopback)");
    expect(policy().classify("10.96.0.1", 443)).to.have.property("message", "destination 10.96.0.1 is in the blocked range 10.96.0.0/12");
    expect(policy().classify("10.0.0.5", 8080)).to.have.property("message", "destination 10.0.0.5 is node-local and port 8080 is the proxy's own listener");
  });

  it("lets allowed CIDRs override every deny class and blocked CIDRs, but not a loop into the proxy", () => {
    const p = policy({ allowedCidrs: ["10.96.0.10/32", "169.254.169.254/32", "127.0.0.0/8", "10.0.0.0/24", "fe80::/10", "::ffff:224.0.0.0/100"] });
    for (const a of ["10.96.0.10", "::ffff:10.96.0.10", "169.254.169.254", "127.0.0.1", "10.0.0.5", "fe80::1", "224.0.0.1"]) {
      expect(p.classify(a, 80), a).to.deep.equal({ allowed: true });
    }
    expect(p.classify("10.96.0.11", 80)).to.include({ reason: "blocked-cidr" });
    expect(p.classify("169.254.1.1", 80)).to.include({ reason: "link-local" });
    expect(p.classify("127.0.0.1", 8080)).to.include({ reason: "proxy-listener" });
    expect(p.classify("10.0.0.5", 1080)).to.include({ reason: "proxy-listener" });
  });

  it("keeps CIDRs to their own family (::/0 does not cover IPv4)", () => {
    const blocked = new AddressPolicy({ blockedCidrs: ["::/0"], nodeAddresses: () => [] });
    expect(blocked.classify("93.184.215.14", 80)).to.deep.equal({ allowed: true });
    expect(blocked.classify("::ffff:93.184.215.14", 80)).to.deep.equal({ allowed: true });
    expect(blocked.classify("2001:db8::1", 80)).to.include({ reason: "blocked-cidr" });
    const allowed = new AddressPolicy({ allowedCidrs: ["::/0"], nodeAddresses: () => [] });
    expect(allowed.classify("::ffff:127.0.0.1", 80)).to.include({ reason: "loopback" });
    expect(allowed.classify("::1", 80)).to.deep.equal({ allowed: true });
    // (node's own BlockList would let ::/0 cover IPv4, which is why CIDRs are kept apart by family)
    const raw = new BlockList();
    raw.addSubnet("::", 0, "ipv6");
    expect(raw.check("93.184.215.14", "ipv4")).to.equal(true);
  });

  it("reads an IPv4-mapped IPv6 CIDR as the IPv4 range it maps", () => {
    const p = new AddressPolicy({ blockedCidrs: ["::ffff:203.0.113.0/120"], nodeAddresses: () => [] });
    expect(p.classify("203.0.113.9", 80)).to.include({ reason: "blocked-cidr" });
    expect(p.classify("203.0.114.9", 80)).to.deep.equal({ allowed: true });
    expect(parseCidr("::ffff:203.0.113.0/120")).to.deep.include({ family: 4, address: "203.0.113.0", prefix: 24 });
  });

  it("re-reads the node's addresses on demand", () => {
    let addresses = ["10.0.0.5"];
    const p = new AddressPolicy({ nodeAddresses: () => addresses });
    expect(p.classify("10.0.0.7", 80)).to.deep.equal({ allowed: true });
    addresses = ["10.0.0.7"];
    expect(p.classify("10.0.0.7", 80), "not before a refresh").to.deep.equal({ allowed: true });
    p.refreshNodeAddresses();
    expect(p.classify("10.0.0.7", 80)).to.include({ reason: "node-address" });
    expect(p.classify("10.0.0.5", 80)).to.deep.equal({ allowed: true });
  });

  it("knows this host's real interface addresses by default", () => {
    expect(new AddressPolicy().classify("127.0.0.1", 80)).to.include({ reason: "loopback" });
    expect(new AddressPolicy({ listenerPorts: [9] }).classify("127.0.0.1", 9)).to.include({ reason: "proxy-listener" });
  });

  describe("CIDR parsing", () => {
    for (const [text, family, address, prefix] of [
      ["10.96.0.0/12", 4, "10.96.0.0", 12],
      ["0.0.0.0/0", 4, "0.0.0.0", 0],
      ["192.0.2.1/32", 4, "192.0.2.1", 32],
      ["fd00:10:96::/112", 6, "fd00:10:96::", 112],
      ["FD00:10:96:0::/112", 6, "fd00:10:96::", 112],
      ["::/0", 6, "::", 0],
      ["2001:db8::1/128", 6, "2001:db8::1", 128],
    ] as const) {
      it(`accepts ${text}`, () => expect(parseCidr(text)).to.deep.include({ family, address, prefix }));
    }
    for (const [text, why] of [
      ["10.96.0.0", /no \/PREFIX/],
      ["10.96.0.0/", /prefix must be a number from 0 to 32/],
      ["10.96.0.0/33", /0 to 32/],
      ["10.96.0.0/012", /0 to 32/],
      ["10.96.0.0/+8", /0 to 32/],
      ["10.96.0.0/ 8", /0 to 32/],
      ["fd00::/129", /0 to 128/],
      ["10.96.0.1/12", /host bits are set; the network is 10\.96\.0\.0\/12/],
      ["10.97.0.0/12", /the network is 10\.96\.0\.0\/12/],
      ["fd00:10:96::1/112", /host bits are set; the network is fd00:10:96::\/112/],
      ["fd00:10:96:1::/48", /the network is fd00:10:96::\/48/],
      ["10.96.0/12", /"10\.96\.0" is not an IPv4 or IPv6 address/],
      ["010.96.0.0/12", /not an IPv4 or IPv6 address/],
      ["example.com/24", /not an IPv4 or IPv6 address/],
      [" 10.96.0.0/12", /not an IPv4 or IPv6 address/],
      ["", /no \/PREFIX/],
    ] as const) {
      it(`refuses "${text}"`, () => {
        expect(() => parseCidr(text, "--block-cidr"))
          .to.throw(ConfigError, why)
          .that.satisfies((e: ConfigError) => e.code === "ERR_CONFIG" && e.message.startsWith(`--block-cidr: "${text}" is not a valid CIDR`));
      });
    }
    it("names the flag when a policy is built with a bad CIDR", () => {
      expect(() => new AddressPolicy({ allowedCidrs: ["10.0.0.0/8", "10.0.0.1/8"] })).to.throw(ConfigError, /^--allow-upstream-cidr: "10\.0\.0\.1\/8"/);
      expect(() => new AddressPolicy({ blockedCidrs: ["x"] })).to.throw(ConfigError, /^--block-cidr: "x"/);
    });
  });
});
