// A filter is its whole directory: every file counts in the version's hash, errors name the file at
// fault, JSON and text files can be imported, and import.meta names the entry file.
import { expect } from "chai";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import pino from "pino";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { waitFor } from "../../../test/support/netns.ts";
import { FilterLoadError } from "../src/errors.ts";
import { buildFilter } from "../src/filter/build.ts";
import { compileFilter, readFilterSnapshot } from "../src/filter/compile.ts";
import { FilterHost } from "../src/filter/host.ts";
import { FilterReloader } from "../src/filter/reloader.ts";
import { flow, sourceHash } from "./helpers.ts";

const RULES_FILTER = `import type { Filter } from "@tproxy/tproxy/filter";
import rules from "./rules.json";
import hosts from "./hosts.txt";
export default {
  request(flow) {
    const allowed = hosts.split("\\n").filter(Boolean);
    if (rules.deny.includes(flow.request.host)) flow.respond(451, "denied by rules.json");
    else if (!allowed.includes(flow.request.host)) flow.respond(403, "not in hosts.txt");
    else flow.respond(200, rules.greeting);
  },
} satisfies Filter;
`;

async function answer(host: FilterHost, hostName: string): Promise<{ status: number; body: string } | undefined> {
  const v = host.acquire()!;
  try {
    const data = flow("/");
    data.request.host = hostName;
    const a = (await host.run(v, "request", data)).answer;
    return a && { status: a.status, body: String(a.body) };
  } finally {
    host.release(v);
  }
}

