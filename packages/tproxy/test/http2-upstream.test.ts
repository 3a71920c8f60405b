// HTTP/2 toward the server, and gRPC through the proxy: a stream from an h2 client goes upstream over HTTP/2
// when the server chooses h2 in ALPN (HTTP/1.1 otherwise), so that a real gRPC client (@grpc/grpc-js) in the pod
// reaches a real gRPC server through the filter: allowed methods with their messages and trailers, denied ones
// as a gRPC status the client understands. Real namespaces, iptables REDIRECT, TLS on both legs.
import { expect } from "chai";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { NAMES, NODE_POD_SIDE, POD_IP6, ProxyWorld, REPO, TRANSPARENT_PORT, type Proc } from "../../../test/support/world.ts";

const GRPC_ECHO = join(REPO, "test/support/grpc-echo.ts");
const RAW_CLIENT = join(import.meta.dirname, "h2-raw-client.ts");
const GRPC_IP = "10.88.2.40";
const H2_IP = "10.88.2.41";
const H2_IP6 = "fd88:2::41";
const H1_IP = "10.88.2.42";
const STANDARD_PORT = "1080";

const FILTER = `
import type { Filter } from "@tproxy/tproxy/filter";
export default {
  request(flow) {
    const r = flow.request;
    if (r.host === "grpc.example") {
      if (r.path === "/test.Echo/Denied") flow.respond(403, "method test.Echo/Denied is not allowed by policy");
      return;
    }
    if (r.host === "h2.example" || r.host === "h2v6.example" || r.host === "h1.example" || r.host === "storage.googleapis.com" || r.host === "untrusted.example") return;
    flow.respond(418, "Access Denied by Administrator");
  },
} satisfies Filter;
`;

interface GrpcResult {
  code: number;
  details: string;
  messages: unknown[];
  trailer: string | undefined;
}

