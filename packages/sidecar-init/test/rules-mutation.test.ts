// Jump placement edges: a lone jump that is not first, or a first jump with a duplicate behind it, is
// replaced; only the filter table's OUTPUT rules count. Cases found by `npm run mutation`.
import { expect } from "chai";
import { CHAIN, JUMP_RULE, parseOutputRules, restoreInput } from "../src/index.ts";

const OTHER = "-A OUTPUT -d 10.1.2.3/32 -j ACCEPT";
const COMMENTED = `-A OUTPUT -m comment --comment "old run" -j ${CHAIN}`;

describe("sidecar-init rules edges", () => {
  it("moves a single jump that is not first in OUTPUT to the front", () => {
    expect(restoreInput([], [OTHER, JUMP_RULE]).split("\n")).to.deep.equal(["*filter", `:${CHAIN} - [0:0]`, `-D OUTPUT -j ${CHAIN}`, `-I OUTPUT 1 -j ${CHAIN}`, "COMMIT", ""]);
  });

  it("replaces a first jump that has a duplicate further down", () => {
    expect(restoreInput([], [JUMP_RULE, OTHER, COMMENTED]).split("\n")).to.deep.equal([
      "*filter", `:${CHAIN} - [0:0]`, `-D OUTPUT -j ${CHAIN}`, '-D OUTPUT -m comment --comment "old run" -j TPROXY-EGRESS', `-I OUTPUT 1 -j ${CHAIN}`, "COMMIT", "",
    ]);
  });

  it("replaces a lone first jump that carries extra matches", () => {
    expect(restoreInput([], [COMMENTED])).to.include(`-I OUTPUT 1 -j ${CHAIN}`);
  });

  it("reads OUTPUT rules only inside the filter table", () => {
    const save = ["-A OUTPUT -j BEFORE-ANY-TABLE", "*filter", JUMP_RULE, "COMMIT", "-A OUTPUT -j AFTER-COMMIT", "*mangle", "-A OUTPUT -j MANGLED", "COMMIT"].join("\n");
    expect(parseOutputRules(save)).to.deep.equal([JUMP_RULE]);
  });
});
