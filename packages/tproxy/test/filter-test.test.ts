// `tproxy filter test`, the real command line: a case file that passes (exit 0), one that fails (exit 1, with
// what was expected and what happened), and case files that cannot be used (exit 2, naming case and field).
import { expect } from "chai";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run } from "../../../test/support/netns.ts";
import { TPROXY_CLI } from "../../../test/support/world.ts";

const FILTER = `
import type { Filter } from "@tproxy/tproxy/filter";
export default {
  request(flow) {
    if (flow.request.path === "/throw") throw new Error("boom");
    flow.request.headers["x-seen"] = flow.client.address;
    if (flow.request.path.startsWith("/trial")) flow.audit("trial rule");
    if (flow.request.host !== "allowed.example") {
      console.log("denying", flow.request.host);
      flow.respond(418, "Access Denied by Administrator", { "content-type": "text/html" });
    }
  },
  response(flow) {
    delete flow.response!.headers["set-cookie"];
    if (flow.response!.status >= 500) flow.respond(502, "upstream failed");
  },
} satisfies Filter;
`;

const PASSING = `
cases:
  - name: allowed host passes
    request: { method: GET, url: "https://allowed.example/a", client: { address: 10.1.2.3 } }
    expect: { status: pass, upstreamHeaders: { x-seen: 10.1.2.3, host: allowed.example } }
  - name: other host gets 418
    request: { url: "https://other.example/" }
    expect: { status: 418, body: "Access Denied by Administrator", headers: { content-type: text/html } }
  - name: response hook drops cookies
    request: { url: "https://allowed.example/r" }
    response: { status: 200, headers: { set-cookie: "a=b", content-type: text/plain } }
    expect: { status: pass, headers: { set-cookie: null, content-type: { matches: "^text/" } } }
  - name: response hook replaces a 500
    request: { url: "https://allowed.example/r" }
    response: { status: 500 }
    expect: { status: 502 }
  - name: audited denial passes
    request: { url: "https://other.example/trial" }
    expect: { status: pass, audit: trial rule }
  - name: hook throws
    request: { url: "https://allowed.example/throw" }
    expect: { status: 403 }
`;

const FAILING = `
- name: still fine
  request: { url: "https://allowed.example/a" }
  expect: { status: pass }
- name: wrongly expects a pass
  request: { url: "https://other.example/" }
  expect: { status: pass }
- name: wrongly expects no audit
  request: { url: "https://other.example/trial" }
  expect: { status: pass }
- name: wrong header
  request: { url: "https://allowed.example/a" }
  expect: { status: pass, upstreamHeaders: { x-seen: 10.9.9.9 } }
`;

