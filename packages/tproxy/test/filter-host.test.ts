import { expect } from "chai";
import { join } from "node:path";
import { FilterHost } from "../src/filter/host.ts";
import { FilterHookError, FilterLoadError, FilterTimeoutError } from "../src/errors.ts";
import { flow, filterHostFixture } from "./helpers.ts";


describe("filter compile and host", function () {
  this.timeout(10_000);
  const fixture = filterHostFixture(() => ({ timeoutMs: 200 }));
  let dir: string;
  let host: FilterHost;
  beforeEach(() => {
    ({ dir, host } = fixture);
  });
  const load = fixture.load;

  it("compiles TypeScript with relative imports and runs sync and async hooks", async () => {
    const v = await load(
      `import { verdict } from "./rules.ts";
       import type { Filter } from "@tproxy/tproxy/filter";
       export default { async request(flow) { await Promise.resolve(); flow.request.headers["x-a"] = "1"; if (verdict(flow.request.path) === "deny") flow.respond(418, "no", { "X-Why": "rules" }); } } satisfies Filter;`,
      { "rules.ts": `export function verdict(path: string): "allow" | "deny" { return path.startsWith("/ok") ? "allow" : "deny"; }` },
    );
    expect([...v.hooks]).to.deep.equal(["request"]);
    const allowed = await host.run(v, "request", flow("/ok"));
    expect(allowed.answer).to.equal(undefined);
    expect(allowed.headers["x-a"]).to.equal("1");
    const denied = await host.run(v, "request", flow("/no"));
    expect(denied.answer).to.deep.equal({ status: 418, body: "no", headers: { "x-why": "rules" } });
  });

  it("reports a syntax error with file:line:col and keeps no version", async () => {
    await load("export default {\n  request(flow) { const x = ; }\n};").then(() => expect.fail("loaded"), (e: unknown) => {
      expect(e).to.be.instanceOf(FilterLoadError);
      expect((e as FilterLoadError).location).to.equal(`${join(dir, "filter.ts")}:2:29`);
    });
    expect(host.current).to.equal(undefined);
  });

  // A module that loads without a usable hook would let every request through: each is refused like a
  // compile error, and the version in force stays.
  const WRONG_SHAPES: Array<[string, string, RegExp]> = [
    ["a named export only", "export function request(flow) { flow.respond(200, 'named'); }", /no default export \(named exports: request\)/],
    ["no export at all", "const x = 1;", /no default export; export default/],
    ["a misspelled hook", "export default { requests(flow) { flow.respond(200, 'typo'); } };", /neither a request nor a response hook \(it has: requests\)/],
    ["an empty object", "export default {};", /neither a request nor a response hook \(it is empty\)/],
    ["a number", "export default 42;", /must be an object with request and\/or response hooks, not number/],
    ["a function", "export default function request(flow) { flow.respond(200, 'fn'); }", /not function/],
    ["null", "export default null;", /not null/],
    ["an array", "export default [];", /not an array/],
    ["a request hook that is a number", "export default { request: 42 };", /"request" export must be a function, not number/],
    ["a response hook that is a string", "export default { request() {}, response: 'allow' };", /"response" export must be a function, not string/],
    ["a request hook that is null", "export default { request: null, response() {} };", /"request" export must be a function, not null/],
  ];
  for (const [what, source, reason] of WRONG_SHAPES) {
    it(`refuses a default export of the wrong shape (${what}) and keeps the version in force`, async () => {
      const good = await load(`export default { request(flow) { flow.respond(418, "good"); } };`);
      await load(source).then(() => expect.fail("loaded"), (e: unknown) => {
        expect(e).to.be.instanceOf(FilterLoadError);
        expect((e as Error).message).to.match(reason);
      });
      expect(host.current).to.equal(good);
      expect((await host.run(host.current!, "request", flow("/"))).answer?.body).to.equal("good");
    });
  }

  it("refuses a filter whose top-level code throws and keeps the version in force", async () => {
    const good = await load(`export default { request(flow) { flow.respond(418, "good"); } };`);
    await load(`throw new Error("top-level boom"); export default { request() {} };`).then(() => expect.fail("loaded"), (e: unknown) => {
      expect(e).to.be.instanceOf(FilterLoadError);
      expect((e as Error).message).to.match(/Error: top-level boom/);
    });
    expect(host.current).to.equal(good);
    expect((await host.run(good, "request", flow("/"))).answer?.body).to.equal("good");
  });

  it("accepts a filter with only a response hook, and hooks inherited from a class", async () => {
    const v = await load(`export default { response(flow) { flow.response.headers["x-r"] = "1"; } };`);
    expect([...v.hooks]).to.deep.equal(["response"]);
    const w = await load(`class F { request(flow) { flow.respond(418, "class"); } } export default new F();`);
    expect((await host.run(w, "request", flow("/"))).answer?.body).to.equal("class");
  });

  it("turns a throw into FilterHookError and a hook past its budget into FilterTimeoutError, then keeps working", async () => {
    const v = await load(`export default { request(flow) {
      if (flow.request.path === "/throw") throw new Error("nope");
      if (flow.request.path === "/slow") { const end = Date.now() + 300; while (Date.now() < end) {} }
    } };`);
    await host.run(v, "request", flow("/throw")).then(() => expect.fail(), (e: unknown) => expect(e).to.be.instanceOf(FilterHookError).with.property("message").match(/nope/));
    await host.run(v, "request", flow("/slow")).then(() => expect.fail("a hook past its budget decided"), (e: unknown) => expect(e).to.be.instanceOf(FilterTimeoutError));
    expect((await host.run(v, "request", flow("/again"))).answer).to.equal(undefined);
  });

  it("keeps a filter's changes to globals and prototypes in its own context", async () => {
    const v = await load(`
      Object.prototype.polluted = "yes";
      Array.prototype.includes = () => true;
      JSON.stringify = () => "hijacked";
      export default { request(flow) {
        flow.request.headers.__proto__.fromHook = "yes";
        flow.respond(200, String(({}).polluted) + " " + String([].includes(1)) + " " + JSON.stringify({ a: 1 }));
      } };`);
    const r = await host.run(v, "request", flow("/"));
    // The filter sees its own changes...
    expect(r.answer?.body).to.equal("yes true hijacked");
    // ...and the proxy none of them.
    expect(({} as Record<string, unknown>).polluted).to.equal(undefined);
    expect(({} as Record<string, unknown>).fromHook).to.equal(undefined);
    expect([].includes(1 as never)).to.equal(false);
    expect(JSON.stringify({ a: 1 })).to.equal('{"a":1}');
  });

  it("fails closed for a version the host does not have", async () => {
    await load(`export default { request() {} };`);
    const ghost = { version: 999, hash: "none", hooks: new Set(["request" as const]) };
    await host.run(ghost, "request", flow("/")).then(() => expect.fail("judged without a filter"), (e: unknown) => expect(String(e)).to.match(/version 999 is not loaded/));
  });

  it("answers many calls made in one turn each with its own result", async () => {
    const v = await load(`export default { request(flow) { flow.respond(200, flow.request.path); } };`);
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => host.run(v, "request", flow(`/${i}`))));
    expect(answers.map((a) => a.answer?.body)).to.deep.equal(Array.from({ length: 50 }, (_, i) => `/${i}`));
  });

  it("keeps an old version for requests pinned to it, and drops it after release", async () => {
    const v1 = await load(`export default { request(flow) { flow.respond(200, "one"); } };`);
    const pinned = host.acquire()!;
    const v2 = await load(`export default { request(flow) { flow.respond(200, "two"); } };`);
    expect(host.current).to.equal(v2);
    expect((await host.run(pinned, "request", flow("/"))).answer?.body).to.equal("one");
    // Still pinned: a second run of v1 works.
    expect((await host.run(pinned, "request", flow("/"))).answer?.body).to.equal("one");
    host.release(pinned);
    // Released and no longer current: the host has dropped it, and a request cannot be judged by it.
    await host.run(v1, "request", flow("/")).then(
      () => expect.fail("v1 still loaded after its last request released it"),
      (e: unknown) => expect(String(e)).to.match(new RegExp(`version ${v1.version} is not loaded`)),
    );
    expect((await host.run(v2, "request", flow("/"))).answer?.body).to.equal("two");
  });
});
