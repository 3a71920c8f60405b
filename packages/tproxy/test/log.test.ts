import { expect } from "chai";
import { Writable } from "node:stream";
import { createLogging } from "../src/observe/log.ts";

describe("log format", () => {
  it("writes one readable line per request in text mode", async () => {
    const lines: string[] = [];
    const out = new Writable({ write(chunk, _enc, cb) { lines.push(String(chunk)); cb(); } });
    const { log, requests } = createLogging("text", { destination: out });
    requests({ id: "x", client: "10.0.0.2:40000", method: "GET", url: "https://www.google.com/", status: 418, bytes: 30, ms: 1.2, decision: "denied", reason: "filter", filter: "abc" });
    log.warn({ filter: "/etc/f.ts", location: "/etc/f.ts:2:3" }, "filter not loaded");
    await new Promise((r) => setImmediate(r)); // lines of one event-loop turn are written together
    lines.splice(0, lines.length, ...lines.join("").split(/(?<=\n)/));
    expect(lines[0]).to.match(/^\d{4}-\d\d-\d\dT[\d:.]+Z 10\.0\.0\.2:40000 GET https:\/\/www\.google\.com\/ -> 418 30b 1\.2ms denied \(filter\)\n$/);
    expect(lines[1]).to.match(/Z WARN filter not loaded filter=\/etc\/f\.ts location=\/etc\/f\.ts:2:3\n$/);
  });

  it("writes pino JSON in json mode", async () => {
    const lines: string[] = [];
    const out = new Writable({ write(chunk, _enc, cb) { lines.push(String(chunk)); cb(); } });
    const logging = createLogging("json", { destination: out });
    logging.requests({ id: "x", client: "10.0.0.2:1", method: "GET", url: "http://a/", status: 200, bytes: 3, ms: 1, decision: "allowed", reason: undefined, filter: "abc" });
    logging.flush();
    expect(JSON.parse(lines[0]!)).to.include({ level: 30, msg: "request", kind: "request", status: 200, decision: "allowed", url: "http://a/", filter: "abc" });
  });
});
