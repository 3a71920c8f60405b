import { expect } from "chai";
import { resolveTarget, TargetError } from "../src/server/target.ts";
import { conn } from "./helpers.ts";


const fails = (f: () => unknown, status: number, reason: string) => expect(f).to.throw(TargetError).that.includes({ status, reason });

describe("request target", () => {
  it("judges on the Host name and connects by name; the upstream's Host is the canonical authority", () => {
    const t = resolveTarget("/a?b=1", "Storage.GoogleAPIs.com", conn());
    expect(t).to.deep.equal({ scheme: "http", host: "storage.googleapis.com", port: 80, path: "/a?b=1", url: "http://storage.googleapis.com/a?b=1", named: true, authority: "storage.googleapis.com" });
  });

  it("takes the port from the connection: a Host naming another port is misdirected (421), the same port is fine", () => {
    fails(() => resolveTarget("/", "example.com:8443", conn({ tls: true, destination: { address: "203.0.113.7", port: 443 } })), 421, "misdirected");
    fails(() => resolveTarget("/", "localhost:8080", conn()), 421, "misdirected");
    expect(resolveTarget("/", "example.com:443", conn({ tls: true, destination: { address: "203.0.113.7", port: 443 } })).url).to.equal("https://example.com/");
    expect(resolveTarget("/", "example.com", conn({ destination: { address: "203.0.113.7", port: 8080 } })).authority).to.equal("example.com:8080");
  });

  it("uses the original destination when the request names nothing", () => {
    const t = resolveTarget("/x", undefined, conn());
    expect(t).to.include({ host: "203.0.113.7", port: 80, url: "http://203.0.113.7/x", named: false });
    const literal = resolveTarget("/x", "198.51.100.1", conn());
    expect(literal).to.include({ host: "203.0.113.7", named: false, authority: "203.0.113.7" }, "an IP-literal Host is not trusted over the real destination");
  });

  it("uses SNI when Host is an IP literal, and refuses a Host that disagrees with SNI (421)", () => {
    expect(resolveTarget("/", "203.0.113.7", conn({ tls: true, sni: "example.com", destination: { address: "203.0.113.7", port: 443 } }))).to.include({ host: "example.com", named: true });
    fails(() => resolveTarget("/", "evil.example", conn({ tls: true, sni: "good.example" })), 421, "misdirected");
  });

  it("validates SNI with the Host rules (newline, slash, IP literal: 400 bad-sni)", () => {
    for (const sni of ["good.example\nforged", "storage.example/allowed-prefix/.evil.example", "127.0.0.1", "127.1"]) {
      fails(() => resolveTarget("/", undefined, conn({ tls: true, sni })), 400, "bad-sni");
    }
  });

  it("reads absolute-form authorities as written; standard mode allows only the allowed ports", () => {
    const std = conn({ mode: "standard", destination: undefined });
    expect(resolveTarget("http://example.com/p?q", "ignored.example", std)).to.include({ url: "http://example.com/p?q", authority: "example.com" });
    fails(() => resolveTarget("http://example.com:81/p", undefined, std), 403, "port-not-allowed");
    expect(resolveTarget("http://example.com:81/p", undefined, std, { allowedPorts: new Set([81]) }).url).to.equal("http://example.com:81/p");
    fails(() => resolveTarget("http://127.1/", undefined, std), 400, "bad-host");
    fails(() => resolveTarget("https://example.com/", undefined, std), 400, "bad-request");
    expect(resolveTarget("/", undefined, conn({ destination: { address: "2001:db8::5", port: 80 } })).url).to.equal("http://[2001:db8::5]/");
  });

  it("normalises the path the filter sees and the upstream gets", () => {
    expect(resolveTarget("/allowed-prefix/../secret.txt", "example.com", conn()).path).to.equal("/secret.txt");
    expect(resolveTarget("/allowed-prefix/%2e%2e/secret.txt", "example.com", conn()).url).to.equal("http://example.com/secret.txt");
    fails(() => resolveTarget("/allowed-prefix/..%2fsecret.txt", "example.com", conn()), 400, "bad-path");
  });

  it("rejects malformed targets with 400", () => {
    for (const [url, host] of [["/", "bad host"], ["/", "a:99999"], ["nope", "example.com"], ["*", "example.com"], ["/", "[::1"], ["/", "2130706433"], ["/", "0x7f000001"], ["/", "127.1"]] as const) {
      expect(() => resolveTarget(url, host, conn()), `${url} ${host}`).to.throw(TargetError).with.property("status", 400);
    }
    expect(() => resolveTarget("/", undefined, conn({ destination: undefined }))).to.throw(/names no host/);
  });
});
