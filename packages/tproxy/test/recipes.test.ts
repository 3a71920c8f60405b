// Every recipe of the filter guide that has a case file next to it (examples/filters/NAME.ts with
// NAME.cases.yaml) passes its cases with the real `tproxy filter test`.
import { expect } from "chai";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { run } from "../../../test/support/netns.ts";
import { REPO, TPROXY_CLI } from "../../../test/support/world.ts";

const DIR = join(REPO, "examples/filters");
// The credential-injection recipe reads its token from here instead of the chart's Secret mount.
const SECRET_DIR = join(DIR, "testdata/filter-secret");

describe("filter recipes (examples/filters) pass their case files", function () {
  this.timeout(30_000);
  const recipes = readdirSync(DIR).filter((f) => f.endsWith(".ts")).map((f) => f.slice(0, -3)).sort();

  it("has recipes with case files", () => {
    expect(recipes.filter((r) => existsSync(join(DIR, `${r}.cases.yaml`)))).to.include.members(["allowlist-file", "audit-rollout", "body-rules", "credential-injection", "per-path-methods", "per-pod", "rate-limit", "response-headers", "tracing-header"]);
  });

  for (const recipe of recipes) {
    const cases = join(DIR, `${recipe}.cases.yaml`);
    if (!existsSync(cases)) continue;
    it(`${recipe}.ts`, async () => {
      const r = await run(process.execPath, [TPROXY_CLI, "filter", "test", join(DIR, `${recipe}.ts`), cases], { env: { ...process.env, TPROXY_FILTER_SECRET_DIR: SECRET_DIR } });
      expect(r.code, `${r.stdout}${r.stderr}`).to.equal(0);
      expect(r.stdout).to.match(/ 0 failed\n$/);
    });
  }
});
