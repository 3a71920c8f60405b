// Edges of the policy modules found by `npm run mutation`: a remote address on a port the proxy also
// listens on, the whole IPv4-mapped block as a CIDR, and a last label that merely contains "0x".
import { expect } from "chai";
import { AddressPolicy, parseCidr } from "../src/policy/address-policy.ts";
import { canonicalHost } from "../src/policy/host-name.ts";

describe("policy edges", () => {
  it("refuses a node-local address on a proxy listener port, but not a remote address on the same port number", () => {
    const policy = new AddressPolicy({ listenerPorts: [8080, 1080], nodeAddresses: () => ["10.0.0.4"], allowedCidrs: ["10.0.0.0/24"] });
    expect(policy.classify("203.0.113.5", 8080)).to.deep.equal({ allowed: true });
    expect(policy.classify("10.0.0.4", 8080)).to.include({ allowed: false, reason: "proxy-listener" });
    // An explicitly allowed range opens the node's address, but never on the proxy's own ports.
    expect(policy.classify("10.0.0.4", 443)).to.deep.equal({ allowed: true });
    expect(policy.classify("127.0.0.1", 1080)).to.include({ allowed: false, reason: "proxy-listener" });
  });

  it("reads the whole IPv4-mapped block (::ffff:0:0/96) as IPv4 0.0.0.0/0", () => {
    expect(parseCidr("::ffff:0.0.0.0/96")).to.include({ family: 4, address: "0.0.0.0", prefix: 0 });
    expect(parseCidr("::ffff:10.0.0.0/104")).to.include({ family: 4, address: "10.0.0.0", prefix: 8 });
  });

  it("takes a last label that only contains 0x as a name (only a whole 0x-hex label reads as a number)", () => {
    expect(canonicalHost("svc.a0x1f", "host-header")).to.deep.equal({ kind: "name", host: "svc.a0x1f" });
    expect(() => canonicalHost("svc.0x1f", "host-header")).to.throw(/0x|number|IPv4/i);
  });
});
