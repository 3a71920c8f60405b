// The filters shipped beside the chart: the default one (charts/tproxy/files/filter.ts) and the
// examples. They type-check against the filter contract and decide as their comments say.
import { expect } from "chai";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import type { BodyReader, Filter, Flow, Headers, ResponseFlow } from "@tproxy/tproxy/filter";
import { REPO_ROOT } from "../support/helm.ts";

const pexec = promisify(execFile);

interface Answer {
  status: number;
  body: string | Uint8Array | undefined;
  headers: Record<string, string> | undefined;
}

/** Body readers over fixed bytes, as the proxy gives a hook (without the --max-body bound). */
function reader(body: string | Uint8Array): BodyReader {
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
  return {
    body: async () => bytes.slice(),
    text: async () => new TextDecoder().decode(bytes),
    peek: async (n: number) => bytes.slice(0, n),
  };
}

/** A flow as the proxy hands it to a hook; records what `respond` was called with. */
function flow(method: string, url: string, headers: Headers = {}, body: string | Uint8Array = ""): { flow: Flow; answer: () => Answer | undefined } {
  const u = new URL(url);
  let answer: Answer | undefined;
  const f: Flow = {
    id: "flow-1",
    client: { address: "10.0.0.7", port: 40000 },
    destination: { address: "203.0.113.9", port: u.protocol === "https:" ? 443 : 80 },
    sni: u.protocol === "https:" ? u.hostname : undefined,
    request: {
      method,
      scheme: u.protocol === "https:" ? "https" : "http",
      host: u.hostname,
      port: u.port === "" ? (u.protocol === "https:" ? 443 : 80) : Number(u.port),
      path: `${u.pathname}${u.search}`,
      url,
      headers,
      ...reader(body),
    },
    response: undefined,
    respond(status, body, hdrs) {
      answer = { status, body, headers: hdrs };
    },
    audit() {},
    log() {},
  };
  return { flow: f, answer: () => answer };
}

async function load(path: string): Promise<Filter> {
  return ((await import(pathToFileURL(join(REPO_ROOT, path)).href)) as { default: Filter }).default;
}

describe("the chart's filters", function () {
  this.timeout(60_000);

  it("type-check against the filter contract", async () => {
    const r = await pexec(process.execPath, [join(REPO_ROOT, "node_modules/typescript/bin/tsc"), "-p", join(REPO_ROOT, "examples/tsconfig.json")]).then(
      () => ({ code: 0, out: "" }),
      (err: { code: number; stdout: string }) => ({ code: err.code, out: err.stdout }),
    );
    expect(r.out).to.equal("");
    expect(r.code).to.equal(0);
  });

  it("files/filter.ts (the tutorial's) lets the public bucket through and answers everything else 418", async () => {
    const filter = await load("charts/tproxy/files/filter.ts");
    const allowed = flow("GET", "https://storage.googleapis.com/solutions-public-assets/adtech/dfp_networkimpressions.py");
    await filter.request!(allowed.flow);
    expect(allowed.answer()).to.equal(undefined);
    for (const url of ["https://www.google.com/", "http://169.254.169.254/computeMetadata/v1/", "https://storage.googleapis.com/other-bucket/x"]) {
      const denied = flow("GET", url);
      await filter.request!(denied.flow);
      expect(denied.answer()?.status, url).to.equal(418);
      expect(denied.answer()?.body, url).to.equal("Access Denied by Administrator");
    }
  });

  it("examples/filters/tracing-header.ts adds a traceparent and the flow id, keeping a caller's traceparent", async () => {
    const filter = await load("examples/filters/tracing-header.ts");
    const plain = flow("GET", "https://example.org/");
    await filter.request!(plain.flow);
    expect(plain.answer()).to.equal(undefined);
    expect(plain.flow.request.headers["traceparent"]).to.match(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(plain.flow.request.headers["x-tproxy-flow-id"]).to.equal("flow-1");
    const traced = flow("POST", "https://example.org/", { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" });
    await filter.request!(traced.flow);
    expect(traced.flow.request.headers["traceparent"]).to.equal("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  });

  it("examples/filters/per-path-methods.ts allows methods per path, 405 for a wrong method, 418 elsewhere", async () => {
    const filter = await load("examples/filters/per-path-methods.ts");
    const decide = async (method: string, url: string) => {
      const f = flow(method, url);
      await filter.request!(f.flow);
      return f.answer();
    };
    expect(await decide("GET", "https://storage.googleapis.com/solutions-public-assets/a.py")).to.equal(undefined);
    expect(await decide("POST", "https://api.example.com/v1/reports/42")).to.equal(undefined);
    expect(await decide("GET", "https://api.example.com/v1/users")).to.equal(undefined);
    const wrong = await decide("DELETE", "https://api.example.com/v1/users/1");
    expect(wrong?.status).to.equal(405);
    expect(wrong?.headers?.["allow"]).to.equal("GET, HEAD");
    const put = await decide("PUT", "https://storage.googleapis.com/solutions-public-assets/a.py");
    expect(put?.status).to.equal(405);
    expect((await decide("GET", "https://www.google.com/"))?.status).to.equal(418);
  });

  it("examples/filters/body-rules.ts judges batch calls by their JSON action and downloads by their first bytes", async () => {
    const filter = await load("examples/filters/body-rules.ts");
    const call = async (body: string) => {
      const f = flow("POST", "https://api.example.com/v1/batch", { "accept-encoding": "gzip" }, body);
      await filter.request!(f.flow);
      expect(f.flow.request.headers["accept-encoding"]).to.equal(undefined);
      return f.answer();
    };
    expect(await call('{"action":"read","ids":[1,2]}')).to.equal(undefined);
    expect((await call('{"action":"delete","ids":[1,2]}'))?.status).to.equal(403);
    expect((await call("{}"))?.status).to.equal(403);
    expect((await call("not json"))?.status).to.equal(400);
    const download = async (first: string, headers: Headers = {}) => {
      const f = flow("GET", "https://downloads.example.com/file");
      const response = { status: 200, headers, ...reader(first + "rest of the file") };
      const withResponse: ResponseFlow = { ...f.flow, response, respond: f.flow.respond };
      await filter.response!(withResponse);
      return f.answer();
    };
    expect(await download("PK\x03\x04")).to.equal(undefined);
    expect((await download("MZ\x90\x00"))?.status).to.equal(403);
    expect((await download("%PDF-1.7"))?.status).to.equal(403);
    expect((await download("PK", { "content-encoding": "gzip" }))?.status).to.equal(502);
  });
});
