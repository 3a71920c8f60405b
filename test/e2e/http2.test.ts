// HTTP/2 and gRPC from a locked pod, end to end: the real lock (sidecar-init), podwatch's REDIRECT and the proxy
// (with --http2), and real clients in the pod: curl --http2 and a @grpc/grpc-js client (test/support/grpc-echo.ts)
// calling a real gRPC server outside. Every stream is judged by the filter on its own: the tutorial's filter, plus
// rules for the gRPC host. Each refusal has its control: the same call from the unlocked pod, which has no proxy in
// its way, succeeds; so the refusal came from the proxy (or the lock), not from a missing server.
import { expect } from "chai";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { waitFor } from "../support/netns.ts";
import { TestCa } from "../support/pki.ts";
import { REPO } from "../support/world.ts";
import { BUCKET_URL, CHART_FILTER, GOOGLE_IP, TutorialWorld, type PodNs, TUTORIAL_HOSTS } from "../support/tutorial-world.ts";
import { wiringTitle } from "../support/datapath.ts";

const PREFIX = "tpg";
const GRPC_ECHO = join(REPO, "test/support/grpc-echo.ts");
const H2_CLIENT = join(REPO, "packages/tproxy/test/h2-client.ts");
/** The gRPC server's address, on the internet's uplink next to the tutorial's servers. */
const GRPC_IP = "10.90.2.50";
/** A port the lock does not send to the proxy: gRPC servers often listen on one like it. */
const GRPC_OTHER_PORT = 50051;
const DENIED_TEXT = "method test.Echo/Denied is not allowed by policy";
// The tutorial's names (tutorial-world.ts) and the gRPC server's.
const HOSTS = {
  ...TUTORIAL_HOSTS,
  "grpc.example": GRPC_IP,
};

/**
 * The tutorial's filter with a rule for the gRPC host put first: its methods are allowed except test.Echo/Denied.
 * Everything else still meets the tutorial's rule (the bucket allowed, the rest 418).
 */
function suiteFilter(): string {
  const tutorial = readFileSync(CHART_FILTER, "utf8");
  const anchor = "  request(flow) {\n";
  if (!tutorial.includes(anchor)) throw new Error(`${CHART_FILTER} no longer has "${anchor.trim()}": update this suite's filter`);
  const grpcRule = [
    `    if (flow.request.host === "grpc.example") {`,
    `      if (flow.request.path === "/test.Echo/Denied") flow.respond(403, ${JSON.stringify(DENIED_TEXT)});`,
    `      return;`,
    `    }`,
  ].join("\n");
  return tutorial.replace(anchor, `${anchor}${grpcRule}\n`);
}

interface GrpcResult {
  code: number;
  details: string;
  messages: unknown[];
  trailer: string | undefined;
}

