// decide(): every request form over every kind of connection ends in "answer" or "forward to exactly this target",
// and the target forwarded to is the one the filter saw.
import { expect } from "chai";
import { decide, type DecideDeps, type Decision, type RequestHead } from "../src/server/decide.ts";
import { AddressPolicy } from "../src/policy/address-policy.ts";
import { DEFAULT_TARGET_RULES, type ConnectionInfo, type Target } from "../src/server/target.ts";

const NODE = "10.0.0.1";
const transparent = (port: number, tls = false, sni?: string, address = "203.0.113.7"): ConnectionInfo => ({
  mode: "transparent", tls, client: { address: "10.0.0.2", port: 40000 }, destination: { address, port }, sni,
});
const standard = (tunnel?: { address: string; port: number }, sni?: string): ConnectionInfo => ({
  mode: "standard", tls: tunnel !== undefined, client: { address: "10.0.0.2", port: 40000 }, destination: tunnel, sni,
});
const head = (url: string, host: string | undefined, upgrade = false): RequestHead => ({
  method: "GET", url, upgrade, headers: { ...(host === undefined ? {} : { host }), ...(upgrade ? { upgrade: "websocket", connection: "Upgrade" } : {}) },
});

/** An HTTP/2 stream's head as the interceptor builds it: no pseudo-headers among the headers. */
const h2 = (path: string, authority: string | undefined, headers: Record<string, string> = {}, scheme = "https"): RequestHead => ({
  method: "GET", url: path, upgrade: false, headers, h2: { authority, scheme },
});

/** A filter that allows everything (the audit filter) and records what it judged. */
function deps(judged: Target[]): DecideDeps {
  return {
    rules: DEFAULT_TARGET_RULES,
    policy: new AddressPolicy({ nodeAddresses: () => [NODE, "127.0.0.1", "::1"], listenerPorts: [8080, 1080, 9090], blockedCidrs: ["10.96.0.0/12"] }),
    probeAddress: "192.0.2.1",
    filter: async (target, headers) => {
      judged.push(target);
      return { kind: "pass", headers };
    },
  };
}

type Expect = { forward: string; host?: string } | { status: number; reason: string | RegExp };

const CASES: Array<[string, RequestHead, ConnectionInfo, Expect]> = [
  // origin-form, transparent
  ["origin-form by name", head("/a", "example.com"), transparent(80), { forward: "http://example.com/a", host: "example.com" }],
  ["origin-form over TLS, SNI and Host agree", head("/a", "example.com"), transparent(443, true, "example.com"), { forward: "https://example.com/a" }],
  ["origin-form, no Host: original destination", head("/a", undefined), transparent(80), { forward: "http://203.0.113.7/a" }],
  ["IP-literal Host is replaced by the original destination", head("/", "198.51.100.1"), transparent(80), { forward: "http://203.0.113.7/", host: "203.0.113.7" }],
  ["Host names another port (transparent): 421", head("/", "example.com:8081"), transparent(80), { status: 421, reason: "misdirected" }],
  ["Host: localhost:8080 does not loop: 421", head("/", "localhost:8080"), transparent(80), { status: 421, reason: "misdirected" }],
  ["Host 127.1: 400", head("/", "127.1"), transparent(80), { status: 400, reason: "bad-host" }],
  ["Host 2130706433: 400", head("/", "2130706433"), transparent(80), { status: 400, reason: "bad-host" }],
  ["Host 0x7f000001: 400", head("/", "0x7f000001"), transparent(80), { status: 400, reason: "bad-host" }],
  ["redirected to loopback: 403 loopback", head("/", undefined), transparent(80, false, undefined, "127.0.0.1"), { status: 403, reason: "address: loopback" }],
  ["redirected to metadata: 403", head("/", "169.254.169.254"), transparent(80, false, undefined, "169.254.169.254"), { status: 403, reason: "address: metadata" }],
  ["redirected to the node: 403", head("/", undefined), transparent(80, false, undefined, NODE), { status: 403, reason: "address: node-address" }],
  ["redirected into the blocked range: 403", head("/", undefined), transparent(443, true, undefined, "10.96.0.1"), { status: 403, reason: "address: blocked-cidr" }],
  ["SNI with a newline: 400", head("/", undefined), transparent(443, true, "a.example\nforged"), { status: 400, reason: "bad-sni" }],
  ["SNI with a slash: 400", head("/", undefined), transparent(443, true, "storage.example/allowed-prefix/.evil.example"), { status: 400, reason: "bad-sni" }],
  ["path traversal is normalised", head("/allowed-prefix/../secret.txt", "example.com"), transparent(80), { forward: "http://example.com/secret.txt" }],
  ["encoded traversal is normalised", head("/allowed-prefix/%2e%2e/secret.txt", "example.com"), transparent(80), { forward: "http://example.com/secret.txt" }],
  ["traversal through %2f: 400", head("/allowed-prefix/..%2fsecret.txt", "example.com"), transparent(80), { status: 400, reason: "bad-path" }],
  // absolute-form
  ["absolute-form in transparent mode, same host and port", head("http://example.com/x", "other.example"), transparent(80), { forward: "http://example.com/x", host: "example.com" }],
  ["absolute-form to another port (transparent): 421", head("http://other.example:2222/ws", "example.com"), transparent(80), { status: 421, reason: "misdirected" }],
  ["absolute-form http:// on a TLS connection: 400", head("http://example.com/", "example.com"), transparent(443, true, "example.com"), { status: 400, reason: "bad-request" }],
  ["standard absolute-form", head("http://example.com/x", undefined), standard(), { forward: "http://example.com/x" }],
  ["standard absolute-form to port 2222: 403", head("http://example.com:2222/x", undefined), standard(), { status: 403, reason: "port-not-allowed" }],
  ["standard absolute-form to the node's listener: 403", head(`http://${NODE}/x`, undefined), standard(), { status: 403, reason: "address: node-address" }],
  ["standard CONNECT tunnel", head("/x", "example.com"), standard({ address: "example.com", port: 443 }, "example.com"), { forward: "https://example.com/x" }],
  ["standard CONNECT to port 22: 403", head("/x", "example.com"), standard({ address: "example.com", port: 22 }, "example.com"), { status: 403, reason: "port-not-allowed" }],
  ["standard CONNECT to one name, Host another: 421", head("/x", "other.example"), standard({ address: "example.com", port: 443 }, "other.example"), { status: 421, reason: "misdirected" }],
  // upgrades
  ["upgrade, origin-form", head("/ws", "example.com", true), transparent(80), { forward: "http://example.com/ws" }],
  ["upgrade, absolute-form to another host and port: 421", head("http://other.example:2222/ws", "example.com", true), transparent(80), { status: 421, reason: "misdirected" }],
  ["upgrade over TLS, absolute-form to another port: 421", head("https://example.com:2222/ws", "example.com", true), transparent(443, true, "example.com"), { status: 421, reason: "misdirected" }],
  ["upgrade over TLS, absolute-form naming the SNI host: judged on it", head("https://example.com/ws", "example.com", true), transparent(443, true, "example.com"), { forward: "https://example.com/ws" }],
  ["upgrade over TLS, absolute-form naming a host other than SNI: 421", head("https://other.example/ws", "example.com", true), transparent(443, true, "example.com"), { status: 421, reason: "misdirected" }],
  ["non-WebSocket upgrade: 400", { ...head("/", "example.com", true), headers: { host: "example.com", upgrade: "h2c" } }, transparent(80), { status: 400, reason: "bad-upgrade" }],
  // HTTP/2 streams: :authority is the claim, as Host is
  ["h2: :authority agrees with SNI", h2("/a", "example.com"), transparent(443, true, "example.com"), { forward: "https://example.com/a", host: "example.com" }],
  ["h2: :authority names another host than SNI (coalescing): 421", h2("/a", "other.example"), transparent(443, true, "example.com"), { status: 421, reason: "misdirected" }],
  ["h2: :authority names another port: 421", h2("/a", "example.com:8443"), transparent(443, true, "example.com"), { status: 421, reason: "misdirected" }],
  ["h2: a Host agreeing with SNI cannot hide a different :authority: 400", h2("/a", "other.example", { host: "example.com" }), transparent(443, true, "example.com"), { status: 400, reason: "bad-host" }],
  ["h2: absolute :path: 400", h2("https://other.example/a", "example.com"), transparent(443, true, "example.com"), { status: 400, reason: "bad-path" }],
  ["h2: :scheme http on TLS: 400", h2("/a", "example.com", {}, "http"), transparent(443, true, "example.com"), { status: 400, reason: "bad-request" }],
  ["h2: CONNECT: 501", { ...h2("", "example.com:443"), method: "CONNECT" }, transparent(443, true, "example.com"), { status: 501, reason: "bad-request" }],
  ["h2: dot-segments normalised as for HTTP/1.1", h2("/x/../a/%2e%2e/b", "example.com"), transparent(443, true, "example.com"), { forward: "https://example.com/b" }],
];

