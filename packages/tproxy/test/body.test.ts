// Bodies on request: hooks that read the request or response body (flow.request.text(), peek(n)), with the
// real proxy in network namespaces and curl as the client (see transparent.test.ts for the world).
import { expect } from "chai";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { ProxyWorld, type Proc } from "../../../test/support/world.ts";

const STATUS = ["-w", "\n%{http_code}"];
const MAX_BODY = 64 * 1024;

function parse(out: string): { body: string; status: number } {
  const i = out.lastIndexOf("\n");
  return { body: out.slice(0, i), status: Number(out.slice(i + 1)) };
}

const BODY_FILTER = `
import type { Filter } from "@tproxy/tproxy/filter";
export default {
  async request(flow) {
    const path = flow.request.path;
    if (path.startsWith("/echo/api")) {
      const text = await flow.request.text();
      const action = text === "" ? undefined : (JSON.parse(text) as { action?: string }).action;
      if (action === "delete") flow.respond(403, "deletes are not allowed\\n");
    }
    // A filter that swallows the failed read and lets the request pass: the proxy refuses it all the same.
    if (path.startsWith("/echo/lenient")) {
      try { await flow.request.body(); } catch { /* let it pass */ }
    }
    if (path.startsWith("/echo/slow-hook")) {
      const body = await flow.request.body();
      flow.request.headers["x-body-length"] = String(body.length);
    }
  },
  async response(flow) {
    const path = flow.request.path;
    if (path.startsWith("/bytes") && path.includes("peek")) {
      const head = new TextDecoder("latin1").decode(await flow.response!.peek(4));
      if (head.startsWith("MZ") || head === "%PDF") flow.respond(403, "executables and PDFs are not downloaded here\\n");
    }
    if (path.startsWith("/bytes") && path.includes("whole")) {
      flow.response!.headers["x-body-length"] = String((await flow.response!.body()).length);
    }
  },
} satisfies Filter;
`;

