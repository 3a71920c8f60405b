// Type-checking each filter version against the contract before it loads, `tproxy filter check` and
// `tproxy filter init`, and hook errors located in the filter's own files.
import { expect } from "chai";
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Writable } from "node:stream";
import pino from "pino";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { run, waitFor } from "../../../test/support/netns.ts";
import { FilterHookError, FilterLoadError } from "../src/errors.ts";
import { buildFilter, checkUnaffordable, CHECK_MIB } from "../src/filter/build.ts";
import { compileFilter } from "../src/filter/compile.ts";
import { FilterHost } from "../src/filter/host.ts";
import { FilterReloader } from "../src/filter/reloader.ts";
import { flow } from "./helpers.ts";

const CLI = resolve(import.meta.dirname, "../dist/cli.js");
const TSC = resolve(import.meta.dirname, "../../../node_modules/.bin/tsc");
/** The CLI, run in `cwd` when given (errors name files relative to it). */
const tproxy = (args: string[], cwd?: string) => cwd ? run("/bin/sh", ["-c", 'cd "$1" && shift && exec "$@"', "sh", cwd, process.execPath, CLI, ...args]) : run(process.execPath, [CLI, ...args]);

const GOOD = `import type { Filter } from "@tproxy/tproxy/filter";
export default {
  request(flow) {
    if (flow.request.method !== "GET") flow.respond(405, "no");
  },
} satisfies Filter;
`;

async function refused(path: string): Promise<FilterLoadError> {
  try {
    await buildFilter(path);
  } catch (err) {
    expect(err).to.be.instanceOf(FilterLoadError);
    return err as FilterLoadError;
  }
  return expect.fail(`${path} was not refused`);
}

