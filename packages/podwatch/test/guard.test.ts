import { expect } from "chai";
import { ENFORCE_CHAIN, ENFORCE_HOOKS } from "../src/enforce.ts";
import { GUARD_CHAIN, GUARD_SPEC, parseGuardSave, planGuard, renderGuard } from "../src/guard.ts";
import { parseSave, planRemoval } from "../src/owned-chain.ts";

describe("podwatch guard chain and chain removal (filter table)", () => {
  it("renders one rule resetting what was not redirected to the proxy's port, with an ID per family and port", () => {
    const [v4] = renderGuard("ipv4", 15170);
    expect(v4?.line).to.equal(
      `-A ${GUARD_CHAIN} -p tcp -m tcp --dport 15170 -m conntrack ! --ctstate DNAT -m comment --comment "tproxy:${v4?.id} only redirected connections reach the proxy" -j REJECT --reject-with tcp-reset`,
    );
    expect(renderGuard("ipv4", 15170)[0]?.id).to.equal(v4?.id);
    expect(renderGuard("ipv6", 15170)[0]?.id).to.not.equal(v4?.id);
    expect(renderGuard("ipv4", 3129)[0]?.id).to.not.equal(v4?.id);
  });

  it("plans nothing when the kernel has the rule's ID and one INPUT jump; otherwise one transaction that adds what is missing", () => {
    const [rule] = renderGuard("ipv4", 15170);
    const kernel = (lines: string[]) => parseGuardSave(["*filter", ":INPUT ACCEPT [0:0]", ...lines, "COMMIT", ""].join("\n"));
    // As the kernel prints it back: the comment first, the negation spelt its own way.
    const printed = `-A ${GUARD_CHAIN} -p tcp -m tcp --dport 15170 -m conntrack ! --ctstate DNAT -m comment --comment "tproxy:${rule?.id} only redirected connections reach the proxy" -j REJECT --reject-with tcp-reset`;
    expect(planGuard(kernel([`:${GUARD_CHAIN} - [0:0]`, `-A INPUT -j ${GUARD_CHAIN}`, printed]), [rule!])).to.equal(undefined);
    expect(planGuard(kernel([]), [rule!])?.input).to.equal(["*filter", `:${GUARD_CHAIN} - [0:0]`, `-I INPUT 1 -j ${GUARD_CHAIN}`, rule!.line, "COMMIT", ""].join("\n"));
    const stale = planGuard(kernel([`:${GUARD_CHAIN} - [0:0]`, `-A INPUT -j ${GUARD_CHAIN}`, printed.replace("15170", "8080").replace(rule!.id, "0123456789abcdef")]), [rule!]);
    expect(stale?.input).to.include(rule!.line);
  });

  it("plans a chain's removal: every jump deleted, the chain emptied and deleted; nothing when the kernel holds none of it", () => {
    const spec = { table: "filter" as const, chain: ENFORCE_CHAIN, hooks: ENFORCE_HOOKS };
    const save = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", `:${ENFORCE_CHAIN} - [0:0]`, `-A INPUT -j ${ENFORCE_CHAIN}`, `-A FORWARD -j ${ENFORCE_CHAIN}`, `-A FORWARD -s 10.0.0.1/32 -j ${ENFORCE_CHAIN}`, `-A ${ENFORCE_CHAIN} -s 10.0.0.9/32 -j DROP`, "COMMIT", ""].join("\n");
    expect(planRemoval(spec, parseSave(save, spec))).to.equal(
      ["*filter", `-D INPUT -j ${ENFORCE_CHAIN}`, `-D FORWARD -j ${ENFORCE_CHAIN}`, `-D FORWARD -s 10.0.0.1/32 -j ${ENFORCE_CHAIN}`, `:${ENFORCE_CHAIN} - [0:0]`, `-X ${ENFORCE_CHAIN}`, "COMMIT", ""].join("\n"),
    );
    // A jump left without its chain (cannot happen in the kernel, but a listing is only text): the jump goes, no -X.
    expect(planRemoval(GUARD_SPEC, parseSave(`*filter\n-A INPUT -j ${GUARD_CHAIN}\nCOMMIT\n`, GUARD_SPEC))).to.equal(`*filter\n-D INPUT -j ${GUARD_CHAIN}\nCOMMIT\n`);
    expect(planRemoval(GUARD_SPEC, parseSave("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", GUARD_SPEC))).to.equal(undefined);
  });
});
