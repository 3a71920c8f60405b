import { expect } from "chai";
import { normalizeRequestTarget, removeDotSegments, RequestPathError, type PathErrorReason } from "../src/policy/request-path.ts";

function refusal(target: string): RequestPathError {
  try {
    normalizeRequestTarget(target);
  } catch (e) {
    if (e instanceof RequestPathError) return e;
    throw e;
  }
  throw new Error(`expected ${JSON.stringify(target)} to be refused`);
}

describe("policy: request path", () => {
  describe("normalises what a filter and an upstream could read differently", () => {
    for (const [target, path] of [
      // already normal: untouched
      ["/", "/"],
      ["/a/b/c", "/a/b/c"],
      ["/a/b/", "/a/b/"],
      ["/a%20b", "/a%20b"],
      ["/a%2Fb", "/a%2Fb"],
      ["/a%5Cb", "/a%5Cb"],
      ["/...", "/..."],
      ["/a/.../b", "/a/.../b"],
      ["/.well-known/x", "/.well-known/x"],
      ["/a..b/c.", "/a..b/c."],
      ["/a;b=c/d", "/a;b=c/d"],
      // climbing out of an allowed prefix
      ["/allowed-prefix/../secret.txt", "/secret.txt"],
      ["/allowed/%2e%2e/secret", "/secret"],
      ["/allowed/%2E%2e/secret", "/secret"],
      ["/allowed/.%2e/secret", "/secret"],
      ["/allowed/%2e./secret", "/secret"],
      ["/allowed/x/%2E%2E/%2e%2E/secret", "/secret"],
      ["/allowed/./secret", "/allowed/secret"],
      ["/allowed/%2e/secret", "/allowed/secret"],
      ["/../../etc/passwd", "/etc/passwd"],
      ["/a/..", "/"],
      ["/a/.", "/a/"],
      ["/a/b/..", "/a/"],
      ["/..", "/"],
      ["/.", "/"],
      // slashes merged before dot segments are removed
      ["/a//../b", "/b"],
      ["//a///b//", "/a/b/"],
      ["/allowed//..//..//secret", "/secret"],
      ["/a/%2F/b", "/a/%2F/b"],
      // unreserved escapes decoded, others upper-cased
      ["/%7euser/%41%62c", "/~user/Abc"],
      ["/a%2fb%5cc%3f", "/a%2Fb%5Cc%3F"],
      ["/%2D%2e%5F%7E", "/-._~"],
      ["/a%252e", "/a%252e"], // "2e" after %25 is text, not an escape
      ["/a%25", "/a%25"],
      // the query is kept byte for byte
      ["/a/../b?x=/../y&%2e%2e=%7e", "/b?x=/../y&%2e%2e=%7e"],
      ["/a?", "/a?"],
      ["/a?b?c", "/a?b?c"],
      ["/a?%zz", "/a?%zz"],
      ["/a?\\..\\", "/a?\\..\\"],
      ["/a?é", "/a?é"],
    ] as const) {
      it(`${target} → ${path}`, () => {
        expect(normalizeRequestTarget(target)).to.deep.equal({ path, changed: path !== target });
      });
    }
  });

  describe("refuses a target some server would still read as climbing", () => {
    const cases: [string, PathErrorReason][] = [
      ["/allowed%2F..%2Fsecret", "ambiguous-dot-segment"],
      ["/allowed%2f..%2fsecret", "ambiguous-dot-segment"],
      ["/allowed%2F%2e%2e%2Fsecret", "ambiguous-dot-segment"],
      ["/allowed%5C..%5Csecret", "ambiguous-dot-segment"],
      ["/allowed\\..\\secret", "ambiguous-dot-segment"],
      ["/allowed/..\\secret", "ambiguous-dot-segment"],
      ["/allowed\\../secret", "ambiguous-dot-segment"],
      ["/allowed/..%2Fsecret", "ambiguous-dot-segment"],
      ["/allowed%2F.%2Fsecret", "ambiguous-dot-segment"],
      ["/allowed/..;/secret", "ambiguous-dot-segment"],
      ["/allowed/..;jsessionid=x/secret", "ambiguous-dot-segment"],
      ["/allowed/.;/secret", "ambiguous-dot-segment"],
      ["/allowed/%2e%2e;/secret", "ambiguous-dot-segment"],
      ["/allowed/%252e%252e/secret", "ambiguous-dot-segment"],
      ["/allowed/%252E./secret", "ambiguous-dot-segment"],
      ["/allowed%252F..%252Fsecret", "ambiguous-dot-segment"],
      ["/allowed/x%2F..", "ambiguous-dot-segment"],
      ["/%2e%2e%5c", "ambiguous-dot-segment"],
      // never valid in a request target
      ["/a#frag", "fragment"],
      ["/a?b#c", "fragment"],
      ["/a\u0000b", "forbidden-character"],
      ["/a\r\nX-Injected: 1", "forbidden-character"],
      ["/a b", "forbidden-character"],
      ["/a\tb", "forbidden-character"],
      ["/a\u007f", "forbidden-character"],
      ["/a?b\u0000", "forbidden-character"],
      ["/a?b c", "forbidden-character"],
      ["/é", "forbidden-character"],
      ["/a%00b", "encoded-nul"],
      ["/a%", "bad-escape"],
      ["/a%2", "bad-escape"],
      ["/a%zz", "bad-escape"],
      ["/a%%32%65", "bad-escape"],
      ["", "not-origin-form"],
      ["a/b", "not-origin-form"],
      ["*", "not-origin-form"],
      ["http://example.com/", "not-origin-form"],
      ["\\..\\secret", "not-origin-form"],
    ];
    for (const [target, reason] of cases) {
      it(`${JSON.stringify(target)} → ${reason}`, () => {
        const e = refusal(target);
        expect(e).to.include({ reason, status: 400, code: "ERR_REQUEST_PATH" });
        expect(e.message.startsWith(`request target ${JSON.stringify(target)} `)).to.equal(true, e.message);
      });
    }
  });

  it("explains a refusal", () => {
    expect(refusal("/allowed%2F..%2Fsecret").message).to.equal(
      'request target "/allowed%2F..%2Fsecret" has a ".." segment when "%2F", "%5C" or "\\" is read as "/", "%25" is decoded or ";" parameters are dropped',
    );
    expect(refusal("/a\nb").message).to.equal('request target "/a\\nb" contains control character U+000A');
  });

  it("is idempotent: a normalised target normalises to itself", () => {
    for (const t of ["/allowed/%2e%2e/secret", "/a//../b", "/%7euser/%41%62c", "/a%2fb%5cc", "/a/./b/../c/?q=%2e"]) {
      const once = normalizeRequestTarget(t).path;
      expect(normalizeRequestTarget(once), t).to.deep.equal({ path: once, changed: false });
    }
  });

  it("removes dot segments as RFC 3986 §5.2.4 does", () => {
    // RFC 3986 §5.2.4's own examples, as absolute paths.
    expect(removeDotSegments("/a/b/c/./../../g")).to.equal("/a/g");
    expect(removeDotSegments("/mid/content=5/../6")).to.equal("/mid/6");
  });
});