describe("filter type check", function () {
  this.timeout(30_000);
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), "tproxy-check-")); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("accepts a filter that satisfies the contract, with or without `satisfies Filter`", async () => {
    writeFileSync(join(dir, "filter.ts"), GOOD);
    expect((await buildFilter(join(dir, "filter.ts"))).code).to.include("405");
    writeFileSync(join(dir, "filter.ts"), `export default { request(flow) { if (flow.request.method === "POST") flow.respond(405); } };\n`);
    expect((await buildFilter(dir)).code).to.include("405");
  });

  it("refuses a misspelled field (flow.request.methd) even without `satisfies Filter`, at its file:line:col", async () => {
    // Control: the same filter compiles with esbuild alone, which erases types.
    const source = `export default {\n  request(flow) {\n    if (flow.request.methd === "GET") flow.respond(403);\n  },\n};\n`;
    writeFileSync(join(dir, "filter.ts"), source);
    await compileFilter(join(dir, "filter.ts"));
    const err = await refused(join(dir, "filter.ts"));
    expect(err.reason).to.equal("type");
    expect(err.diagnostics).to.have.length(1);
    expect(err.diagnostics[0]).to.include({ file: join(dir, "filter.ts"), line: 3, column: 22 });
    expect(err.message).to.equal(`${join(dir, "filter.ts")}:3:22: Property 'methd' does not exist on type 'FlowRequest'. Did you mean 'method'?`);
  });

  it("refuses a default export that is no Filter: a misspelled hook, a hook that is no function, no default export", async () => {
    writeFileSync(join(dir, "filter.ts"), `export default {\n  requst() {},\n};\n`);
    let err = await refused(dir);
    expect(err.diagnostics[0]).to.include({ line: 2, column: 3 });
    expect(err.diagnostics[0]!.message).to.match(/'requst' does not exist in type 'Filter'/);
    writeFileSync(join(dir, "filter.ts"), `export default { request: 42 };\n`);
    err = await refused(dir);
    expect(err.diagnostics[0]!.message).to.match(/number.*not assignable to type 'Hook'/);
    writeFileSync(join(dir, "filter.ts"), `export const request = () => {};\n`);
    err = await refused(dir);
    expect(err.diagnostics[0]!.message).to.match(/the default export is not a Filter.*has no default export/);
  });

  it("reports every type error, each in its own file at its own line and column", async () => {
    writeFileSync(join(dir, "rules.ts"), `export const limit: number = "ten";\n`);
    writeFileSync(join(dir, "filter.ts"), `import { limit } from "./rules.ts";\nexport default {\n  request(flow) {\n    flow.respond("403");\n    void limit;\n  },\n};\n`);
    const err = await refused(dir);
    expect(err.diagnostics.map((d) => [d.file, d.line, d.column])).to.have.deep.members([[join(dir, "rules.ts"), 1, 14], [join(dir, "filter.ts"), 4, 18]]);
    expect(err.message).to.match(/ \(and 1 more error\)$/);
  });

  it("the reloader keeps the version in force, logs each error on its own line and says the reason", async () => {
    const lines: { msg: string; reason?: string }[] = [];
    const log = pino({ level: "info" }, new Writable({ write(chunk: Buffer, _e, cb) { lines.push(JSON.parse(chunk.toString()) as { msg: string }); cb(); } }));
    const host = new FilterHost();
    const reasons: string[] = [];
    writeConfigMap(dir, { "filter.ts": GOOD });
    const reloader = new FilterReloader(join(dir, "filter.ts"), host, log, { onError: (e) => reasons.push(e.reason) });
    try {
      await reloader.start({ pollMs: 3_600_000 });
      const first = host.current?.hash;
      expect(first).to.be.a("string");
      writeConfigMap(dir, { "filter.ts": `export default {\n  request(flow) {\n    flow.request.methd;\n    flow.respnd(403);\n  },\n};\n` });
      await waitFor("the version with type errors refused", () => reasons.length === 1, 5000, 20);
      expect(reasons).to.deep.equal(["type"]);
      expect(host.current?.hash).to.equal(first);
      const file = join(dir, "filter.ts");
      expect(lines.map((l) => l.msg)).to.include.members([`${file}:3:18: Property 'methd' does not exist on type 'FlowRequest'. Did you mean 'method'?`, `${file}:4:10: Property 'respnd' does not exist on type 'Flow'. Did you mean 'respond'?`]);
      expect(lines.find((l) => l.msg.startsWith("filter not loaded, previous version stays in force"))?.reason).to.equal("type");
    } finally {
      await reloader.close();
      await host.close();
    }
  });

  it("is skipped, saying why, when the memory limit cannot hold a check's process above the proxy", () => {
    const rss = process.memoryUsage().rss;
    expect(checkUnaffordable(undefined)).to.equal(undefined);
    expect(checkUnaffordable(rss + (CHECK_MIB + 10) * 2 ** 20)).to.equal(undefined);
    expect(checkUnaffordable(rss + 50 * 2 ** 20)).to.match(new RegExp(`leaves 50 MiB above the proxy's \\d+ MiB, and a type check takes up to ${CHECK_MIB} MiB`));
  });

  it("names the line of the filter's own file where a hook threw, not the bundle's", async () => {
    writeFileSync(join(dir, "lib.ts"), `// helpers\n\nexport function check(host: string): void {\n  if (host.endsWith(".bad")) throw new Error("refused " + host);\n}\n`);
    writeFileSync(join(dir, "filter.ts"), `import { check } from "./lib.ts";\nexport default { request(flow) { check(flow.request.host); } };\n`);
    const host = new FilterHost();
    try {
      const v = await host.load(await buildFilter(dir));
      const data = flow("/");
      data.request.host = "x.bad";
      const err = await host.run(v, "request", data).then(() => expect.fail("the hook did not throw"), (e: unknown) => e);
      expect(err).to.be.instanceOf(FilterHookError);
      expect((err as Error).message).to.equal(`${join(dir, "lib.ts")}:4:36: Error: refused x.bad`);
    } finally {
      await host.close();
    }
  });
});

