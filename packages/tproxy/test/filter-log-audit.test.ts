// A filter's own log lines (flow.log, console.* in its context) and flow.audit, at the FilterHost.
import { expect } from "chai";
import { FilterHost, type FilterLogLine } from "../src/filter/host.ts";
import { flow, filterHostFixture } from "./helpers.ts";

describe("filter log lines and flow.audit", function () {
  this.timeout(10_000);
  let lines: FilterLogLine[];
  beforeEach(() => {
    lines = [];
  });
  const fixture = filterHostFixture(() => ({ timeoutMs: 500, log: (l) => lines.push(l) }));
  let host: FilterHost;
  beforeEach(() => {
    host = fixture.host;
  });
  const load = (source: string) => fixture.load(source);

  it("names the request in console and flow.log lines, also after an await and in a timer; top-level lines name only the version", async () => {
    const v = await load(`
      console.log("loaded", 1 + 1);
      export default {
        async request(flow) {
          console.warn("before %s", flow.request.path);
          await new Promise((r) => setTimeout(r, 5));
          console.error("after", { n: 1 });
          flow.log("via flow.log");
          setTimeout(() => console.log("from a timer"), 1);
        },
      };`);
    expect(lines).to.deep.equal([{ level: "info", message: "loaded 2", id: undefined, filter: v.hash }]);
    await host.run(v, "request", { ...flow("/p"), id: "req-1" });
    await new Promise((r) => setTimeout(r, 20));
    expect(lines.slice(1)).to.deep.equal([
      { level: "warn", message: "before /p", id: "req-1", filter: v.hash },
      { level: "error", message: "after { n: 1 }", id: "req-1", filter: v.hash },
      { level: "info", message: "via flow.log", id: "req-1", filter: v.hash },
      { level: "info", message: "from a timer", id: "req-1", filter: v.hash },
    ]);
  });

  it("returns the reason given to flow.audit with the hook's answer, whatever the order", async () => {
    const v = await load(`export default { request(flow) {
      if (flow.request.path === "/before") { flow.audit("new rule"); flow.respond(418, "no"); }
      if (flow.request.path === "/after") { flow.respond(418, "no"); flow.audit(); }
      if (flow.request.path === "/alone") flow.audit("nothing to deny");
    } };`);
    const before = await host.run(v, "request", flow("/before"));
    expect(before.audit).to.equal("new rule");
    expect(before.answer?.status).to.equal(418);
    expect((await host.run(v, "request", flow("/after"))).audit).to.equal("audit");
    const alone = await host.run(v, "request", flow("/alone"));
    expect(alone.audit).to.equal("nothing to deny");
    expect(alone.answer).to.equal(undefined);
    expect((await host.run(v, "request", flow("/plain"))).audit).to.equal(undefined);
  });
});