describe("tproxy filter test", function () {
  this.timeout(30_000);
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "tproxy-filter-test-"));
    writeFileSync(join(dir, "filter.ts"), FILTER);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const filterTest = (cases: string, name = "cases.yaml", extra: string[] = []) => {
    writeFileSync(join(dir, name), cases);
    return run(process.execPath, [TPROXY_CLI, "filter", "test", ...extra, join(dir, "filter.ts"), join(dir, name)]);
  };

  it("prints one line per case and a summary, and exits 0 when every case is as expected", async () => {
    const r = await filterTest(PASSING);
    expect(r.stderr).to.equal("");
    expect(r.code).to.equal(0);
    expect(r.stdout).to.include("ok   allowed host passes: pass\n");
    expect(r.stdout).to.include("ok   other host gets 418: answer 418 (filter)\n");
    expect(r.stdout).to.include("ok   response hook drops cookies: pass, upstream 200\n");
    expect(r.stdout).to.include("ok   response hook replaces a 500: answer 502 (filter, response hook)\n");
    expect(r.stdout).to.include("ok   audited denial passes: pass, would-deny 418 (audit: trial rule)\n");
    // The filter's console lines, under their case.
    expect(r.stdout).to.include("ok   other host gets 418: answer 418 (filter)\n     | denying other.example\n");
    // A hook that throws: denied as the proxy does by default, with what it threw and where (source line).
    expect(r.stdout).to.match(/ok   hook throws: answer 403 \(filter-error\)\n     ! request hook failed: \S+\/filter\.ts:5:47: Error: boom\n/);
    expect(r.stdout).to.match(/6 cases: 6 ok, 0 failed\n$/);
  });

  it("exits 1 and shows expected against actual for each mismatch", async () => {
    const r = await filterTest(FAILING);
    expect(r.code).to.equal(1);
    expect(r.stdout).to.include("ok   still fine: pass\n");
    expect(r.stdout).to.include("FAIL wrongly expects a pass: answer 418 (filter)\n       status: expected pass (goes upstream), got answer 418 (filter)\n");
    expect(r.stdout).to.include("FAIL wrongly expects no audit: pass, would-deny 418 (audit: trial rule)\n       audit: expected none, got would-deny (trial rule)\n");
    expect(r.stdout).to.include('FAIL wrong header: pass\n       upstream header x-seen: expected "10.9.9.9", got "10.0.0.2"\n');
    expect(r.stdout).to.match(/4 cases: 1 ok, 3 failed\n$/);
  });

  it("--audit makes every answer a would-deny, as tproxy run --filter-audit does", async () => {
    const r = await filterTest(`[{ name: denied host, request: { url: "https://other.example/" }, expect: { status: pass, audit: filter-audit } }]`, "audit.yaml", ["--audit"]);
    expect(r.stdout).to.include("ok   denied host: pass, would-deny 418 (audit: filter-audit)\n");
    expect(r.code).to.equal(0);
  });

  it("reads JSON case files", async () => {
    const r = await filterTest(JSON.stringify([{ name: "json", request: { url: "https://other.example/" }, expect: { status: 418 } }]), "cases.json");
    expect(r.stdout).to.include("ok   json: answer 418 (filter)\n");
    expect(r.code).to.equal(0);
  });

  const MALFORMED: Array<[string, string, string]> = [
    ["an unknown field", `- { name: typo, request: { url: "https://a.example/" }, expected: { status: pass } }`, 'case 1 "typo": expected: unknown field (known: name, request, response, expect)'],
    ["a bad status", `- { name: ok, request: { url: "https://a.example/" }, expect: { status: pass } }\n- { name: second, request: { url: "https://a.example/" }, expect: { status: deny } }`, 'case 2 "second": expect.status: must be "pass" or an HTTP status, found "deny"'],
    ["a relative URL", `- { name: rel, request: { url: "/path" }, expect: { status: pass } }`, 'case 1 "rel": request.url: "/path" is not an absolute URL'],
    ["a missing expect", `- { name: noexp, request: { url: "https://a.example/" } }`, 'case 1 "noexp": expect: must be a mapping with at least status, found undefined'],
    ["a header that is a list", `- { name: hl, request: { url: "https://a.example/", headers: { accept: [a, b] } }, expect: { status: pass } }`, 'case 1 "hl": request.headers.accept: must be text, found a list'],
    ["a case without a name", `- { request: { url: "https://a.example/" }, expect: { status: pass } }`, "case 1: name: must be text, found undefined"],
    ["not a list", `name: x`, "expected a list of cases"],
    ["invalid YAML", `- { name: [`, "not valid YAML"],
  ];
  for (const [what, text, message] of MALFORMED) {
    it(`exits 2 naming the case and the field for ${what}`, async () => {
      const r = await filterTest(text, "bad.yaml");
      expect(r.code).to.equal(2);
      expect(r.stdout).to.equal("");
      expect(r.stderr).to.include(`tproxy filter test: ${join(dir, "bad.yaml")}: ${message}`);
    });
  }

  it("--max-body: a whole-body read of a larger body refuses the message as the proxy does (413 request, 502 response)", async () => {
    writeFileSync(join(dir, "body.ts"), `
export default {
  async request(flow) {
    if (JSON.parse(await flow.request.text()).admin) flow.respond(403, "no admin");
  },
  async response(flow) {
    if ((await flow.response!.text()).includes("secret")) flow.respond(451, "withheld");
  },
} satisfies import("@tproxy/tproxy/filter").Filter;
`);
    writeFileSync(join(dir, "body.yaml"), `
- { name: small body passes, request: { method: POST, url: "https://a.example/", body: '{"admin":false}' }, expect: { status: pass } }
- { name: small body denied, request: { method: POST, url: "https://a.example/", body: '{"admin":true}' }, expect: { status: 403 } }
- { name: large request, request: { method: POST, url: "https://a.example/", body: '{"admin":false,"padding":"xxxxxxxxxxxx"}' }, expect: { status: 413 } }
- name: large response
  request: { method: POST, url: "https://a.example/", body: "{}" }
  response: { status: 200, body: "a long response body without the word" }
  expect: { status: 502 }
`);
    const args = (extra: string[]) => [TPROXY_CLI, "filter", "test", ...extra, join(dir, "body.ts"), join(dir, "body.yaml")];
    const r = await run(process.execPath, args(["--max-body", "20"]));
    expect(r.stderr).to.equal("");
    expect(r.stdout).to.include("ok   small body denied: answer 403 (filter)\n");
    expect(r.stdout).to.include("ok   large request: answer 413 (body: too-large)\n");
    expect(r.stdout).to.include("ok   large response: answer 502 (body: too-large)\n");
    expect(r.code, r.stdout).to.equal(0);
    // Control: under the default limit (1 MiB) the same bodies are read whole and pass.
    const control = await run(process.execPath, args([]));
    expect(control.code).to.equal(1);
    expect(control.stdout).to.include("FAIL large request: pass\n");
    expect(control.stdout).to.include("FAIL large response: pass, upstream 200\n");
    // A bad limit is named.
    const bad = await run(process.execPath, args(["--max-body", "0"]));
    expect(bad.code).to.equal(2);
    expect(bad.stderr).to.include('--max-body "0" must be a whole number of bytes from 1 to');
  });

  it("exits 2 with file:line:col for a filter that does not compile", async () => {
    writeFileSync(join(dir, "broken.ts"), "export default {\n  request(flow) { const x = ; }\n};\n");
    writeFileSync(join(dir, "one.yaml"), `- { name: a, request: { url: "https://a.example/" }, expect: { status: pass } }`);
    const r = await run(process.execPath, [TPROXY_CLI, "filter", "test", join(dir, "broken.ts"), join(dir, "one.yaml")]);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.include(`${join(dir, "broken.ts")}:2:29`);
  });
});