describe(`HTTP/2 and gRPC from a locked pod (namespaces, ${wiringTitle()}; Kubernetes API stand-in)`, function () {
  this.timeout(60_000);
  let world: TutorialWorld;
  let grpcCa: TestCa;

  before(async function () {
    this.timeout(120_000);
    await TutorialWorld.removeLeftovers(PREFIX);
    world = await TutorialWorld.create(PREFIX);
    for (const ns of [world.node, world.app.ns, world.locked.ns]) ns.hosts(HOSTS);
    // The gRPC server, on 443 (where the lock sends a pod's TLS to the proxy) and on another port (where it does not).
    const uplink = (await world.internet.must("ip", ["-o", "-4", "addr", "show", "to", `${GOOGLE_IP}/32`])).split(/\s+/)[1]!;
    await world.internet.must("ip", ["addr", "add", `${GRPC_IP}/24`, "dev", uplink]);
    grpcCa = new TestCa(world.dir, "grpc");
    const cert = grpcCa.issue("grpc-example", ["grpc.example", GRPC_IP]);
    for (const port of [443, GRPC_OTHER_PORT]) {
      await world.spawn(world.internet, process.execPath, [GRPC_ECHO, "server", GRPC_IP, String(port), cert.certPath, cert.keyPath]).waitForLine(/^listening/);
    }
    // The proxy trusts the gRPC server's CA as it trusts the web's roots; --http2 offers h2 to the pods.
    await world.installTproxy({ filterSource: suiteFilter(), proxyArgs: ["--http2", "--upstream-ca", grpcCa.certPath] });
    world.schedulePod(world.app, false);
    const init = await world.deployLocked();
    if (init.child.exitCode !== 0) throw new Error(`sidecar-init exited ${init.child.exitCode}:\n${init.output}`);
  });
  after(async () => {
    await world?.close();
  });

  /**
   * One gRPC call from a pod. The locked pod trusts the tproxy CA (its root-certs mount), the unlocked one the
   * server's CA; `trustServer` makes the locked pod trust the server's CA too, for attempts around the proxy.
   */
  const grpcCall = async (pod: PodNs, target: string, method: string, request: Record<string, unknown> = {}, trustServer = false): Promise<GrpcResult> => {
    const trust = pod === world.locked && !trustServer ? world.ca.cert : grpcCa.certPath;
    const r = await pod.ns.run(process.execPath, [GRPC_ECHO, "client", target, trust, method, JSON.stringify(request)], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`gRPC client in ${pod.name} exited ${r.code}: ${r.stderr}`);
    // The first line: a streaming call that fails may report twice (its error, then its end).
    return JSON.parse(r.stdout.split("\n")[0]!) as GrpcResult;
  };

  /** curl from a pod: one `status version connects` line per URL (connects is 0 when curl reused a connection). */
  const curlLines = async (pod: PodNs, args: string[], urls: string[]): Promise<string[]> => {
    const r = await world.curlFrom(pod, ["-w", "%{http_code} %{http_version} %{num_connects}\\n", ...args, ...urls.flatMap((u) => ["-o", "/dev/null", u])]);
    return r.stdout.split("\n").filter((l) => l !== "");
  };

  /** Waits for the proxy's log line for a request (written as the answer goes out, so maybe after the client read it). */
  const logged = async (pattern: RegExp): Promise<void> => {
    await waitFor(`a proxy log line matching ${pattern}`, () => world.proxy!.lines.some((l) => pattern.test(l)), 5000, 50).catch((err: Error) => {
      throw new Error(`${err.message}; proxy log:\n${world.proxy!.lines.slice(-10).join("\n")}`);
    });
  };

  describe("curl --http2", () => {
    it("gets 200 for the allowed bucket and the filter's 418 for another site, both over HTTP/2", async () => {
      expect(await curlLines(world.locked, ["--http2"], [BUCKET_URL])).to.deep.equal(["200 2 1"]);
      expect(await curlLines(world.locked, ["--http2"], ["https://www.google.com/"])).to.deep.equal(["418 2 1"]);
      await logged(/GET https:\/\/storage\.googleapis\.com\/solutions-public-assets\/ -> 200 .* allowed h2/);
      await logged(/GET https:\/\/www\.google\.com\/ -> 418 .* denied \(filter\) h2/);
    });

    it("judges each request on one HTTP/2 connection on its own (allowed, denied, allowed)", async () => {
      const one = [`${BUCKET_URL}a`, "https://storage.googleapis.com/private/b", `${BUCKET_URL}c`];
      // One after another: curl reuses the connection (no new connect after the first).
      expect(await curlLines(world.locked, ["--http2"], one)).to.deep.equal(["200 2 1", "418 2 0", "200 2 0"]);
      // The proxy saw the three on one client connection (one source port), each with its own verdict.
      const port = async (path: string, verdict: string): Promise<string> => {
        const pattern = new RegExp(`:(\\d+) GET https://storage\\.googleapis\\.com${path.replace(/\./g, "\\.")} -> ${verdict} .* h2`);
        await logged(pattern);
        return pattern.exec(world.proxy!.lines.find((l) => pattern.test(l))!)![1]!;
      };
      const ports = [await port(new URL(one[0]!).pathname, "200"), await port("/private/b", "418"), await port(new URL(one[2]!).pathname, "200")];
      expect(new Set(ports).size, `client ports ${ports.join(", ")}`).to.equal(1);
      // Side by side: curl multiplexes the streams on one connection (one connect among the three).
      const side = [`${BUCKET_URL}d`, "https://storage.googleapis.com/private/e", `${BUCKET_URL}f`];
      const parallel = await curlLines(world.locked, ["--http2", "--parallel", "--parallel-max", "3"], side);
      expect(parallel.map((l) => l.split(" ").slice(0, 2).join(" ")).sort()).to.deep.equal(["200 2", "200 2", "418 2"]);
      expect(parallel.map((l) => l.split(" ")[2]).sort(), parallel.join("; ")).to.deep.equal(["0", "0", "1"]);
    });

    it("refuses a stream whose :authority is not the TLS server name with 421; matching ones are judged (control)", async () => {
      // The escape it stops: TLS to a denied site, the stream claiming the allowed bucket's name.
      const bucketPath = new URL(BUCKET_URL).pathname;
      const h2 = async (servername: string, authorities: string[]) => {
        const spec = { mode: "requests", host: servername, servername, ca: world.ca.cert, requests: authorities.map((authority) => ({ path: bucketPath, authority })) };
        return JSON.parse(await world.locked.ns.must(process.execPath, [H2_CLIENT, JSON.stringify(spec)], { timeoutMs: 20_000 })) as Array<{ status: number; body: string }>;
      };
      const mixed = await h2("www.google.com", ["storage.googleapis.com", "www.google.com"]);
      expect(mixed.map((r) => r.status), JSON.stringify(mixed)).to.deep.equal([421, 418]);
      expect(mixed[0]!.body).to.match(/"storage\.googleapis\.com" does not match the TLS server name "www\.google\.com"/);
      // Control: the same :authority with its own server name is allowed.
      expect((await h2("storage.googleapis.com", ["storage.googleapis.com"])).map((r) => r.status)).to.deep.equal([200]);
      // curl too: its Host header becomes the stream's :authority.
      expect(await curlLines(world.locked, ["--http2", "-H", "Host: storage.googleapis.com"], [`https://www.google.com${bucketPath}`])).to.deep.equal(["421 2 1"]);
      // Logged without a host: the request named none the proxy accepts. One line for h2-client's stream, one for curl's.
      const misdirected = /GET \/solutions-public-assets\/ -> 421 .* denied \(misdirected\) h2$/;
      await waitFor("two misdirected lines in the proxy log", () => world.proxy!.lines.filter((l) => misdirected.test(l)).length === 2, 5000, 50);
    });
  });

  describe("gRPC (@grpc/grpc-js client in the pod, server outside)", () => {
    it("an allowed method answers with its message and trailing metadata", async () => {
      const r = await grpcCall(world.locked, "grpc.example:443", "Allowed", { msg: "hello" });
      expect(r).to.deep.equal({ code: 0, details: "", messages: [{ echo: "hello", server: "grpc-echo" }], trailer: "kept" });
      await logged(/POST https:\/\/grpc\.example\/test\.Echo\/Allowed -> 200 .* allowed h2/);
    });

    it("a denied method gets PERMISSION_DENIED (7) with the filter's message; from the unlocked pod it succeeds (control)", async () => {
      const denied = await grpcCall(world.locked, "grpc.example:443", "Denied", { msg: "hello" });
      // No trailer key: the answer is the proxy's own, nothing of the server's.
      expect(denied).to.deep.equal({ code: 7, details: DENIED_TEXT, messages: [] });
      await logged(/POST https:\/\/grpc\.example\/test\.Echo\/Denied -> 403 .* denied \(filter\) h2 grpc-status=7/);
      const direct = await grpcCall(world.app, "grpc.example:443", "Denied", { msg: "hello" });
      expect(direct).to.deep.equal({ code: 0, details: "", messages: [{ echo: "hello", server: "grpc-echo" }], trailer: "kept" });
    });

    it("a server-streaming method streams its messages, then its status and trailers", async () => {
      const r = await grpcCall(world.locked, "grpc.example:443", "Stream", { n: 5 });
      expect(r).to.deep.equal({ code: 0, details: "", messages: [0, 1, 2, 3, 4].map((i) => ({ i })), trailer: "kept" });
    });

    it(`a call that skips the proxy (port ${GRPC_OTHER_PORT}, by name or by address) is refused by the lock; the unlocked pod reaches it (control)`, async () => {
      for (const target of [`grpc.example:${GRPC_OTHER_PORT}`, `${GRPC_IP}:${GRPC_OTHER_PORT}`]) {
        // The locked pod trusts the server's CA here, so only the lock can be what stops it.
        const r = await grpcCall(world.locked, target, "Denied", {}, true);
        expect(r.code, `${target}: ${JSON.stringify(r)}`).to.equal(14); // UNAVAILABLE: no connection
        // The lock answers a SYN to any port but the proxied ones with a reset.
        expect(r.details, target).to.include(`connect ECONNREFUSED ${GRPC_IP}:${GRPC_OTHER_PORT}`);
        expect(r.messages).to.deep.equal([]);
        const direct = await grpcCall(world.app, target, "Denied", { msg: "direct" });
        expect(direct.code, `${target} from the unlocked pod: ${JSON.stringify(direct)}`).to.equal(0);
        expect(direct.messages).to.deep.equal([{ echo: "direct", server: "grpc-echo" }]);
      }
      expect(world.proxy!.output).to.not.include(`:${GRPC_OTHER_PORT}`);
    });
  });
});
