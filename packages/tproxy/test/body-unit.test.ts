// The pieces of body reading without a network: the tap over a stream (server/body.ts) and the hook's
// budget that pauses while a hook waits for a body (filter/budget.ts, through FilterHost).
import { expect } from "chai";
import { PassThrough } from "node:stream";
import { FilterHost } from "../src/filter/host.ts";
import { FilterTimeoutError } from "../src/errors.ts";
import { BodyTap, BodyTooLargeError } from "../src/server/body.ts";
import { flow, filterHostFixture } from "./helpers.ts";

const tick = () => new Promise((r) => setImmediate(r));

describe("BodyTap", () => {
  it("reads a whole body up to the limit and hands the bytes over on release", async () => {
    const s = new PassThrough();
    const tap = new BodyTap(s, { which: "request", maxBytes: 11 });
    const whole = tap.read();
    s.write("hello ");
    s.end("world");
    expect((await whole).toString()).to.equal("hello world");
    const held = tap.release();
    expect(held).to.deep.include({ size: 11, ended: true });
    expect(Buffer.concat(held.chunks).toString()).to.equal("hello world");
  });

  it("refuses a whole read of a body over the limit, and remembers it", async () => {
    const s = new PassThrough();
    const tap = new BodyTap(s, { which: "request", maxBytes: 8 });
    const whole = tap.read();
    s.write("12345");
    s.write("6789");
    const err = await whole.then(() => expect.fail("resolved"), (e: unknown) => e);
    expect(err).to.be.instanceOf(BodyTooLargeError);
    expect(tap.refusal?.kind).to.equal("too-large");
    // A second read is refused at once; a hook cannot get a prefix by asking again.
    expect(await tap.read().then(() => "resolved", () => "rejected")).to.equal("rejected");
  });

  it("answers peek(n) with a prefix, holds the stream there, and leaves the rest to stream on", async () => {
    const s = new PassThrough({ highWaterMark: 4 });
    const tap = new BodyTap(s, { which: "response", maxBytes: 1024 });
    const head = tap.read(2);
    s.write("MZ");
    s.write("rest");
    expect((await head).toString()).to.equal("MZ");
    await tick();
    const held = tap.release();
    expect(held.ended).to.equal(false);
    const after: string[] = [];
    s.on("data", (c: Buffer) => after.push(c.toString()));
    s.resume(); // as pipe() does
    s.end("!");
    await tick();
    expect(Buffer.concat(held.chunks).toString() + after.join("")).to.equal("MZrest!");
  });

  it("rejects peek counts that are not whole numbers within the limit", async () => {
    const tap = new BodyTap(new PassThrough(), { which: "request", maxBytes: 16 });
    for (const n of [-1, 1.5, 17, Number.NaN]) {
      const err = await tap.read(n).then(() => undefined, (e: unknown) => e);
      expect(err, String(n)).to.be.instanceOf(RangeError);
    }
  });

  it("fails a read when the stream closes before its end, and after a wait bound", async () => {
    const s = new PassThrough();
    const tap = new BodyTap(s, { which: "request", maxBytes: 100 });
    const whole = tap.read();
    s.write("part");
    s.destroy();
    expect(await whole.then(() => "resolved", (e: Error) => e.message)).to.match(/closed before its body was complete/);
    expect(tap.refusal?.kind).to.equal("broken");
    const slow = new BodyTap(new PassThrough(), { which: "response", maxBytes: 100, waitMs: 30 });
    expect(await slow.read().then(() => "resolved", (e: Error) => e.message)).to.equal("the response body did not arrive within 30 ms");
    expect(slow.refusal?.kind).to.equal("timeout");
  });
});

describe("a hook's budget while it reads a body", function () {
  this.timeout(10_000);
  const fixture = filterHostFixture(() => ({ timeoutMs: 50 }));
  let host: FilterHost;
  beforeEach(() => {
    host = fixture.host;
  });
  const load = (source: string) => fixture.load(source);
  /** A body source whose bytes come after `ms`. */
  const late = (text: string, ms: number) => () => new Promise<Uint8Array>((r) => setTimeout(() => r(new TextEncoder().encode(text)), ms));

  it("does not count the wait for the body, and the hook sees the bytes", async () => {
    const v = await load(`export default { async request(flow) { if ((await flow.request.text()) === "deny") flow.respond(403, "no"); } };`);
    const data = flow("/");
    data.request.body = late("deny", 200);
    const r = await host.run(v, "request", data);
    expect(r.answer?.status).to.equal(403);
  });

  it("still counts the hook's own time after the body came (control: the same wait outside a body read times out)", async () => {
    const v = await load(`export default { async request(flow) { await flow.request.body(); await new Promise((r) => setTimeout(r, 200)); } };`);
    const data = flow("/");
    data.request.body = late("x", 10);
    const err = await host.run(v, "request", data).then(() => undefined, (e: unknown) => e);
    expect(err).to.be.instanceOf(FilterTimeoutError);
  });

  it("gives the hook an empty body when the message has none to read, and copies the bytes into the filter", async () => {
    const v = await load(`export default { async request(flow) {
      const b = await flow.request.body();
      flow.request.headers["x-len"] = String(b.length);
      flow.request.headers["x-own"] = String(b instanceof Uint8Array);
    } };`);
    const r = await host.run(v, "request", flow("/"));
    expect(r.headers["x-len"]).to.equal("0");
    expect(r.headers["x-own"]).to.equal("true");
  });
});
