// The proxy's own answers to gRPC calls (server/grpc.ts): which calls are gRPC, the status each HTTP status
// stands for, and grpc-message's percent-encoding as gRPC clients decode it.
import { expect } from "chai";
import { grpcAnswerHeaders, grpcMessage, grpcStatusFor, grpcStatusOf, isGrpc } from "../src/server/grpc.ts";

describe("gRPC answers (unit)", () => {
  it("takes application/grpc and its variants as gRPC, and nothing else", () => {
    for (const t of ["application/grpc", "application/grpc+proto", "application/grpc+json", "application/grpc-web", "application/grpc-web+proto", "Application/GRPC", "application/grpc; charset=utf-8"]) {
      expect(isGrpc(t), t).to.equal(true);
    }
    for (const t of [undefined, "", "application/grpcx", "application/json", "text/plain", "application/x-grpc"]) expect(isGrpc(t), String(t)).to.equal(false);
    expect(isGrpc(["application/grpc"])).to.equal(false);
  });

  it("maps refusals to PERMISSION_DENIED and the rest as gRPC's own HTTP mapping does", () => {
    const cases: Array<[number, number]> = [[403, 7], [418, 7], [421, 7], [400, 7], [451, 7], [401, 16], [404, 12], [408, 4], [504, 4], [413, 8], [429, 14], [502, 14], [503, 14], [500, 13], [200, 2], [302, 2]];
    for (const [http, grpc] of cases) expect(grpcStatusFor(http), String(http)).to.equal(grpc);
  });

  it("percent-encodes grpc-message: printable ASCII kept, '%' and everything else encoded as UTF-8 bytes", () => {
    expect(grpcMessage("method Foo is not allowed\n")).to.equal("method Foo is not allowed");
    expect(grpcMessage("100% sure")).to.equal("100%25 sure");
    expect(grpcMessage("línea\tdos")).to.equal("l%C3%ADnea%09dos");
    expect(decodeURIComponent(grpcMessage("über 50% – ok"))).to.equal("über 50% – ok");
    expect(grpcMessage("x".repeat(5000))).to.have.length(1024);
  });

  it("builds a trailers-only answer: the status and message, no length; a filter's own grpc-status is kept", () => {
    const a = grpcAnswerHeaders(418, { "content-type": "text/html", "content-length": "30", "x-why": "policy" }, "Access Denied by Administrator", "application/grpc");
    expect(a.code).to.equal(7);
    expect(a.headers).to.deep.equal({ "content-type": "application/grpc", "x-why": "policy", "grpc-status": "7", "grpc-message": "Access Denied by Administrator" });
    const own = grpcAnswerHeaders(403, { "grpc-status": "16", "grpc-message": "log in first" }, "ignored", "application/grpc+proto");
    expect(own.code).to.equal(16);
    expect(own.headers["grpc-message"]).to.equal("log in first");
    expect(own.headers["content-type"]).to.equal("application/grpc+proto");
    expect(grpcAnswerHeaders(403, {}, "  ", "application/grpc").headers).to.not.have.property("grpc-message");
  });

  it("reads a server's grpc-status for the request line: a number, or nothing for what is not one", () => {
    expect([grpcStatusOf("0"), grpcStatusOf("7"), grpcStatusOf(" 14 "), grpcStatusOf(["5", "6"])]).to.deep.equal([0, 7, 14, 5]);
    for (const bad of [undefined, "", "OK", "-1", "1e3", "7 8", "99999999999"]) expect(grpcStatusOf(bad), String(bad)).to.equal(undefined);
  });
});
