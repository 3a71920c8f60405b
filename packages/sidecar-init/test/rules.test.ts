import { expect } from "chai";
import { parseConfig, parseOutputRules, renderChain, restoreInput, type Config, type Policy } from "../src/index.ts";

const POD = { ip: "10.128.1.5", family: "ipv4" } as const;
const POD6 = { ip: "fd00:128:1::5", family: "ipv6" } as const;
const POD6_LINK = { ip: "fe80::5", family: "ipv6" } as const;

function resolversOf(c: Config): Policy["allowDns"] {
  return c.allowDns.kind === "list" ? c.allowDns.resolvers : c.allowDns.kind === "any" ? "any" : [];
}

function policy(over: Partial<Policy> = {}): Policy {
  const c = parseConfig({}, {});
  return { allowDns: [], blockCidrs: c.blockCidrs, nodeAddresses: [], standardPort: c.standardPort, ports: c.ports, ipv6Intercepted: false, ownAddresses: [POD, POD6, POD6_LINK], ...over };
}

describe("sidecar-init rules", () => {
  it("renders the tutorial's policy for IPv4 in order, as iptables-save prints it", () => {
    const c = parseConfig({ allowDns: ["10.96.0.10"], blockCidr: ["10.96.0.0/12"] }, {});
    const rules = renderChain(policy({ allowDns: resolversOf(c), blockCidrs: c.blockCidrs, nodeAddresses: ["10.128.0.2"] }), "ipv4");
    expect(rules).to.deep.equal([
      "-A TPROXY-EGRESS -o lo -j ACCEPT",
      "-A TPROXY-EGRESS -m conntrack --ctstate INVALID -j DROP",
      "-A TPROXY-EGRESS -s 10.128.1.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
      "-A TPROXY-EGRESS -s 10.128.1.5/32 -d 10.96.0.10/32 -p udp -m udp --dport 53 -j ACCEPT",
      "-A TPROXY-EGRESS -s 10.128.1.5/32 -d 10.96.0.10/32 -p tcp -m tcp --dport 53 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT",
      "-A TPROXY-EGRESS -s 10.128.1.5/32 -d 10.128.0.2/32 -p tcp -m tcp --dport 1080 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT",
      "-A TPROXY-EGRESS -s 10.128.1.5/32 -d 10.96.0.0/12 -p tcp -j REJECT --reject-with tcp-reset",
      "-A TPROXY-EGRESS -s 10.128.1.5/32 -d 10.96.0.0/12 -j REJECT --reject-with icmp-port-unreachable",
      "-A TPROXY-EGRESS -s 10.128.1.5/32 -p tcp -m tcp --dport 80 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT",
      "-A TPROXY-EGRESS -s 10.128.1.5/32 -p tcp -m tcp --dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT",
      "-A TPROXY-EGRESS -s 10.128.1.5/32 -p tcp -j REJECT --reject-with tcp-reset",
      "-A TPROXY-EGRESS -s 10.128.1.5/32 -j REJECT --reject-with icmp-port-unreachable",
      "-A TPROXY-EGRESS -j DROP",
    ]);
  });

  it("repeats the rules for each own address of the family and drops every other source", () => {
    const rules = renderChain(policy({ allowDns: [{ ip: "fd00:10:96::a", family: "ipv6" }], ownAddresses: [POD6, POD6_LINK, POD] }), "ipv6");
    const body = (src: string) => [
      `-A TPROXY-EGRESS -s ${src}/128 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
      `-A TPROXY-EGRESS -s ${src}/128 -d fd00:10:96::a/128 -p udp -m udp --dport 53 -j ACCEPT`,
      `-A TPROXY-EGRESS -s ${src}/128 -d fd00:10:96::a/128 -p tcp -m tcp --dport 53 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT`,
      `-A TPROXY-EGRESS -s ${src}/128 -p tcp -j REJECT --reject-with tcp-reset`,
      `-A TPROXY-EGRESS -s ${src}/128 -j REJECT --reject-with icmp6-port-unreachable`,
    ];
    expect(rules).to.deep.equal([
      "-A TPROXY-EGRESS -o lo -j ACCEPT",
      "-A TPROXY-EGRESS -m conntrack --ctstate INVALID -j DROP",
      "-A TPROXY-EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j ACCEPT",
      "-A TPROXY-EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT",
      "-A TPROXY-EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j ACCEPT",
      ...body("fd00:128:1::5"),
      ...body("fe80::5"),
      "-A TPROXY-EGRESS -j DROP",
    ]);
    // No own address of a family: nothing of it leaves but loopback (and neighbour discovery).
    expect(renderChain(policy({ ownAddresses: [POD6] }), "ipv4")).to.deep.equal(["-A TPROXY-EGRESS -o lo -j ACCEPT", "-A TPROXY-EGRESS -m conntrack --ctstate INVALID -j DROP", "-A TPROXY-EGRESS -j DROP"]);
  });

  it("allows DNS to every address only for an explicit any, and names the interface of a scoped resolver", () => {
    const any = renderChain(policy({ allowDns: "any", ownAddresses: [POD] }), "ipv4");
    expect(any.filter((r) => r.includes("--dport 53"))).to.deep.equal([
      "-A TPROXY-EGRESS -s 10.128.1.5/32 -p udp -m udp --dport 53 -j ACCEPT",
      "-A TPROXY-EGRESS -s 10.128.1.5/32 -p tcp -m tcp --dport 53 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT",
    ]);
    expect(renderChain(policy({ allowDns: [], ownAddresses: [POD] }), "ipv4").join("\n")).not.to.include("--dport 53");
    const scoped = renderChain(policy({ allowDns: [{ ip: "fe80::1", family: "ipv6", iface: "eth0" }], ownAddresses: [POD6_LINK] }), "ipv6");
    expect(scoped.filter((r) => r.includes("--dport 53"))).to.deep.equal([
      "-A TPROXY-EGRESS -s fe80::5/128 -d fe80::1/128 -o eth0 -p udp -m udp --dport 53 -j ACCEPT",
      "-A TPROXY-EGRESS -s fe80::5/128 -d fe80::1/128 -o eth0 -p tcp -m tcp --dport 53 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT",
    ]);
  });

  it("refuses IPv6 beyond loopback, neighbour discovery and DNS unless the node intercepts IPv6", () => {
    const rules = renderChain(policy({ allowDns: "any", ownAddresses: [POD6] }), "ipv6");
    const own = "-A TPROXY-EGRESS -s fd00:128:1::5/128";
    expect(rules.filter((r) => r.includes("ACCEPT"))).to.deep.equal([
      "-A TPROXY-EGRESS -o lo -j ACCEPT",
      "-A TPROXY-EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j ACCEPT",
      "-A TPROXY-EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT",
      "-A TPROXY-EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j ACCEPT",
      `${own} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
      `${own} -p udp -m udp --dport 53 -j ACCEPT`,
      `${own} -p tcp -m tcp --dport 53 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT`,
    ]);
    expect(rules.slice(-3)).to.deep.equal([`${own} -p tcp -j REJECT --reject-with tcp-reset`, `${own} -j REJECT --reject-with icmp6-port-unreachable`, "-A TPROXY-EGRESS -j DROP"]);
    // With the node intercepting IPv6: the same chain plus exactly the redirected ports, before the final refusals.
    expect(renderChain(policy({ allowDns: "any", ownAddresses: [POD6], ipv6Intercepted: true }), "ipv6")).to.deep.equal([
      ...rules.slice(0, -3),
      `${own} -p tcp -m tcp --dport 80 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT`,
      `${own} -p tcp -m tcp --dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT`,
      ...rules.slice(-3),
    ]);
  });

  it("puts each resolver, node address and CIDR only in its own family", () => {
    const c = parseConfig({ allowDns: ["10.96.0.10"], blockCidr: ["fd00:10:96::/112"] }, {});
    const p = policy({ allowDns: resolversOf(c), blockCidrs: c.blockCidrs, nodeAddresses: ["fd00::2"] });
    const v6 = renderChain(p, "ipv6").join("\n");
    const v4 = renderChain(p, "ipv4").join("\n");
    expect(v6).not.to.include("--dport 53"); // the only resolver is IPv4: no IPv6 DNS at all
    expect(v6).to.include("-s fd00:128:1::5/128 -d fd00::2/128 -p tcp -m tcp --dport 1080 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT");
    expect(v6).to.include("-s fd00:128:1::5/128 -d fd00:10:96::/112 -p tcp -j REJECT --reject-with tcp-reset");
    expect(v4).not.to.match(/fd00|fe80/);
    expect(v6).not.to.include("10.128.1.5");
  });

  it("inserts the jump first when OUTPUT has none and keeps other tools' rules", () => {
    const save = "# Generated\n*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -d 10.1.2.3/32 -j ACCEPT\nCOMMIT\n";
    expect(restoreInput(["-A TPROXY-EGRESS -j REJECT"], parseOutputRules(save))).to.equal(
      "*filter\n:TPROXY-EGRESS - [0:0]\n-I OUTPUT 1 -j TPROXY-EGRESS\n-A TPROXY-EGRESS -j REJECT\nCOMMIT\n",
    );
  });

  it("leaves a single leading jump alone, so a second run changes only the chain it owns", () => {
    const save = "*filter\n:OUTPUT ACCEPT [0:0]\n:TPROXY-EGRESS - [0:0]\n-A OUTPUT -j TPROXY-EGRESS\n-A OUTPUT -d 10.1.2.3/32 -j ACCEPT\n-A TPROXY-EGRESS -j REJECT\nCOMMIT\n";
    expect(restoreInput(["-A TPROXY-EGRESS -j REJECT"], parseOutputRules(save))).to.equal("*filter\n:TPROXY-EGRESS - [0:0]\n-A TPROXY-EGRESS -j REJECT\nCOMMIT\n");
  });

  it("repairs duplicated or displaced jumps in the same transaction", () => {
    const save = [
      "*nat", "-A OUTPUT -j TPROXY-EGRESS", "COMMIT", // another table: not ours to touch
      "*filter", "-A OUTPUT -d 10.1.2.3/32 -j ACCEPT", "-A OUTPUT -j TPROXY-EGRESS", '-A OUTPUT -m comment --comment "old run" -j TPROXY-EGRESS', "COMMIT",
    ].join("\n");
    expect(restoreInput([], parseOutputRules(save)).split("\n")).to.deep.equal([
      "*filter", ":TPROXY-EGRESS - [0:0]", "-D OUTPUT -j TPROXY-EGRESS", '-D OUTPUT -m comment --comment "old run" -j TPROXY-EGRESS', "-I OUTPUT 1 -j TPROXY-EGRESS", "COMMIT", "",
    ]);
  });
});