describe("tproxy filter check and init", function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), "tproxy-filter-cli-")); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("check: exit 0 for a filter that checks (file or directory), 1 with each error as file:line:col for one that does not", async () => {
    writeFileSync(join(dir, "filter.ts"), GOOD);
    for (const path of [dir, join(dir, "filter.ts")]) {
      const ok = await tproxy(["filter", "check", path]);
      expect(ok.code, ok.stderr).to.equal(0);
      expect(ok.stdout).to.match(/: ok \(1 file, hash [0-9a-f]{16}\)/);
    }
    writeFileSync(join(dir, "rules.ts"), `export const limit: number = "ten";\n`);
    writeFileSync(join(dir, "filter.ts"), `import { limit } from "./rules.ts";\nexport default { requst() { void limit; } };\n`);
    const bad = await tproxy(["filter", "check", "."], dir);
    expect(bad.code).to.equal(1);
    expect(bad.stderr.trim().split("\n").sort()).to.deep.equal([
      "filter.ts:2:18: Object literal may only specify known properties, but 'requst' does not exist in type 'Filter'. Did you mean to write 'request'?",
      "rules.ts:1:14: Type 'string' is not assignable to type 'number'.",
    ]);
  });

  it("check: refuses what compiles and type-checks but is no filter at run time (top-level throw), and a syntax error, exit 1", async () => {
    writeFileSync(join(dir, "filter.ts"), `const x: Record<string, () => void> = {};\nx.y!();\nexport default { request() {} };\n`);
    const thrown = await tproxy(["filter", "check", dir]);
    expect(thrown.code).to.equal(1);
    expect(thrown.stderr).to.match(/filter\.ts:2:\d+: TypeError: x\.y is not a function/);
    writeFileSync(join(dir, "filter.ts"), `export default { request() { const = 1; } };\n`);
    const syntax = await tproxy(["filter", "check", dir]);
    expect(syntax.code).to.equal(1);
    expect(syntax.stderr).to.match(/filter\.ts:1:36: Expected identifier but found "="/);
  });

  it("init: a directory outside the repository where `tsc -p DIR` checks a filter against the contract; a typo fails it", async () => {
    const init = await tproxy(["filter", "init", join(dir, "f")]);
    expect(init.code, init.stderr).to.equal(0);
    const f = join(dir, "f");
    expect(JSON.parse(readFileSync(join(f, "tsconfig.json"), "utf8")).compilerOptions.types).to.deep.equal([]);
    const starter = await run(TSC, ["-p", f]);
    expect(starter.code, starter.stdout).to.equal(0);
    writeFileSync(join(f, "hosts.txt"), "example.com\n");
    writeFileSync(join(f, "rules.json"), `{"deny": ["a.example"]}\n`);
    writeFileSync(join(f, "filter.ts"), `import type { Filter } from "@tproxy/tproxy/filter";\nimport hosts from "./hosts.txt";\nimport rules from "./rules.json";\nexport default {\n  request(flow) {\n    if (rules.deny.includes(flow.request.host) || !hosts.split("\\n").includes(flow.request.host)) flow.respond(403);\n  },\n} satisfies Filter;\n`);
    const ok = await run(TSC, ["-p", f]);
    expect(ok.code, ok.stdout).to.equal(0);
    expect((await tproxy(["filter", "check", f])).code).to.equal(0);
    writeFileSync(join(f, "filter.ts"), readFileSync(join(f, "filter.ts"), "utf8").replace("flow.respond(403)", "flow.respnd(403)"));
    const typo = await run(TSC, ["-p", f]);
    expect(typo.code).to.not.equal(0);
    expect(typo.stdout).to.include("Property 'respnd' does not exist on type 'Flow'");
    // A second init keeps the filter and the tsconfig.json.
    await tproxy(["filter", "init", f]);
    expect(readFileSync(join(f, "filter.ts"), "utf8")).to.include("respnd");
  });
});
