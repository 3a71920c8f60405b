import { expect } from "chai";
import { connect as tlsConnect } from "node:tls";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { sniff } from "../src/net/sniff.ts";

/** The ClientHello that Node's TLS client really sends for a server name. */
async function clientHello(servername: string | undefined): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => {
      let data = Buffer.alloc(0);
      socket.on("data", (chunk: Buffer) => {
        data = Buffer.concat([data, chunk]);
        if (data.length >= 5 && data.length >= 5 + data.readUInt16BE(3)) {
          socket.destroy();
          server.close();
          resolve(data);
        }
      });
    }).listen(0, "127.0.0.1", () => {
      const client = tlsConnect({ port: (server.address() as AddressInfo).port, host: "127.0.0.1", servername, rejectUnauthorized: false });
      client.on("error", () => undefined);
    });
    server.on("error", reject);
  });
}

describe("first-bytes sniffing", () => {
  it("reads SNI from a real ClientHello, also when it arrives in pieces", async () => {
    const hello = await clientHello("Storage.GoogleAPIs.com");
    expect(sniff(hello)).to.deep.equal({ kind: "tls", sni: "storage.googleapis.com" });
    expect(sniff(hello.subarray(0, 3))).to.deep.equal({ kind: "need-more" });
    expect(sniff(hello.subarray(0, hello.length - 1))).to.deep.equal({ kind: "need-more" });
  });

  it("reports no SNI for a ClientHello without a server name", async () => {
    expect(sniff(await clientHello(undefined))).to.deep.equal({ kind: "tls", sni: undefined });
  });

  it("recognises HTTP request lines and refuses everything else", () => {
    expect(sniff(Buffer.from("GET / HTTP/1.1\r\n"))).to.deep.equal({ kind: "http" });
    expect(sniff(Buffer.from("OPTIONS * HTTP/1.1\r\n"))).to.deep.equal({ kind: "http" });
    expect(sniff(Buffer.from("GE"))).to.deep.equal({ kind: "need-more" });
    expect(sniff(Buffer.from("SSH-2.0-OpenSSH_9.2\r\n")).kind).to.equal("unknown");
    expect(sniff(Buffer.from([0x01, 0x02, 0x03, 0x04])).kind).to.equal("unknown");
    expect(sniff(Buffer.from([0x16, 0x09, 0x00, 0x00, 0x10])).kind).to.equal("unknown");
  });

  it("tells cleartext HTTP/2's connection preface from an HTTP/1.1 request with the PRI method", () => {
    const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    expect(sniff(Buffer.from(preface))).to.deep.equal({ kind: "h2c" });
    expect(sniff(Buffer.concat([Buffer.from(preface), Buffer.alloc(9)]))).to.deep.equal({ kind: "h2c" });
    // In pieces: more is needed until the preface is whole.
    for (const n of [4, 11, 20]) expect(sniff(Buffer.from(preface.slice(0, n)))).to.deep.equal({ kind: "need-more" });
    // A PRI request line that is not the preface is HTTP/1.1 (whose parser answers it).
    expect(sniff(Buffer.from("PRI /x HTTP/1.1\r\nHost: a\r\n\r\n"))).to.deep.equal({ kind: "http" });
    expect(sniff(Buffer.from("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"))).to.deep.equal({ kind: "http" });
  });
});

describe("first-bytes sniffing: server names", () => {
  it("closes a connection whose server name is not a valid DNS name (newline, slash, IP literal), quoting it escaped", async () => {
    for (const [name, why] of [["storage.example\nforged", /control character U\+000A/], ["storage.example/allowed-prefix/.evil.example", /contains "\/"/], ["127.0.0.1", /is an IP address/]] as const) {
      const r = sniff(await clientHello(name));
      expect(r.kind, name).to.equal("unknown");
      if (r.kind !== "unknown") continue;
      expect(r.reason).to.match(/^refused TLS server name "/).and.match(why);
      expect(r.reason).to.not.include("\n");
    }
  });

  it("reads bytes above 0x7f as themselves, not with the high bit cleared (0xAF is not \"/\")", async () => {
    const hello = await clientHello("aaaa.example");
    const i = hello.indexOf("aaaa.example");
    hello[i + 1] = 0xaf;
    const r = sniff(hello);
    expect(r.kind).to.equal("unknown");
    if (r.kind === "unknown") expect(r.reason).to.match(/non-ASCII character U\+00AF/);
  });
});
