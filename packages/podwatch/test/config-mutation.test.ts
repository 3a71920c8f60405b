// podwatch configuration edges: name and key syntax, range ends, whitespace from the environment, and
// messages naming the right flag. Cases found by `npm run mutation`.
import { expect } from "chai";
import { parseConfig, parseDuration, type RawOptions } from "../src/config.ts";
import { ConfigError } from "../src/errors.ts";

const parse = (over: RawOptions) => parseConfig({ nodeName: "node-a", ...over });
const refuses = (over: RawOptions, message: string) => expect(() => parse(over), JSON.stringify(over)).to.throw(ConfigError, message);

describe("podwatch config edges", () => {
  it("accepts namespace names up to 63 characters and refuses everything else a DNS label forbids", () => {
    expect(parse({ namespace: ["kube-system", "ab", "x", "a".repeat(63)] }).namespaces).to.deep.equal(["kube-system", "ab", "x", "a".repeat(63)]);
    for (const ns of ["-ns", "ns-", "_ns", "a".repeat(64), "n.s"]) refuses({ namespace: [ns] }, `--namespace ${JSON.stringify(ns)} is not a valid namespace name`);
  });

  it("takes one namespace as a string, and drops blanks around commas", () => {
    expect(parse({ namespace: "shop" }).namespaces).to.deep.equal(["shop"]);
    expect(parse({ namespace: [" a , b", "", ","] }).namespaces).to.deep.equal(["a", "b"]);
  });

  it("trims the node name and refuses one a DNS subdomain forbids", () => {
    expect(parse({ nodeName: " node-a.example " }).nodeName).to.equal("node-a.example");
    for (const n of ["-node", "node-", "node_a"]) refuses({ nodeName: n }, `--node-name ${JSON.stringify(n)} is not a valid node name`);
  });

  it("accepts annotation keys with and without a prefix, and single-character names", () => {
    for (const a of ["tproxy", "Tproxy_1", "x", "example.com/x", "example.com/Tproxy_1.a-b"]) expect(parse({ annotation: a }).annotation).to.equal(a);
    for (const a of ["a/b/c", "Bad_Prefix/x", "example.com/-x", "example.com/x-", "/x", "example.com/"]) refuses({ annotation: a }, `--annotation ${JSON.stringify(a)} is not a valid annotation key`);
  });

  it("takes ports at the ends of their ranges, with surrounding blanks, and names the flag of a bad one", () => {
    expect(parse({ proxyPort: " 65535 ", metricsPort: 0 })).to.deep.include({ proxyPort: 65535, metricsPort: 0 });
    expect(parse({ proxyPort: "1" }).proxyPort).to.equal(1);
    refuses({ proxyPort: "65536" }, '--proxy-port "65536" is not a port (expected an integer 1-65535)');
    refuses({ metricsPort: "65536" }, '--metrics-port "65536" is not a port (expected an integer 0-65535)');
    refuses({ metricsPort: "x" }, "--metrics-port");
    refuses({ metricsAddress: "localhost" }, '--metrics-address "localhost" is not an IP address (e.g. 127.0.0.1, or 0.0.0.0 for every address)');
    expect(parse({ metricsAddress: "0.0.0.0" }).metricsAddress).to.equal("0.0.0.0");
  });

  it("reads --daemonset as namespace/name, blank as none, and refuses anything else naming the flag", () => {
    expect(parse({ daemonset: " tproxy-system/tproxy " }).daemonSet).to.deep.equal({ namespace: "tproxy-system", name: "tproxy" });
    expect(parse({ daemonset: "" }).daemonSet).to.equal(undefined);
    for (const d of ["tproxy", "a/b/c", "/tproxy", "ns/", "Ns/tproxy", "ns/Tproxy"]) refuses({ daemonset: d }, `--daemonset ${JSON.stringify(d)} is not namespace/name of a DaemonSet`);
  });

  it("parses durations with fractions and blanks, from 100ms up, and refuses trailing garbage", () => {
    expect(parseDuration("--resync", " 90s ")).to.equal(90_000);
    expect(parseDuration("--resync", "1.25s")).to.equal(1250);
    expect(parseDuration("--resync", "100ms")).to.equal(100);
    expect(parse({ resync: "2m" }).resyncMs).to.equal(120_000);
    for (const d of ["1m30", "60s later", "", "99ms", "s"]) {
      expect(() => parseDuration("--resync", d), d).to.throw(ConfigError, `--resync ${JSON.stringify(d)} is not a duration of at least 100ms`);
    }
  });
});