describe("decide(): one decision for every request form", () => {
  for (const [name, h, conn, want] of CASES) {
    it(name, async () => {
      const judged: Target[] = [];
      const d: Decision = await decide(h, conn, deps(judged));
      if ("forward" in want) {
        expect(d.kind, JSON.stringify(d)).to.equal("forward");
        if (d.kind !== "forward") return;
        expect(d.target.url).to.equal(want.forward);
        expect(judged, "the filter judged exactly the forwarded target").to.deep.equal([d.target]);
        expect(d.headers.host, "the upstream's Host is the judged authority").to.equal(want.host ?? d.target.authority);
      } else {
        expect(d.kind, JSON.stringify(d)).to.equal("answer");
        if (d.kind !== "answer") return;
        expect(d.answer.status).to.equal(want.status);
        expect(d.reason).to.match(typeof want.reason === "string" ? new RegExp(`^${want.reason}$`) : want.reason);
        // The address policy applies after the filter allowed (this filter allows everything); the rest is refused before it.
        expect(judged, "what the filter judged").to.deep.equal(d.reason.startsWith("address: ") ? [d.target] : []);
      }
    });
  }

  it("answers the readiness probe itself, only for plain HTTP to the probe address on port 80", async () => {
    const judged: Target[] = [];
    const d = await decide(head("/", "192.0.2.1"), transparent(80, false, undefined, "192.0.2.1"), deps(judged));
    expect(d).to.include({ kind: "answer", reason: "probe" });
    const other = await decide(head("/", "192.0.2.1"), transparent(443, true, undefined, "192.0.2.1"), deps(judged));
    expect(other.kind).to.equal("forward");
  });

  it("the filter's answer is the answer; the filter cannot move the Host off the target", async () => {
    const d1 = await decide(head("/", "example.com"), transparent(80), { ...deps([]), filter: async () => ({ kind: "answer", answer: { status: 418, body: "no", headers: {} }, reason: "filter" }) });
    expect(d1).to.deep.include({ kind: "answer", reason: "filter" });
    const d2 = await decide(head("/", "example.com"), transparent(80), { ...deps([]), filter: async (_t, headers) => ({ kind: "pass", headers: { ...headers, host: "localhost" } }) });
    expect(d2.kind === "forward" && d2.headers.host).to.equal("example.com");
  });
});