describe("multi-file filters", function () {
  this.timeout(30_000);
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), "tproxy-multifile-")); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("imports JSON as data and .txt as a string, typed, and runs on them", async () => {
    writeFileSync(join(dir, "filter.ts"), RULES_FILTER);
    writeFileSync(join(dir, "rules.json"), JSON.stringify({ deny: ["bad.example"], greeting: "hello" }));
    writeFileSync(join(dir, "hosts.txt"), "good.example\nbad.example\n");
    const host = new FilterHost();
    try {
      await host.load(await buildFilter(dir));
      expect(await answer(host, "good.example")).to.deep.equal({ status: 200, body: "hello" });
      expect(await answer(host, "bad.example")).to.deep.equal({ status: 451, body: "denied by rules.json" });
      expect(await answer(host, "other.example")).to.deep.equal({ status: 403, body: "not in hosts.txt" });
    } finally {
      await host.close();
    }
    // The JSON is typed: a field it does not have is a type error in filter.ts.
    writeFileSync(join(dir, "filter.ts"), RULES_FILTER.replace("rules.greeting", "rules.greting"));
    const err = await buildFilter(dir).then(() => expect.fail("accepted"), (e: unknown) => e as FilterLoadError);
    expect(err.diagnostics[0]).to.include({ file: join(dir, "filter.ts"), line: 9 });
    expect(err.diagnostics[0]!.message).to.match(/Property 'greting' does not exist/);
  });

  it("hashes every file but the kubelet's ..data entries and dotfiles; a one-file filter's hash is its file's", async () => {
    writeConfigMap(dir, { "filter.ts": RULES_FILTER, "rules.json": "{}", "hosts.txt": "" });
    const a = await readFilterSnapshot(dir);
    expect([...a.files.keys()].map((f) => f.slice(dir.length + 1)).sort()).to.deep.equal(["filter.ts", "hosts.txt", "rules.json"]);
    writeFileSync(join(dir, ".editor-swap"), "x");
    mkdirSync(join(dir, "sub"));
    writeFileSync(join(dir, "sub", "x.ts"), "x");
    expect((await readFilterSnapshot(dir)).hash).to.equal(a.hash);
    writeConfigMap(dir, { "filter.ts": RULES_FILTER, "rules.json": '{"deny":[]}', "hosts.txt": "" });
    expect((await readFilterSnapshot(dir)).hash).to.not.equal(a.hash);
    const one = mkdtempSync(join(tmpdir(), "tproxy-onefile-"));
    try {
      writeConfigMap(one, { "filter.ts": RULES_FILTER });
      expect((await readFilterSnapshot(one)).hash).to.equal(sourceHash(RULES_FILTER));
    } finally {
      rmSync(one, { recursive: true, force: true });
    }
  });

  it("reloads when only an imported file changes in a kubelet swap", async () => {
    const files = (deny: string[]) => ({ "filter.ts": RULES_FILTER, "rules.json": JSON.stringify({ deny, greeting: "hi" }), "hosts.txt": "a.example\nb.example\n" });
    writeConfigMap(dir, files(["a.example"]));
    const host = new FilterHost();
    const reloader = new FilterReloader(join(dir, "filter.ts"), host, pino({ level: "silent" }));
    try {
      await reloader.start({ pollMs: 3_600_000 });
      expect(await answer(host, "a.example")).to.deep.equal({ status: 451, body: "denied by rules.json" });
      const swapped = performance.now();
      writeConfigMap(dir, files(["b.example"]));
      await waitFor("the version with the new rules.json", async () => (await answer(host, "a.example"))?.status === 200, 5000, 20);
      // Not asserted (the machine is shared); said for the report's numbers.
      console.log(`      reload after the swap: ${Math.round(performance.now() - swapped)} ms`);
      expect(await answer(host, "b.example")).to.deep.equal({ status: 451, body: "denied by rules.json" });
    } finally {
      await reloader.close();
      await host.close();
    }
  });

  it("--filter may name the directory: filter.ts there is the entry, and its swaps reload", async () => {
    writeConfigMap(dir, { "filter.ts": RULES_FILTER, "rules.json": JSON.stringify({ deny: ["a.example"], greeting: "hi" }), "hosts.txt": "a.example\n" });
    const host = new FilterHost();
    const reloader = new FilterReloader(dir, host, pino({ level: process.env.FB_DEBUG ? "debug" : "silent" }));
    try {
      await reloader.start({ pollMs: 3_600_000 });
      expect(await answer(host, "a.example")).to.deep.equal({ status: 451, body: "denied by rules.json" });
      writeConfigMap(dir, { "filter.ts": RULES_FILTER, "rules.json": JSON.stringify({ deny: ["z.example"], greeting: "hi" }), "hosts.txt": "a.example\n" });
      await waitFor("the new rules.json", async () => (await answer(host, "a.example"))?.status === 200, 5000, 20);
    } finally {
      await reloader.close();
      await host.close();
    }
  });

  it("names the imported file, not filter.ts, for a syntax error in it; refuses imports from outside the directory", async () => {
    writeFileSync(join(dir, "filter.ts"), `import { deny } from "./rules.ts";\nexport default { request(flow) { if (deny(flow.request.host)) flow.respond(403); } };\n`);
    writeFileSync(join(dir, "rules.ts"), `export function deny(host: string): boolean {\n  return host ==== "x";\n}\n`);
    let err = await compileFilter(join(dir, "filter.ts")).then(() => expect.fail("accepted"), (e: unknown) => e as FilterLoadError);
    expect(err.reason).to.equal("compile");
    expect(err.location).to.equal(`${join(dir, "rules.ts")}:2:18`);
    writeFileSync(join(dir, "filter.ts"), `import secret from "../secret.json";\nexport default { request() { void secret; } };\n`);
    writeFileSync(join(dir, "..", "secret.json"), "{}");
    try {
      err = await compileFilter(dir).then(() => expect.fail("accepted"), (e: unknown) => e as FilterLoadError);
      expect(err.message).to.equal(`${join(dir, "filter.ts")}:1:20: cannot import "../secret.json": a filter imports only files of its own directory (filter.ts, rules.ts)`);
    } finally {
      rmSync(join(dir, "..", "secret.json"));
    }
  });

  it("gives import.meta.url/filename/dirname the entry file's values at run time; any other import.meta is refused", async () => {
    writeFileSync(join(dir, "lib.ts"), `export const where = () => import.meta.dirname;\n`);
    writeFileSync(join(dir, "filter.ts"), `import { where } from "./lib.ts";\nexport default { request(flow) { flow.respond(200, [import.meta.url, import.meta.filename, where(), new URL("./rules.json", import.meta.url).href].join(" ")); } };\n`);
    const host = new FilterHost();
    try {
      await host.load(await buildFilter(dir));
      const url = pathToFileURL(join(dir, "filter.ts")).href;
      expect((await answer(host, "x.example"))?.body).to.equal([url, join(dir, "filter.ts"), dir, pathToFileURL(join(dir, "rules.json")).href].join(" "));
    } finally {
      await host.close();
    }
    writeFileSync(join(dir, "filter.ts"), `export default { request(flow) { flow.respond(200, import.meta.resolve("./x")); } };\n`);
    const err = await compileFilter(dir).then(() => expect.fail("accepted"), (e: unknown) => e as FilterLoadError);
    expect(err.reason).to.equal("compile");
    expect(err.location).to.equal(`${join(dir, "filter.ts")}:1:52`);
    expect(err.message).to.match(/import\.meta/);
  });
});