describe("HTTP/2 upstream and gRPC through the proxy (network namespaces, iptables REDIRECT)", function () {
  this.timeout(60_000);
  let world: ProxyWorld;
  let proxy: Proc;
  let h1Server: Proc;
  let h2Server: Proc;
  let ca: { cert: string; key: string };

  before(async function () {
    world = await ProxyWorld.create("tgu");
    const names = { ...NAMES, "grpc.example": GRPC_IP, "h2.example": H2_IP, "h2v6.example": H2_IP6, "h1.example": H1_IP };
    world.pod.hosts(names);
    world.node.hosts(names);
    for (const ip of [GRPC_IP, H2_IP, H1_IP]) await world.net.must("ip", ["addr", "add", `${ip}/32`, "dev", "lo"]);
    // IPv6 answers neighbour solicitations only for addresses of the interface asked: the outside's veth.
    const veth = /^\d+: (\S+)\s+inet6 fd88:2::10\//m.exec(await world.net.must("ip", ["-o", "-6", "addr", "show"]))?.[1];
    await world.net.must("ip", ["-6", "addr", "add", `${H2_IP6}/64`, "dev", veth!, "nodad"]);
    const grpcCert = world.publicCa.issue("grpc", ["grpc.example"]);
    const h2Cert = world.publicCa.issue("h2", ["h2.example", "h2v6.example", "h1.example"]);
    h1Server = world.spawn(world.net, process.execPath, [GRPC_ECHO, "server-h1", H1_IP, "443", h2Cert.certPath, h2Cert.keyPath]);
    await h1Server.waitForLine(/^listening/);
    await world.spawn(world.net, process.execPath, [GRPC_ECHO, "server", GRPC_IP, "443", grpcCert.certPath, grpcCert.keyPath]).waitForLine(/^listening/);
    h2Server = world.spawn(world.net, process.execPath, [GRPC_ECHO, "server-h2", H2_IP, "443", h2Cert.certPath, h2Cert.keyPath]);
    await h2Server.waitForLine(/^listening/);
    await world.spawn(world.net, process.execPath, [GRPC_ECHO, "server-h2", H2_IP6, "443", h2Cert.certPath, h2Cert.keyPath]).waitForLine(/^listening/);
    ca = await world.makeProxyCa();
    const filterDir = join(world.dir, "filter");
    writeConfigMap(filterDir, { "filter.ts": FILTER });
    proxy = await world.startProxy(["--ca-cert", ca.cert, "--ca-key", ca.key, "--filter", join(filterDir, "filter.ts"), "--upstream-ca", world.publicCa.certPath, "--workers", "1", "--standard-port", STANDARD_PORT, "--http2"]);
    await world.redirectPod();
    await world.node.must("ip6tables", ["-t", "nat", "-A", "PREROUTING", "-s", POD_IP6, "-p", "tcp", "--dport", "443", "-j", "REDIRECT", "--to-ports", String(TRANSPARENT_PORT)]);
  });
  after(async () => {
    await world?.close();
  });

  const grpcCall = async (where: "pod" | "node" | "pod-via-connect", method: string, request: Record<string, unknown> = {}): Promise<GrpcResult> => {
    // From the node namespace (no REDIRECT there) the call goes straight to the server: the control.
    const ns = where === "node" ? world.node : world.pod;
    const trust = where === "node" ? world.publicCa.certPath : ca.cert;
    // grpc-js tunnels through an HTTP proxy named by grpc_proxy with CONNECT (the standard listener here).
    const env = where === "pod-via-connect" ? { ...process.env, grpc_proxy: `http://${NODE_POD_SIDE}:${STANDARD_PORT}` } : undefined;
    const r = await ns.run(process.execPath, [GRPC_ECHO, "client", "grpc.example:443", trust, method, JSON.stringify(request)], { timeoutMs: 30_000, ...(env ? { env } : {}) });
    if (r.code !== 0) throw new Error(`gRPC client failed (${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout) as GrpcResult;
  };

  const curl = async (args: string[]) => {
    const r = await world.curl(["--cacert", ca.cert, "-w", "\n%{http_code} %{http_version}", ...args]);
    const i = r.stdout.lastIndexOf("\n");
    const [status, version] = r.stdout.slice(i + 1).split(" ");
    return { body: r.stdout.slice(0, i).trimEnd(), status: Number(status), version, stderr: r.stderr };
  };

  it("carries an allowed gRPC call to a server that speaks only HTTP/2: its answer and its trailing metadata", async () => {
    const r = await grpcCall("pod", "Allowed", { msg: "hello" });
    expect(r).to.deep.equal({ code: 0, details: "", messages: [{ echo: "hello", server: "grpc-echo" }], trailer: "kept" });
    // The request line ends with the server's status, read from its trailers.
    await proxy.waitForLine(/POST https:\/\/grpc\.example\/test\.Echo\/Allowed -> 200 .* allowed h2 grpc-status=0$/);
  });

  it("answers a denied gRPC method with PERMISSION_DENIED and the filter's message; the server allows it (control)", async () => {
    const denied = await grpcCall("pod", "Denied", { msg: "hello" });
    expect(denied.code).to.equal(7);
    expect(denied.details).to.equal("method test.Echo/Denied is not allowed by policy");
    expect(denied.messages).to.deep.equal([]);
    expect(proxy.output).to.match(/POST https:\/\/grpc\.example\/test\.Echo\/Denied -> 403 0b .* denied \(filter\) h2 grpc-status=7/);
    // Control: the same call without the proxy succeeds, so the status came from the filter.
    const direct = await grpcCall("node", "Denied", { msg: "hello" });
    expect(direct.code).to.equal(0);
  });

  it("answers a denied gRPC-Web call over HTTP/1.1 with the status in its headers (control: a plain request gets the filter's 403)", async () => {
    const r = await world.curl(["--cacert", ca.cert, "--http1.1", "-sS", "-D", "-", "-o", "/dev/null", "-X", "POST", "-H", "content-type: application/grpc-web+proto", "--data-binary", "x", "https://grpc.example/test.Echo/Denied"]);
    expect(r.stdout).to.match(/^HTTP\/1\.1 200 /);
    expect(r.stdout).to.match(/\ngrpc-status: 7\r\n/);
    expect(r.stdout).to.match(/\ngrpc-message: method test\.Echo\/Denied is not allowed by policy\r\n/);
    expect(r.stdout).to.match(/\ncontent-type: application\/grpc-web\+proto\r\n/);
    const plain = await curl(["--http1.1", "-X", "POST", "https://grpc.example/test.Echo/Denied"]);
    expect([plain.status, plain.body]).to.deep.equal([403, "method test.Echo/Denied is not allowed by policy"]);
  });

  it("streams a server-streaming call's messages and then its status and trailers", async () => {
    const r = await grpcCall("pod", "Stream", { n: 5 });
    expect(r.code).to.equal(0);
    expect(r.messages).to.deep.equal([0, 1, 2, 3, 4].map((i) => ({ i })));
    expect(r.trailer).to.equal("kept");
  });

  it("passes a server's trailers-only error answer on as the server gave it, its status on the request line", async () => {
    const r = await grpcCall("pod", "Fail");
    expect(r.code).to.equal(5);
    expect(r.details).to.equal("no such thing");
    await proxy.waitForLine(/POST https:\/\/grpc\.example\/test\.Echo\/Fail -> 200 .* allowed h2 grpc-status=5$/);
  });

  it("speaks HTTP/2 upstream for an h2 client when the server chooses it, naming exactly the judged authority", async () => {
    const r = await curl(["--http2", "https://h2.example/some/path?q=1"]);
    expect([r.status, r.version]).to.deep.equal([200, "2"]);
    expect(r.body).to.equal("h2 GET /some/path?q=1 h2.example");
  });

  it("sends a bodiless stream the server refused (GOAWAY race) once more, on a new session; one with a streamed body is not", async () => {
    const r = await curl(["--http2", "https://h2.example/refuse-once/get"]);
    expect([r.status, r.body]).to.deep.equal([200, "h2 GET /refuse-once/get h2.example"]);
    expect(h2Server.lines).to.include("refused /refuse-once/get");
    // Control: a body already streamed into the refused stream is gone, so that request fails (502) rather than
    // being sent again without it.
    const post = await curl(["--http2", "--data-binary", "payload", "https://h2.example/refuse-once/post"]);
    expect(post.status).to.equal(502);
    expect(h2Server.lines).to.include("refused /refuse-once/post");
  });

  it("keeps HTTP/1.1 upstream for HTTP/1.1 clients, and for servers that choose http/1.1 (control for the above)", async () => {
    const h1 = await curl(["--http1.1", "https://h2.example/p"]);
    expect([h1.status, h1.version, h1.body]).to.deep.equal([200, "1.1", "1.1 GET /p h2.example"]);
    // storage.googleapis.com's test server speaks HTTP/1.1 only: its name comes back in the answer.
    const r = await curl(["--http2", "https://storage.googleapis.com/x"]);
    expect([r.status, r.version, r.body]).to.deep.include.members([200, "2"]);
    expect(r.body).to.contain("storage.googleapis.com GET /x");
  });

  it("refuses an upstream whose certificate is not trusted on the HTTP/2 leg too (502, naming why)", async () => {
    const r = await curl(["--http2", "https://untrusted.example/"]);
    expect([r.status, r.version]).to.deep.equal([502, "2"]);
    expect(r.body).to.match(/upstream certificate of untrusted\.example:443 is not trusted/);
  });

  it("carries a request body and a response trailer over the HTTP/2 leg", async () => {
    const body = join(world.dir, "upload.bin");
    writeFileSync(body, "x".repeat(300_000));
    const r = await curl(["--http2", "-D", "-", "--data-binary", `@${body}`, "https://h2.example/trailers"]);
    expect([r.status, r.version]).to.deep.equal([200, "2"]);
    expect(r.body).to.contain("h2 POST /trailers h2.example 300000");
    // curl prints a trailer among the headers (-D) once the body has ended.
    expect(r.body).to.match(/\nx-upstream-trailer: kept\r?$/m);
  });

  it("carries gRPC through a CONNECT tunnel of the standard listener too: allowed, and denied as PERMISSION_DENIED", async () => {
    const allowed = await grpcCall("pod-via-connect", "Allowed", { msg: "tunnelled" });
    expect(allowed).to.deep.equal({ code: 0, details: "", messages: [{ echo: "tunnelled", server: "grpc-echo" }], trailer: "kept" });
    const denied = await grpcCall("pod-via-connect", "Denied");
    expect([denied.code, denied.details]).to.deep.equal([7, "method test.Echo/Denied is not allowed by policy"]);
    // Control: grpc-js does take the tunnel (a proxy address where nothing listens fails the call).
    const r = await world.pod.run(process.execPath, [GRPC_ECHO, "client", "grpc.example:443", ca.cert, "Allowed", "{}"], { timeoutMs: 30_000, env: { ...process.env, grpc_proxy: `http://${NODE_POD_SIDE}:1081` } });
    expect((JSON.parse(r.stdout) as GrpcResult).code).to.equal(14);
  });

  it("speaks HTTP/2 on both legs over IPv6 as over IPv4", async () => {
    const r = await curl(["-6", "--http2", "https://h2v6.example/v6"]);
    expect([r.status, r.version, r.body]).to.deep.equal([200, "2", "h2 GET /v6 h2v6.example"]);
  });

  describe("smuggling from an HTTP/2 stream into the HTTP/1.1 upstream leg", () => {
    const smuggled = (name: string) => `GET /smuggled-${name} HTTP/1.1\r\nhost: h1.example\r\n\r\n`;
    const pseudo = (path = "/a"): Array<[string, string]> => [[":method", "POST"], [":scheme", "https"], [":path", path], [":authority", "h1.example"]];
    const raw = async (headers: Array<[string, string]>, data?: string, reset = false) => {
      const spec = { host: "h1.example", servername: "h1.example", ca: ca.cert, streams: [{ headers, reset, ...(data === undefined ? {} : { data }) }] };
      const r = await world.pod.run(process.execPath, [RAW_CLIENT, JSON.stringify(spec)], { timeoutMs: 20_000 });
      if (r.code !== 0) throw new Error(`raw h2 client failed (${r.code}): ${r.stderr}`);
      return JSON.parse(r.stdout) as { streams: Array<{ answered: boolean; reset: number | null }>; goaway: number | null };
    };
    const seen = () => h1Server.lines.filter((l) => l.startsWith("seen "));

    it("control: a body holding a request line reaches the HTTP/1.1 server as body bytes of one request", async () => {
      const body = smuggled("control");
      const r = await raw([...pseudo("/control"), ["content-length", String(body.length)]], body);
      expect(r.streams[0]!.answered).to.equal(true);
      expect(seen()).to.include(`seen POST /control ${body.length}`);
      expect(seen().join("\n")).to.not.contain("/smuggled");
    });

    it("cuts the upstream request off when the client resets its stream mid-body (control: the same body ended is one whole request)", async () => {
      const before = seen().length;
      await raw(pseudo("/reset-mid-body"), "part of a body", true);
      // Time for the upstream to have seen a request, if one had been completed.
      await new Promise((r) => setTimeout(r, 500));
      expect(seen().slice(before).join("\n")).to.not.contain("/reset-mid-body");
      await raw(pseudo("/ended-body"), "part of a body");
      expect(seen().slice(before)).to.deep.equal(["seen POST /ended-body 14"]);
    });

    const attempts: Array<[string, Array<[string, string]>, string | undefined]> = [
      ["transfer-encoding: chunked ending the body early", [...pseudo("/te"), ["transfer-encoding", "chunked"]], `0\r\n\r\n${smuggled("te")}`],
      ["a content-length shorter than the DATA", [...pseudo("/cl"), ["content-length", "0"]], smuggled("cl")],
      ["CR LF inside a header value", [...pseudo("/crlf"), ["x-note", `a\r\n\r\n${smuggled("crlf")}`]], undefined],
      ["CR LF inside :path", pseudo(`/p HTTP/1.1\r\nhost: h1.example\r\n\r\n${smuggled("path")}`), undefined],
      ["CR LF inside :authority", [[":method", "GET"], [":scheme", "https"], [":path", "/auth"], [":authority", `h1.example\r\n\r\n${smuggled("authority")}`]], undefined],
      ["a connection header naming content-length", [...pseudo("/conn"), ["connection", "content-length"], ["content-length", "5"]], "12345"],
      ["an upper-case header name", [...pseudo("/upper"), ["Transfer-Encoding", "chunked"]], `0\r\n\r\n${smuggled("upper")}`],
    ];
    for (const [what, headers, data] of attempts) {
      it(`never lets ${what} start a request of its own upstream`, async () => {
        const before = seen().length;
        const r = await raw(headers, data);
        // Refused on the stream (RST_STREAM PROTOCOL_ERROR: transfer-encoding, a connection header, CR LF in a
        // pseudo-header, an upper-case name) or the session (GOAWAY: DATA beyond content-length), or sent as one
        // request without the field (nghttp2 drops a regular field whose value holds CR or LF).
        expect(r.streams[0]!.answered || r.streams[0]!.reset !== null || r.goaway !== null, JSON.stringify(r)).to.equal(true);
        const upstream = seen().slice(before);
        expect(upstream.join("\n")).to.not.contain("/smuggled");
        expect(upstream.length, upstream.join("\n")).to.be.at.most(1);
        // The proxy goes on serving.
        const after = await curl(["--http2", "https://h1.example/after"]);
        expect(after.status).to.equal(200);
      });
    }
  });
});
