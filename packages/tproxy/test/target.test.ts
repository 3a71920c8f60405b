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

describe("request target", () => {
  it("judges on the Host name and connects by name", () => {
    const t = resolveTarget("/a?b=1", "Storage.GoogleAPIs.com", conn());
    expect(t).to.deep.equal({ scheme: "http", host: "storage.googleapis.com", port: 80, path: "/a?b=1", url: "http://storage.googleapis.com/a?b=1", named: true });
  });

  it("keeps an explicit port in the URL and defaults to the original destination's port", () => {
    expect(resolveTarget("/", "example.com:8443", conn({ tls: true })).url).to.equal("https://example.com:8443/");
    expect(resolveTarget("/", "example.com", conn({ tls: true, destination: { address: "203.0.113.7", port: 443 } })).url).to.equal("https://example.com/");
  });

  it("uses the original destination when the request names nothing", () => {
    const t = resolveTarget("/x", undefined, conn());
    expect(t).to.include({ host: "203.0.113.7", port: 80, url: "http://203.0.113.7/x", named: false });
    const literal = resolveTarget("/x", "198.51.100.1", conn());
    expect(literal).to.include({ host: "203.0.113.7", named: false }, "an IP-literal Host is not trusted over the real destination");
  });

  it("uses SNI when Host is an IP literal", () => {
    expect(resolveTarget("/", "203.0.113.7", conn({ tls: true, sni: "example.com", destination: { address: "203.0.113.7", port: 443 } }))).to.include({ host: "example.com", named: true });
  });

  it("refuses a Host that disagrees with SNI (421)", () => {
    expect(() => resolveTarget("/", "evil.example", conn({ tls: true, sni: "good.example" }))).to.throw(TargetError).with.property("status", 421);
  });

  it("reads absolute-form (explicit proxy) URLs, brackets IPv6", () => {
    expect(resolveTarget("http://example.com:81/p?q", "ignored.example", conn({ mode: "standard", destination: undefined })).url).to.equal("http://example.com:81/p?q");
    expect(resolveTarget("/", undefined, conn({ destination: { address: "2001:db8::5", port: 80 } })).url).to.equal("http://[2001:db8::5]/");
  });

  it("rejects malformed targets with 400", () => {
    for (const [url, host] of [["/", "bad host"], ["/", "a:99999"], ["nope", "example.com"], ["*", "example.com"], ["/", "[::1"]] as const) {
      expect(() => resolveTarget(url, host, conn()), `${url} ${host}`).to.throw(TargetError).with.property("status", 400);
    }
    expect(() => resolveTarget("/", undefined, conn({ destination: undefined }))).to.throw(/names no host/);
  });

  it("splits host and port, IPv6 included", () => {
    expect(splitHostPort("[2001:db8::1]:8080")).to.deep.equal({ host: "2001:db8::1", port: 8080 });
    expect(splitHostPort("2001:db8::1")).to.deep.equal({ host: "2001:db8::1", port: undefined });
    expect(splitHostPort("Example.com:80")).to.deep.equal({ host: "example.com", port: 80 });
  });
});
