// Request targets at the edges: default ports, Host agreeing with SNI, port bounds, and the messages
// a client gets back for each malformed form. Cases found by `npm run mutation`.
import { expect } from "chai";
import { resolveTarget, TargetError, type ConnectionInfo } from "../src/server/target.ts";
import { conn } from "./helpers.ts";

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
    const r = refusal(() => resolveTarget("/", undefined, ipSni));
    expect(r.status).to.equal(400);
    expect(r.message).to.equal('TLS server name "198.51.100.9" is an IP address; a TLS server name must be a DNS name (RFC 6066)');
  });

  it("treats an empty Host as no Host", () => {
    expect(resolveTarget("/", "", conn())).to.include({ host: "203.0.113.7", named: false });
  });

  it("reads absolute-form URLs: http only, IPv6 literals unbracketed, an origin-form path that contains a URL", () => {
    expect(resolveTarget("http://[2001:DB8::1]/p", undefined, standard())).to.deep.include({ host: "2001:db8::1", port: 80, url: "http://[2001:db8::1]/p", named: false });
    expect(refusal(() => resolveTarget("http://[2001:DB8::1]:8080/p", undefined, standard())).status).to.equal(403);
    expect(resolveTarget("http://example.com/p", undefined, standard())).to.include({ port: 80, url: "http://example.com/p" });
    expect(resolveTarget("/go?to=http://evil.example/", "example.com", conn())).to.include({ host: "example.com", path: "/go?to=http://evil.example/" });
    expect(refusal(() => resolveTarget("https://example.com/", undefined, standard()))).to.deep.equal({ status: 400, message: 'scheme "https" in the request URL does not fit this plain-HTTP connection (use CONNECT for https)' });
    expect(refusal(() => resolveTarget("ftp://example.com/", undefined, standard())).message).to.equal('scheme "ftp" in the request URL does not fit this plain-HTTP connection (use CONNECT for https)');
    expect(refusal(() => resolveTarget("http://exa mple.com/", undefined, standard()))).to.deep.equal({ status: 400, message: 'request URL host "exa mple.com" contains a space' });
  });

  it("says which part of a request is malformed", () => {
    const cases: Array<[string, string | undefined, string]> = [
      ["*", "example.com", "asterisk-form requests are not proxied"],
      ["nope", "example.com", 'request target "nope" does not start with "/"'],
      ["/", "bad host", 'Host header "bad host" contains a space'],
      ["/", "[::1", 'Host header "[::1" has "[" without "]"'],
      ["/", "[::1]80", 'Host header "[::1]80" has something other than ":port" after "]"'],
      ["/", "a.example:0", 'Host header "a.example:0" port "0" is not a port (1-65535, decimal digits, no leading zero)'],
      ["/", "a.example:65536", 'Host header "a.example:65536" port "65536" is not a port (1-65535, decimal digits, no leading zero)'],
      ["/", "a.example:x80", 'Host header "a.example:x80" port "x80" is not a port (1-65535, decimal digits, no leading zero)'],
      ["/", "a.example:80x", 'Host header "a.example:80x" port "80x" is not a port (1-65535, decimal digits, no leading zero)'],
      ["/", "a.example:", 'Host header "a.example:" port "" is not a port (1-65535, decimal digits, no leading zero)'],
      ["/", `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(63)}.example`, "is longer than 253 characters"],
    ];
    for (const [url, host, message] of cases) {
      const r = refusal(() => resolveTarget(url, host, conn()));
      expect(r.status, `${url} ${host}`).to.equal(400);
      expect(r.message, `${url} ${host}`).to.include(message);
    }
    expect(refusal(() => resolveTarget("*", undefined, conn())).message).to.equal("asterisk-form requests are not proxied");
  });
});
