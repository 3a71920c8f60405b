// Request targets at the edges: default ports, Host agreeing with SNI, port bounds, and the messages
// a client gets back for each malformed form. Cases found by `npm run mutation`.
import { expect } from "chai";
import { resolveTarget, splitHostPort, TargetError, type ConnectionInfo } from "../src/server/target.ts";

const conn = (over: Partial<ConnectionInfo> = {}): ConnectionInfo => ({
  mode: "transparent",
  tls: false,
  client: { address: "10.0.0.2", port: 40000 },
  destination: { address: "203.0.113.7", port: 80 },
  sni: undefined,
  ...over,
});
const standard = (over: Partial<ConnectionInfo> = {}) => conn({ mode: "standard", destination: undefined, ...over });

function refusal(fn: () => unknown): { status: number; message: string } {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(TargetError);
    return { status: (err as TargetError).status, message: (err as TargetError).message };
  }
  throw new Error("expected a TargetError");
}

describe("request target edges", () => {
  it("accepts a Host that matches the TLS server name, trailing dots on either side included", () => {
    const tls = conn({ tls: true, sni: "example.com", destination: { address: "203.0.113.7", port: 443 } });
    expect(resolveTarget("/", "Example.com", tls)).to.deep.include({ host: "example.com", port: 443, url: "https://example.com/", named: true });
    expect(resolveTarget("/", "example.com.", tls)).to.deep.include({ host: "example.com", url: "https://example.com/" });
    expect(resolveTarget("/", "example.com", { ...tls, sni: "example.com." })).to.include({ host: "example.com" });
  });

  it("names the Host and the server name when they disagree", () => {
    const r = refusal(() => resolveTarget("/", "evil.example", conn({ tls: true, sni: "good.example" })));
    expect(r).to.deep.equal({ status: 421, message: 'Host "evil.example" does not match the TLS server name "good.example"' });
  });

  it("defaults to 443 for TLS and 80 for plain HTTP when neither Host nor destination has a port", () => {
    expect(resolveTarget("/", "example.com", standard({ tls: true }))).to.include({ port: 443, url: "https://example.com/" });
    expect(resolveTarget("/", "example.com", standard())).to.include({ port: 80, url: "http://example.com/" });
    expect(resolveTarget("/", undefined, standard({ tls: true, sni: "example.com" }))).to.include({ port: 443, host: "example.com" });
    expect(resolveTarget("/", "198.51.100.1", standard({ tls: true }))).to.include({ host: "198.51.100.1", port: 443, named: false });
    expect(resolveTarget("/", "example.com", conn({ destination: { address: "203.0.113.7", port: 8080 } }))).to.include({ port: 8080, url: "http://example.com:8080/" });
  });

  it("takes a TLS server name without Host, without its trailing dot, but not an IP-literal server name", () => {
    const noHost = conn({ tls: true, sni: "api.example.", destination: { address: "203.0.113.7", port: 443 } });
    expect(resolveTarget("/", undefined, noHost)).to.deep.include({ host: "api.example", named: true, url: "https://api.example/" });
    const ipSni = conn({ tls: true, sni: "198.51.100.9", destination: { address: "203.0.113.7", port: 443 } });
    expect(resolveTarget("/", undefined, ipSni)).to.include({ host: "203.0.113.7", named: false });
  });

  it("treats an empty Host as no Host", () => {
    expect(resolveTarget("/", "", conn())).to.include({ host: "203.0.113.7", named: false });
  });

  it("reads absolute-form URLs: http only, IPv6 literals unbracketed, an origin-form path that contains a URL", () => {
    expect(resolveTarget("http://[2001:DB8::1]:8080/p", undefined, standard())).to.deep.include({ host: "2001:db8::1", port: 8080, url: "http://[2001:db8::1]:8080/p", named: false });
    expect(resolveTarget("http://example.com/p", undefined, standard())).to.include({ port: 80, url: "http://example.com/p" });
    expect(resolveTarget("/go?to=http://evil.example/", "example.com", conn())).to.include({ host: "example.com", path: "/go?to=http://evil.example/" });
    expect(refusal(() => resolveTarget("https://example.com/", undefined, standard()))).to.deep.equal({ status: 400, message: 'unsupported scheme in "https://example.com/" (use CONNECT for https)' });
    expect(refusal(() => resolveTarget("ftp://example.com/", undefined, standard())).message).to.equal('unsupported scheme in "ftp://example.com/" (use CONNECT for https)');
    expect(refusal(() => resolveTarget("http://exa mple.com/", undefined, standard()))).to.deep.equal({ status: 400, message: 'malformed request URL "http://exa mple.com/"' });
  });

  it("says which part of a request is malformed", () => {
    const cases: Array<[string, string | undefined, string]> = [
      ["*", "example.com", "asterisk-form requests are not proxied"],
      ["nope", "example.com", 'malformed request target "nope"'],
      ["/", "bad host", 'malformed host name "bad host"'],
      ["/", "[::1", 'malformed Host "[::1"'],
      ["/", "[::1]80", 'malformed Host "[::1]80"'],
      ["/", "a.example:0", 'malformed port in "a.example:0"'],
      ["/", "a.example:65536", 'malformed port in "a.example:65536"'],
      ["/", "a.example:x80", 'malformed port in "a.example:x80"'],
      ["/", "a.example:80x", 'malformed port in "a.example:80x"'],
      ["/", "a.example:", 'malformed port in "a.example:"'],
      ["/", `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(63)}.example`, "malformed host name"],
    ];
    for (const [url, host, message] of cases) {
      const r = refusal(() => resolveTarget(url, host, conn()));
      expect(r.status, `${url} ${host}`).to.equal(400);
      expect(r.message, `${url} ${host}`).to.include(message);
    }
    expect(refusal(() => resolveTarget("*", undefined, conn())).message).to.equal("asterisk-form requests are not proxied");
  });

  it("splits host and port at the edges of the port range", () => {
    expect(splitHostPort(" Example.com:65535 ")).to.deep.equal({ host: "example.com", port: 65535 });
    expect(splitHostPort("example.com:1")).to.deep.equal({ host: "example.com", port: 1 });
    expect(splitHostPort("[2001:db8::1]")).to.deep.equal({ host: "2001:db8::1", port: undefined });
    expect(splitHostPort(":80")).to.deep.equal({ host: "", port: 80 });
    expect(splitHostPort(`${"a".repeat(63)}.example`)).to.deep.equal({ host: `${"a".repeat(63)}.example`, port: undefined });
  });
});
