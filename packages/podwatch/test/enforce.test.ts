import { expect } from "chai";
import type { Redirect } from "../src/desired.ts";
import { ENFORCE_CHAIN, parseFilterSave, planEnforce, renderEnforce, ruleId } from "../src/enforce.ts";
import { RulesParseError } from "../src/errors.ts";

describe("podwatch enforce chain (filter table)", () => {
  const redirects: Redirect[] = [
    { ip: "10.244.1.9", family: "ipv4", pod: "billing/api" },
    { ip: "fd00:10:244:1::9", family: "ipv6", pod: "billing/api" },
    { ip: "10.244.1.7", family: "ipv4", pod: "shop/web-1" },
  ];
  const opts = { proxyPort: 8080, allowDns: ["10.96.0.10", "fd00:96::a"], standardPort: 1080 };
  /** The rule text without its comment, as it was written. */
  const bodies = (rules: Array<{ line: string }>) => rules.map((r) => r.line.replace(/ -m comment --comment "[^"]*"/, ""));

  it("renders what may pass once, for any source (replies, redirected, allowed DNS, standard port), then one DROP per locked address", () => {
    const v4 = renderEnforce(redirects, "ipv4", opts);
    const chain = (rest: string) => `-A ${ENFORCE_CHAIN} ${rest}`;
    expect(bodies(v4)).to.deep.equal([
      chain("-m conntrack --ctdir REPLY -j RETURN"),
      chain("-p tcp -m tcp --dport 8080 -m conntrack --ctstate DNAT -j RETURN"),
      chain("-p udp -m conntrack --ctorigdst 10.96.0.10 --ctorigdstport 53 -j RETURN"),
      chain("-p tcp -m conntrack --ctorigdst 10.96.0.10 --ctorigdstport 53 -j RETURN"),
      chain("-p tcp -m tcp --dport 1080 -m addrtype --dst-type LOCAL -j RETURN"),
      chain("-s 10.244.1.9/32 -j DROP"),
      chain("-s 10.244.1.7/32 -j DROP"),
    ]);
    // Each rule's comment carries its ID, and the pod on its DROP.
    expect(v4[6]?.line).to.equal(`-A ${ENFORCE_CHAIN} -s 10.244.1.7/32 -m comment --comment "tproxy:${v4[6]?.id} shop/web-1" -j DROP`);
    expect(v4[0]?.line).to.match(/--comment "tproxy:[0-9a-f]{16} replies" -j RETURN$/);
  });

  it("IPv6: IPv6 resolvers only, and neighbour discovery passes only to link-local, link-scope multicast or the node", () => {
    const v6 = bodies(renderEnforce(redirects, "ipv6", opts));
    const chain = (rest: string) => `-A ${ENFORCE_CHAIN} ${rest}`;
    expect(v6).to.deep.equal([
      chain("-m conntrack --ctdir REPLY -j RETURN"),
      chain("-p tcp -m tcp --dport 8080 -m conntrack --ctstate DNAT -j RETURN"),
      chain("-p udp -m conntrack --ctorigdst fd00:96::a --ctorigdstport 53 -j RETURN"),
      chain("-p tcp -m conntrack --ctorigdst fd00:96::a --ctorigdstport 53 -j RETURN"),
      chain("-p tcp -m tcp --dport 1080 -m addrtype --dst-type LOCAL -j RETURN"),
      chain("-d fe80::/10 -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j RETURN"),
      chain("-d ff02::/16 -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j RETURN"),
      chain("-m addrtype --dst-type LOCAL -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j RETURN"),
      chain("-d fe80::/10 -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j RETURN"),
      chain("-d ff02::/16 -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j RETURN"),
      chain("-m addrtype --dst-type LOCAL -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j RETURN"),
      chain("-d fe80::/10 -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j RETURN"),
      chain("-d ff02::/16 -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j RETURN"),
      chain("-m addrtype --dst-type LOCAL -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j RETURN"),
      chain("-s fd00:10:244:1::9/128 -j DROP"),
    ]);
  });

  it("no resolvers configured: port 53 to any address; resolvers of the other family only: no DNS at all", () => {
    const any = bodies(renderEnforce(redirects, "ipv4", { proxyPort: 8080, allowDns: [] }));
    expect(any.filter((l) => l.includes("53"))).to.deep.equal([
      `-A ${ENFORCE_CHAIN} -p udp -m conntrack --ctorigdstport 53 -j RETURN`,
      `-A ${ENFORCE_CHAIN} -p tcp -m conntrack --ctorigdstport 53 -j RETURN`,
    ]);
    expect(any.some((l) => l.includes("--dport 1080"))).to.equal(false);
    const v6only = bodies(renderEnforce(redirects, "ipv4", { proxyPort: 8080, allowDns: ["fd00:96::a"] }));
    expect(v6only.some((l) => l.includes("53"))).to.equal(false);
  });

  it("wants nothing in a family without locked addresses", () => {
    expect(renderEnforce(redirects.filter((r) => r.family === "ipv4"), "ipv6", opts)).to.deep.equal([]);
  });

  it("IDs are deterministic and depend on the family and the whole rule", () => {
    expect(ruleId("ipv4", "-s 10.0.0.1/32 -j DROP")).to.equal(ruleId("ipv4", "-s 10.0.0.1/32 -j DROP"));
    expect(ruleId("ipv4", "-s 10.0.0.1/32 -j DROP")).to.not.equal(ruleId("ipv6", "-s 10.0.0.1/32 -j DROP"));
    expect(ruleId("ipv4", "-s 10.0.0.1/32 -j DROP")).to.not.equal(ruleId("ipv4", "-s 10.0.0.2/32 -j DROP"));
    const a = renderEnforce(redirects, "ipv4", opts).map((r) => r.id);
    expect(renderEnforce(redirects, "ipv4", opts).map((r) => r.id)).to.deep.equal(a);
    expect(new Set(a).size).to.equal(a.length);
    expect(renderEnforce(redirects, "ipv4", { ...opts, proxyPort: 3129 }).map((r) => r.id)).to.not.deep.equal(a);
  });

  const wanted = renderEnforce(redirects, "ipv6", opts);
  /** The kernel's listing of filter (kube-proxy's chain beside ours).  */
  const kernelText = (rules: string[], input = ["-A INPUT -j TPROXY-ENFORCE"], forward = ["-A FORWARD -j TPROXY-ENFORCE"], declared = true) =>
    [
      "# Generated by ip6tables-save v1.8.9 (nf_tables)",
      "*filter",
      ":INPUT ACCEPT [0:0]",
      ":FORWARD DROP [0:0]",
      ":OUTPUT ACCEPT [0:0]",
      ":KUBE-FORWARD - [0:0]",
      ...(declared ? [`:${ENFORCE_CHAIN} - [0:0]`] : []),
      ...input,
      ...forward,
      '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
      ...rules,
      "COMMIT",
      "",
    ].join("\n");
  /** How the kernel prints a rule back: match modules added. */
  const asKernel = (line: string) => line.replace(" -p udp -m conntrack", " -p udp -m udp -m conntrack");

  it("compares IDs, not text: the kernel's own spelling of the same rules is no change", () => {
    const k = parseFilterSave(kernelText(wanted.map((w) => asKernel(w.line))));
    expect(k.ids).to.deep.equal(wanted.map((w) => w.id));
    expect(planEnforce(k, wanted)).to.equal(undefined);
  });

  it("rewrites the chain in one transaction when a rule is missing, foreign or out of order", () => {
    const lines = wanted.map((w) => w.line);
    for (const kernel of [lines.slice(1), [...lines, `-A ${ENFORCE_CHAIN} -s fd00::66/128 -j ACCEPT`], [lines[1]!, lines[0]!, ...lines.slice(2)]]) {
      const plan = planEnforce(parseFilterSave(kernelText(kernel)), wanted);
      expect(plan?.input).to.equal(["*filter", `:${ENFORCE_CHAIN} - [0:0]`, ...lines, "COMMIT", ""].join("\n"));
    }
    const plan = planEnforce(parseFilterSave(kernelText([`-A ${ENFORCE_CHAIN} -s fd00::66/128 -j ACCEPT`, ...lines.slice(1)])), wanted);
    expect(plan).to.include({ added: 1, removed: 1 });
  });

  it("creates the chain and both jumps from scratch, first in INPUT and FORWARD", () => {
    const plan = planEnforce(parseFilterSave(kernelText([], [], [], false)), wanted);
    expect(plan?.input.split("\n").slice(0, 4)).to.deep.equal(["*filter", `:${ENFORCE_CHAIN} - [0:0]`, `-I INPUT 1 -j ${ENFORCE_CHAIN}`, `-I FORWARD 1 -j ${ENFORCE_CHAIN}`]);
    expect(plan?.jumpsRepaired).to.deep.equal(["INPUT", "FORWARD"]);
  });

  it("repairs a missing or duplicated jump, and deletes conditioned jumps to the chain", () => {
    const lines = wanted.map((w) => w.line);
    const plan = planEnforce(parseFilterSave(kernelText(lines, ["-A INPUT -j TPROXY-ENFORCE", "-A INPUT -s 10.0.0.0/8 -j TPROXY-ENFORCE"], [])), wanted);
    expect(plan?.input.split("\n").slice(0, 4)).to.deep.equal(["*filter", `:${ENFORCE_CHAIN} - [0:0]`, `-D INPUT -s 10.0.0.0/8 -j ${ENFORCE_CHAIN}`, `-I FORWARD 1 -j ${ENFORCE_CHAIN}`]);
    expect(plan?.jumpsRepaired).to.deep.equal(["INPUT", "FORWARD"]);
  });

  it("leaves a table with nothing of ours alone when nothing is wanted; empties our chain when pods are gone", () => {
    expect(planEnforce(parseFilterSave(kernelText([], [], [], false)), [])).to.equal(undefined);
    expect(planEnforce(parseFilterSave(""), [])).to.equal(undefined);
    const plan = planEnforce(parseFilterSave(kernelText(wanted.map((w) => w.line))), []);
    expect(plan?.input).to.equal(["*filter", `:${ENFORCE_CHAIN} - [0:0]`, "COMMIT", ""].join("\n"));
    expect(plan?.removed).to.equal(wanted.length);
  });

  it("refuses output that is not a filter table", () => {
    expect(() => parseFilterSave("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")).to.throw(RulesParseError);
    expect(() => parseFilterSave("*filter\nbogus line\nCOMMIT\n")).to.throw(RulesParseError);
  });
});
