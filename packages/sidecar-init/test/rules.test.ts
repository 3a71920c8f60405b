import { expect } from "chai";
import { parseConfig, parseOutputRules, renderChain, restoreInput, type Policy } from "../src/index.ts";

function policy(over: Partial<Policy> = {}): Policy {
  const c = parseConfig({}, {});
  return { allowDns: c.allowDns, blockCidrs: c.blockCidrs, nodeAddresses: [], standardPort: c.standardPort, ports: c.ports, ipv6Intercepted: false, ...over };
}

describe("sidecar-init rules", () => {
  it("renders the tutorial's policy for IPv4 in order, as iptables-save prints it", () => {
    const c = parseConfig({ allowDns: ["10.96.0.10"], blockCidr: ["10.96.0.0/12"] }, {});
    const rules = renderChain(policy({ allowDns: c.allowDns, blockCidrs: c.blockCidrs, nodeAddresses: ["10.128.0.2"] }), "ipv4");
    expect(rules).to.deep.equal([
      "-A TPROXY-EGRESS -o lo -j ACCEPT",
      "-A TPROXY-EGRESS -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
      "-A TPROXY-EGRESS -d 10.96.0.10/32 -p udp -m udp --dport 53 -j ACCEPT",
      "-A TPROXY-EGRESS -d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j ACCEPT",
      "-A TPROXY-EGRESS -d 10.128.0.2/32 -p tcp -m tcp --dport 1080 -j ACCEPT",
      "-A TPROXY-EGRESS -d 10.96.0.0/12 -p tcp -j REJECT --reject-with tcp-reset",
      "-A TPROXY-EGRESS -d 10.96.0.0/12 -j REJECT --reject-with icmp-port-unreachable",
      "-A TPROXY-EGRESS -p tcp -m tcp --dport 80 -j ACCEPT",
      "-A TPROXY-EGRESS -p tcp -m tcp --dport 443 -j ACCEPT",
      "-A TPROXY-EGRESS -p tcp -j REJECT --reject-with tcp-reset",
      "-A TPROXY-EGRESS -j REJECT --reject-with icmp-port-unreachable",
    ]);
  });

  it("refuses IPv6 beyond loopback, neighbour discovery and DNS unless the node intercepts IPv6", () => {
    const rules = renderChain(policy(), "ipv6");
    expect(rules.filter((r) => r.includes("ACCEPT"))).to.deep.equal([
      "-A TPROXY-EGRESS -o lo -j ACCEPT",
      "-A TPROXY-EGRESS -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
      "-A TPROXY-EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j ACCEPT",
      "-A TPROXY-EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT",
      "-A TPROXY-EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j ACCEPT",
      "-A TPROXY-EGRESS -p udp -m udp --dport 53 -j ACCEPT",
      "-A TPROXY-EGRESS -p tcp -m tcp --dport 53 -j ACCEPT",
    ]);
    expect(rules.at(-1)).to.equal("-A TPROXY-EGRESS -j REJECT --reject-with icmp6-port-unreachable");
    // With the node intercepting IPv6: the same chain plus exactly the redirected ports, before the final refusals.
    expect(renderChain(policy({ ipv6Intercepted: true }), "ipv6")).to.deep.equal([
      ...rules.slice(0, -2),
      "-A TPROXY-EGRESS -p tcp -m tcp --dport 80 -j ACCEPT",
      "-A TPROXY-EGRESS -p tcp -m tcp --dport 443 -j ACCEPT",
      ...rules.slice(-2),
    ]);
    expect(rules.slice(-2)).to.deep.equal(["-A TPROXY-EGRESS -p tcp -j REJECT --reject-with tcp-reset", "-A TPROXY-EGRESS -j REJECT --reject-with icmp6-port-unreachable"]);
  });

  it("puts each resolver, node address and CIDR only in its own family", () => {
    const c = parseConfig({ allowDns: ["10.96.0.10"], blockCidr: ["fd00:10:96::/112"] }, {});
    const p = policy({ allowDns: c.allowDns, blockCidrs: c.blockCidrs, nodeAddresses: ["fd00::2"] });
    const v6 = renderChain(p, "ipv6").join("\n");
    const v4 = renderChain(p, "ipv4").join("\n");
    expect(v6).not.to.include("--dport 53"); // the only resolver is IPv4: no IPv6 DNS at all
    expect(v6).to.include("-d fd00::2/128 -p tcp -m tcp --dport 1080 -j ACCEPT");
    expect(v6).to.include("-d fd00:10:96::/112 -p tcp -j REJECT --reject-with tcp-reset");
    expect(v4).not.to.match(/fd00/);
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
