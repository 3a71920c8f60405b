import { expect } from "chai";
import { canonicalHost, HostNameError, parseAuthority, parseCanonicalPort, type HostErrorReason, type HostSource } from "../src/policy/host-name.ts";

const SOURCES: HostSource[] = ["host-header", "absolute-url", "connect", "sni"];
const LONG_LABEL = "a".repeat(63);
const NAME_253 = [LONG_LABEL, LONG_LABEL, LONG_LABEL, "a".repeat(61)].join(".");

function refusal(fn: () => unknown): HostNameError {
  try {
    fn();
  } catch (e) {
    if (e instanceof HostNameError) return e;
    throw e;
  }
  throw new Error("expected a HostNameError, nothing was thrown");
}

describe("policy: host names", () => {
  describe("accepts and canonicalises names from every source", () => {
    for (const [raw, host] of [
      ["example.com", "example.com"],
      ["Example.COM", "example.com"],
      ["example.com.", "example.com"],
      ["localhost", "localhost"],
      ["_dmarc.example.com", "_dmarc.example.com"],
      ["xn--bcher-kva.example", "xn--bcher-kva.example"],
      ["a-b.c-d.example", "a-b.c-d.example"],
      ["0x1.example.com", "0x1.example.com"], // a hex-looking label that is not the last one
      ["123.example.com", "123.example.com"],
      ["example.0xg", "example.0xg"], // not hex: a name
      ["example.com1", "example.com1"],
      [`${LONG_LABEL}.example`, `${LONG_LABEL}.example`],
      [NAME_253, NAME_253],
    ] as const) {
      for (const source of SOURCES) {
        it(`${source}: ${raw.length > 40 ? `${raw.slice(0, 20)}…(${raw.length})` : raw} → ${host.length > 40 ? "same" : host}`, () => {
          expect(canonicalHost(raw, source)).to.deep.equal({ kind: "name", host });
        });
      }
    }
  });

  describe("accepts canonical IP literals except as a TLS server name", () => {
    for (const [raw, host, family] of [
      ["127.0.0.1", "127.0.0.1", 4],
      ["0.0.0.0", "0.0.0.0", 4],
      ["255.255.255.255", "255.255.255.255", 4],
      ["::1", "::1", 6],
      ["[::1]", "::1", 6],
      ["0:0:0:0:0:0:0:1", "::1", 6],
      ["2001:DB8::1", "2001:db8::1", 6],
      ["::ffff:127.0.0.1", "::ffff:7f00:1", 6],
    ] as const) {
      for (const source of ["host-header", "absolute-url", "connect"] as const) {
        it(`${source}: ${raw} → ${host}`, () => expect(canonicalHost(raw, source)).to.deep.equal({ kind: "ip", host, family }));
      }
      it(`sni: ${raw} refused (RFC 6066)`, () => {
        const e = refusal(() => canonicalHost(raw, "sni"));
        expect(e).to.include({ reason: "ip-literal-sni", status: 400, code: "ERR_HOST_NAME" });
        expect(e.message).to.match(/^TLS server name ".*" is an IP address; a TLS server name must be a DNS name \(RFC 6066\)$/);
      });
    }
  });

  describe("refuses what some reader would take for another host", () => {
    const cases: [string, HostErrorReason][] = [
      // number forms of IPv4 (inet_aton, WHATWG URL)
      ["127.1", "numeric-host"],
      ["127.0.1", "numeric-host"],
      ["2130706433", "numeric-host"],
      ["0x7f000001", "numeric-host"],
      ["0X7F000001", "numeric-host"],
      ["0x7f.0.0.1", "numeric-host"],
      ["0177.0.0.1", "numeric-host"],
      ["127.0.0.01", "numeric-host"],
      ["127.000.000.001", "numeric-host"],
      ["1.2.3.256", "numeric-host"],
      ["1.2.3.4.5", "numeric-host"],
      ["example.123", "numeric-host"],
      ["example.0x1f", "numeric-host"],
      ["example.0x", "numeric-host"],
      ["0", "numeric-host"],
      ["127.1.", "numeric-host"],
      ["1.2.3.4.", "trailing-dot-address"],
      // characters some parser splits on or decodes
      ["evil.example/good.example", "forbidden-character"],
      ["good.example@evil.example", "forbidden-character"],
      ["evil.example\\good.example", "forbidden-character"],
      ["evil%2eexample", "forbidden-character"],
      ["fe80::1%eth0", "forbidden-character"],
      ["[fe80::1%25eth0]", "forbidden-character"],
      ["good.example evil.example", "forbidden-character"],
      ["good.example\tevil", "forbidden-character"],
      ["good.example\r\nx: y", "forbidden-character"],
      ["good.example\u0000.evil", "forbidden-character"],
      ["good.example\u007f", "forbidden-character"],
      ["bücher.example", "forbidden-character"],
      ["ｅｘａｍｐｌｅ.com", "forbidden-character"],
      ["example。com", "forbidden-character"],
      // malformed names and addresses
      ["", "empty"],
      ["example..com", "malformed-name"],
      [".example.com", "malformed-name"],
      ["example.com..", "malformed-name"],
      [".", "malformed-name"],
      ["-example.com", "malformed-name"],
      ["exa_mple.-com", "malformed-name"],
      ["exa*mple.com", "malformed-name"],
      ["example.com#x", "malformed-name"],
      ["example.com?x", "malformed-name"],
      [`${"a".repeat(64)}.example`, "malformed-name"],
      [`${NAME_253}a`, "malformed-name"],
      ["example.com:80", "malformed-address"],
      ["[1.2.3.4]", "malformed-address"],
      ["[example.com]", "malformed-address"],
      ["1:2", "malformed-address"],
      [":::1", "malformed-address"],
      ["[::1", "malformed-address"],
    ];
    for (const [raw, reason] of cases) {
      for (const source of SOURCES) {
        it(`${source}: ${JSON.stringify(raw).slice(0, 50)} → ${reason}`, () => {
          const e = refusal(() => canonicalHost(raw, source));
          expect(e).to.include({ reason, status: 400, code: "ERR_HOST_NAME" });
          expect(e.message).to.include(JSON.stringify(raw));
        });
      }
    }
  });

  it("says what is wrong in its message", () => {
    expect(refusal(() => canonicalHost("127.1", "host-header")).message).to.equal(
      'Host header "127.1" would be read as an IPv4 address by some resolvers; write an IPv4 address as four decimal numbers (a.b.c.d) or use a name whose last label is not a number',
    );
    expect(refusal(() => canonicalHost("a\nb", "sni")).message).to.equal('TLS server name "a\\nb" contains control character U+000A');
    expect(refusal(() => canonicalHost("1.2.3.4.", "connect")).message).to.equal('CONNECT authority "1.2.3.4." is an IPv4 address with a trailing dot; write 1.2.3.4');
  });

  describe("ports", () => {
    for (const [text, port] of [["1", 1], ["80", 80], ["443", 443], ["65535", 65535]] as const) {
      it(`accepts ${text}`, () => expect(parseCanonicalPort(text)).to.equal(port));
    }
    for (const text of ["", "0", "00", "080", "0443", "65536", "99999", "100000", "+80", "-1", " 80", "80 ", "8o", "0x50", "1e3", "80.0", "８０"]) {
      it(`refuses ${JSON.stringify(text)}`, () => {
        expect(refusal(() => parseCanonicalPort(text))).to.include({ reason: "malformed-port", status: 400 });
      });
    }
  });

  describe("authorities (Host header, CONNECT)", () => {
    for (const [value, source, host, port] of [
      ["example.com", "host-header", { kind: "name", host: "example.com" }, undefined],
      ["Example.com.:8443", "host-header", { kind: "name", host: "example.com" }, 8443],
      ["[2001:db8::1]:8080", "host-header", { kind: "ip", host: "2001:db8::1", family: 6 }, 8080],
      ["[::1]", "host-header", { kind: "ip", host: "::1", family: 6 }, undefined],
      ["203.0.113.7:80", "host-header", { kind: "ip", host: "203.0.113.7", family: 4 }, 80],
      ["example.com:443", "connect", { kind: "name", host: "example.com" }, 443],
      ["[2001:db8::1]:443", "connect", { kind: "ip", host: "2001:db8::1", family: 6 }, 443],
      ["Example.com:81", "absolute-url", { kind: "name", host: "example.com" }, 81],
    ] as const) {
      it(`${source}: ${value}`, () => expect(parseAuthority(value, source)).to.deep.equal({ host, port }));
    }
    for (const [value, source, reason] of [
      ["example.com:", "host-header", "malformed-port"],
      ["example.com:080", "host-header", "malformed-port"],
      ["example.com:80:80", "host-header", "malformed-authority"],
      ["2001:db8::1", "host-header", "malformed-authority"],
      ["[2001:db8::1]80", "host-header", "malformed-authority"],
      ["[2001:db8::1", "host-header", "malformed-authority"],
      ["example.com", "connect", "malformed-authority"],
      ["[::1]", "connect", "malformed-authority"],
      ["127.1", "absolute-url", "numeric-host"],
      ["user:pass@example.com", "absolute-url", "forbidden-character"],
      ["example%2ecom", "absolute-url", "forbidden-character"],
      ["127.1:80", "connect", "numeric-host"],
      ["0x7f000001:443", "connect", "numeric-host"],
      ["[127.0.0.1]:80", "host-header", "malformed-address"],
      ["user@example.com:80", "connect", "forbidden-character"],
      ["example.com:80/x", "host-header", "malformed-port"],
      [":80", "host-header", "empty"],
    ] as const) {
      it(`${source}: ${value} → ${reason}`, () => {
        const e = refusal(() => parseAuthority(value, source));
        expect(e).to.include({ reason, status: 400 });
      });
    }
  });
});