describe("filter hooks that read bodies (network namespaces, curl)", function () {
  this.timeout(60_000);
  let world: ProxyWorld;
  let proxy: Proc;
  let ca: { cert: string; key: string };

  before(async function () {
    world = await ProxyWorld.create("tpb");
    ca = await world.makeProxyCa();
    const filterDir = join(world.dir, "filter");
    writeConfigMap(filterDir, { "filter.ts": BODY_FILTER });
    proxy = await world.startProxy([
      "--ca-cert", ca.cert, "--ca-key", ca.key, "--filter", join(filterDir, "filter.ts"),
      "--upstream-ca", world.publicCa.certPath, "--filter-timeout", "300", "--max-body", String(MAX_BODY),
      // One process, so that the memory test measures the process that carries the bytes.
      "--workers", "1",
    ]);
    await world.redirectPod();
  });
  after(async () => {
    await world?.close();
  });

  const curl = async (args: string[], timeoutS = 10) => {
    const r = await world.curl(["--cacert", ca.cert, ...STATUS, ...args], timeoutS);
    return { ...parse(r.stdout), stderr: r.stderr, code: r.code };
  };
  const echoed = (body: string) => JSON.parse(body) as { "content-length"?: string; "transfer-encoding"?: string; bytes: number; body?: string };

  it("denies a POST by a JSON field and sends an allowed one upstream exactly as sent", async () => {
    const denied = await curl(["-H", "content-type: application/json", "--data-binary", '{"action":"delete","id":7}', "https://storage.googleapis.com/echo/api"]);
    expect(denied.status).to.equal(403);
    expect(denied.body).to.equal("deletes are not allowed\n");
    const sent = '{"action":"read","id":7}';
    const ok = await curl(["-H", "content-type: application/json", "--data-binary", sent, "https://storage.googleapis.com/echo/api"]);
    expect(ok.status).to.equal(200);
    expect(echoed(ok.body)).to.deep.equal({ "content-length": String(sent.length), bytes: sent.length, body: sent });
    // Plain HTTP, and a GET without a body (the hook reads an empty one).
    expect((await curl(["--data-binary", '{"action":"delete"}', "http://storage.googleapis.com/echo/api"])).status).to.equal(403);
    expect(echoed((await curl(["https://storage.googleapis.com/echo/api"])).body)).to.deep.equal({ bytes: 0, body: "" });
  });

  it("sends a chunked upload that the hook read upstream whole, with its length", async () => {
    const sent = '{"action":"read","chunked":true}';
    const ok = await curl(["-H", "transfer-encoding: chunked", "--data-binary", sent, "https://storage.googleapis.com/echo/api"]);
    expect(ok.status).to.equal(200);
    expect(echoed(ok.body)).to.deep.equal({ "content-length": String(sent.length), bytes: sent.length, body: sent });
    const denied = await curl(["-H", "transfer-encoding: chunked", "--data-binary", '{"action":"delete"}', "https://storage.googleapis.com/echo/api"]);
    expect(denied.status).to.equal(403);
  });

  it("waits for the expect: 100-continue handshake before judging", async () => {
    const sent = '{"action":"read"}';
    const ok = await curl(["-H", "expect: 100-continue", "--data-binary", sent, "https://storage.googleapis.com/echo/api"]);
    expect(ok.status).to.equal(200);
    expect(echoed(ok.body).body).to.equal(sent);
  });

  it("refuses a body larger than --max-body with 413, even when the deciding field lies past the limit or the hook swallows the error", async () => {
    // {"pad":"aaa...","action":"delete"}: the field that matters comes after the first MAX_BODY bytes.
    const big = `{"pad":"${"a".repeat(MAX_BODY)}","action":"delete"}`;
    const file = join(world.dir, "big.json");
    const { writeFileSync } = await import("node:fs");
    writeFileSync(file, big);
    const refused = await curl(["--data-binary", `@${file}`, "https://storage.googleapis.com/echo/api"]);
    expect(refused.status).to.equal(413);
    expect(refused.body).to.match(/request body is larger than the 65536 bytes the filter may read \(--max-body\)/);
    const lenient = await curl(["--data-binary", `@${file}`, "https://storage.googleapis.com/echo/lenient"]);
    expect(lenient.status).to.equal(413);
    // Control: a hook that does not read bodies lets the same bytes through, streamed.
    const streamed = await curl(["--data-binary", `@${file}`, "https://storage.googleapis.com/echo/unread"]);
    expect(streamed.status).to.equal(200);
    expect(echoed(streamed.body).bytes).to.equal(big.length);
    // A body of exactly the limit is read whole.
    const frame = '{"action":"read","pad":""}';
    writeFileSync(file, frame.replace('""', `"${"a".repeat(MAX_BODY - frame.length)}"`));
    expect(readFileSync(file).length).to.equal(MAX_BODY);
    const atLimit = await curl(["--data-binary", `@${file}`, "https://storage.googleapis.com/echo/api"]);
    expect(atLimit.status).to.equal(200);
    expect(echoed(atLimit.body).bytes).to.equal(MAX_BODY);
  });

  it("denies a download by its first bytes and streams the others, larger than --max-body too", async () => {
    const exe = await curl(["-o", "/dev/null", "https://storage.googleapis.com/bytes/300000?prefix=MZ&peek"]);
    expect(exe.status).to.equal(403);
    const pdf = await curl(["https://storage.googleapis.com/bytes/300000?prefix=%25PDF-1.7&peek"]);
    expect(pdf.status).to.equal(403);
    expect(pdf.body).to.equal("executables and PDFs are not downloaded here\n");
    const r = await world.curl(["--cacert", ca.cert, "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "https://storage.googleapis.com/bytes/3000000?prefix=PK&peek"]);
    expect(r.stdout).to.equal("200 3000000");
  });

  it("answers 502 for a response body a hook reads whole when it is larger than --max-body; HEAD keeps its length", async () => {
    const small = await world.curl(["--cacert", ca.cert, "-D", "-", "-o", "/dev/null", "https://storage.googleapis.com/bytes/1000?whole"]);
    expect(small.stdout).to.match(/^x-body-length: 1000\r$/m);
    const big = await curl(["https://storage.googleapis.com/bytes/300000?whole"]);
    expect(big.status).to.equal(502);
    expect(big.body).to.match(/response body is larger than the 65536 bytes the filter may read/);
    const head = await world.curl(["--cacert", ca.cert, "-I", "https://storage.googleapis.com/bytes/1000?whole"]);
    expect(head.stdout).to.match(/^content-length: 1000\r$/m);
    expect(head.stdout).to.match(/^x-body-length: 0\r$/m);
  });

  it("waits for a slow client's body without spending the hook's time budget", async () => {
    // 8 pieces 150 ms apart: over a second, against a 300 ms budget.
    const script = `
      const net = require("node:net");
      const pieces = Array.from({ length: 8 }, (_, i) => "piece" + i + ";");
      const body = pieces.join("");
      const s = net.connect(80, "storage.googleapis.com", () => {
        s.write("POST /echo/slow-hook HTTP/1.1\\r\\nhost: storage.googleapis.com\\r\\ncontent-length: " + body.length + "\\r\\nconnection: close\\r\\n\\r\\n");
        let i = 0;
        const t = setInterval(() => { s.write(pieces[i++]); if (i === pieces.length) clearInterval(t); }, 150);
      });
      let out = "";
      s.on("data", (d) => { out += d; });
      s.on("end", () => { console.log(out); process.exit(0); });
      s.on("error", (e) => { console.log("error " + e.message); process.exit(1); });`;
    const r = await world.pod.run(process.execPath, ["-e", script], { timeoutMs: 15_000 });
    expect(r.stdout).to.match(/^HTTP\/1\.1 200 /);
    const json = r.stdout.slice(r.stdout.indexOf("{"), r.stdout.lastIndexOf("}") + 1);
    expect(echoed(json).body).to.equal("piece0;piece1;piece2;piece3;piece4;piece5;piece6;piece7;");
  });

  it("keeps memory flat for a 1 GiB upload that no hook reads", async function () {
    this.timeout(120_000);
    const pid = proxy.child.pid!;
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) * 1024;
    const file = join(world.dir, "upload.bin");
    await world.pod.must("truncate", ["-s", String(1024 ** 3), file]);
    const before = rss();
    let peak = before;
    const timer = setInterval(() => { peak = Math.max(peak, rss()); }, 100);
    const r = await curl(["-X", "POST", "-T", file, "https://storage.googleapis.com/echo/unread"], 100);
    clearInterval(timer);
    expect(r.status).to.equal(200);
    expect(echoed(r.body).bytes).to.equal(1024 ** 3);
    // Buffering would grow RSS by about 1 GiB; streaming stays within GC noise.
    expect(peak - before, `RSS grew from ${before} to ${peak}`).to.be.below(160 * 1024 * 1024);
    console.log(`      upload RSS growth: ${Math.round((peak - before) / 1024 / 1024)} MiB`);
  });
});

describe("a hook waiting for the body of a client that stalls (--request-timeout)", function () {
  this.timeout(60_000);
  let world: ProxyWorld;
  let proxy: Proc;
  let ca: { cert: string; key: string };

  before(async function () {
    world = await ProxyWorld.create("tps");
    ca = await world.makeProxyCa();
    const filterDir = join(world.dir, "filter");
    writeConfigMap(filterDir, { "filter.ts": BODY_FILTER });
    proxy = await world.startProxy([
      "--ca-cert", ca.cert, "--ca-key", ca.key, "--filter", join(filterDir, "filter.ts"),
      "--upstream-ca", world.publicCa.certPath, "--filter-timeout", "300", "--request-timeout", "1500", "--workers", "1",
    ]);
    await world.redirectPod();
  });
  after(async () => {
    await world?.close();
  });

  it("closes the connection at the bound without forwarding the request, and keeps serving", async () => {
    // Half the promised body, then silence: the hook's read waits, its budget paused, until the bound.
    const script = `
      const net = require("node:net");
      const started = Date.now();
      const s = net.connect(80, "storage.googleapis.com", () => {
        s.write("POST /echo/slow-hook HTTP/1.1\\r\\nhost: storage.googleapis.com\\r\\ncontent-length: 100\\r\\n\\r\\n" + "x".repeat(50));
      });
      let out = "";
      s.on("data", (d) => { out += d; });
      s.on("close", () => { console.log(JSON.stringify({ out, ms: Date.now() - started })); process.exit(0); });
      s.on("error", () => undefined);
      setTimeout(() => { console.log(JSON.stringify({ out, ms: "still open after 10 s" })); process.exit(0); }, 10000);`;
    const r = await world.pod.run(process.execPath, ["-e", script], { timeoutMs: 15_000 });
    const result = JSON.parse(r.stdout.trim()) as { out: string; ms: number | string };
    expect(result.ms, r.stdout).to.be.a("number");
    expect(result.out).to.not.match(/HTTP\/1\.1 200/);
    const after = await world.curl(["--cacert", ca.cert, "-w", "\n%{http_code}", "--data-binary", '{"action":"read"}', "https://storage.googleapis.com/echo/api"]);
    expect(after.stdout).to.match(/\n200$/);
    expect(proxy.output).to.not.match(/internal error/);
  });
});
