// First-bytes sniffing on hand-built ClientHellos and odd first lines: which bytes decide, which name is
// read, and what the refusal says. Cases found by `npm run mutation`.
import { expect } from "chai";
import { sniff } from "../src/net/sniff.ts";

const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);

/** server_name extension body with the given (type, name) entries. */
function sniBody(entries: Array<[number, string]>): Buffer {
  const list = Buffer.concat(entries.map(([type, name]) => Buffer.concat([Buffer.from([type]), u16(name.length), Buffer.from(name, "ascii")])));
  return Buffer.concat([u16(list.length), list]);
}

/** A TLS record holding one ClientHello with these extensions (declared length overridable). */
function hello(extensions: Array<[number, Buffer]> | undefined, opts: { type?: number; declaredExtLength?: number } = {}): Buffer {
  const body = [Buffer.from([0x03, 0x03]), Buffer.alloc(32, 7), Buffer.from([0]), u16(2), Buffer.from([0x13, 0x01]), Buffer.from([1, 0])];
  if (extensions !== undefined) {
    const ext = Buffer.concat(extensions.map(([type, data]) => Buffer.concat([u16(type), u16(data.length), data])));
    body.push(u16(opts.declaredExtLength ?? ext.length), ext);
  }
  const b = Buffer.concat(body);
  const hs = Buffer.concat([Buffer.from([opts.type ?? 0x01, 0, b.length >> 8, b.length & 0xff]), b]);
  return Buffer.concat([Buffer.from([0x16, 0x03, 0x01]), u16(hs.length), hs]);
}

describe("first-bytes sniffing edges", () => {
  it("reads the host_name entry of server_name, skipping other name types and extensions before it", () => {
    expect(sniff(hello([[0x000a, Buffer.from([0, 2, 0, 0x1d])], [0x0000, sniBody([[0, "Example.COM"]])]]))).to.deep.equal({ kind: "tls", sni: "example.com" });
    expect(sniff(hello([[0x0000, sniBody([[1, "other"], [0, "second.example"]])]]))).to.deep.equal({ kind: "tls", sni: "second.example" });
    expect(sniff(hello([[0x0000, sniBody([[1, "other"]])]]))).to.deep.equal({ kind: "tls", sni: undefined });
  });

  it("finds no name in a ClientHello without extensions, or outside the declared extensions", () => {
    expect(sniff(hello(undefined))).to.deep.equal({ kind: "tls", sni: undefined });
    expect(sniff(hello([[0x0000, sniBody([[0, "hidden.example"]])]], { declaredExtLength: 0 }))).to.deep.equal({ kind: "tls", sni: undefined });
  });

  it("reads no name from a handshake that is not a ClientHello", () => {
    expect(sniff(hello([[0x0000, sniBody([[0, "server.example"]])]], { type: 0x02 }))).to.deep.equal({ kind: "tls", sni: undefined });
  });

  it("waits for a whole record up to the largest ClientHello it reads, then decides", () => {
    const header = Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00]); // record of 16384 bytes
    expect(sniff(Buffer.concat([header, Buffer.alloc(16384 - 6)]))).to.deep.equal({ kind: "need-more" });
    expect(sniff(Buffer.concat([header, Buffer.alloc(16384 - 1)]))).to.deep.equal({ kind: "need-more" });
    expect(sniff(Buffer.concat([header, Buffer.alloc(16384)]))).to.deep.equal({ kind: "tls", sni: undefined });
    const huge = Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff]);
    expect(sniff(Buffer.concat([huge, Buffer.alloc(16384 - 1)]))).to.deep.equal({ kind: "need-more" });
    expect(sniff(Buffer.concat([huge, Buffer.alloc(16384)])).kind).to.equal("tls");
  });

  it("needs a method token at the very start, and gives up after eleven bytes without a space", () => {
    expect(sniff(Buffer.from("\x00GET / HTTP/1.1\r\n")).kind).to.equal("unknown");
    expect(sniff(Buffer.from("ABCDEFGHIJ"))).to.deep.equal({ kind: "need-more" });
    expect(sniff(Buffer.from("ABCDEFGHIJK")).kind).to.equal("unknown");
    expect(sniff(Buffer.from("ABCDEFGHIJKLMNOP")).kind).to.equal("unknown");
    expect(sniff(Buffer.alloc(0))).to.deep.equal({ kind: "need-more" });
  });

  it("says which bytes it could not place", () => {
    expect(sniff(Buffer.from("SSH-2.0-OpenSSH_9.2\r\n"))).to.deep.equal({ kind: "unknown", reason: "first bytes are neither TLS nor HTTP (0x5353482d)" });
    expect(sniff(Buffer.from([0x16, 0x09, 0x01, 0x00, 0x10]))).to.deep.equal({ kind: "unknown", reason: "TLS record with unknown version 0x0901" });
  });
});
