import { expect } from "chai";
import { parseConfig, parseDuration } from "../src/config.ts";
import { ConfigError } from "../src/errors.ts";

describe("podwatch config", () => {
  it("applies the documented defaults and freezes the result", () => {
    const c = parseConfig({ nodeName: "node-a" });
    expect(c).to.deep.equal({
      nodeName: "node-a",
      annotation: "initializer.kubernetes.io/tproxy",
      initContainer: "tproxy",
      allowDns: [],
      standardPort: undefined,
      namespaces: [],
      proxyPort: 15170,
      redirectTo: {},
      resyncMs: 60_000,
      metricsPort: 15172,
      metricsAddress: "127.0.0.1",
      iptablesBackend: "auto",
      daemonSet: undefined,
      podIdentityFile: undefined,
      cniSocket: undefined,
    });
    expect(Object.isFrozen(c)).to.equal(true);
  });

  it("takes an absolute --pod-identity-file and refuses a relative one or a folder", () => {
    expect(parseConfig({ nodeName: "n", podIdentityFile: " /run/tproxy/pods.json " }).podIdentityFile).to.equal("/run/tproxy/pods.json");
    expect(parseConfig({ nodeName: "n", podIdentityFile: "" }).podIdentityFile).to.equal(undefined);
    expect(() => parseConfig({ nodeName: "n", podIdentityFile: "pods.json" })).to.throw(ConfigError, '--pod-identity-file "pods.json" is not an absolute file path (e.g. /run/tproxy/pods.json)');
    expect(() => parseConfig({ nodeName: "n", podIdentityFile: "/run/tproxy/" })).to.throw(ConfigError, "is not an absolute file path");
  });

  it("takes an iptables backend by name and refuses any other", () => {
    expect(parseConfig({ nodeName: "n", iptablesBackend: "legacy" }).iptablesBackend).to.equal("legacy");
    expect(parseConfig({ nodeName: "n", iptablesBackend: " nft " }).iptablesBackend).to.equal("nft");
    expect(() => parseConfig({ nodeName: "n", iptablesBackend: "iptables" }))
      .to.throw(ConfigError, '--iptables-backend "iptables" is not a backend (expected auto, nft, legacy)');
  });

  it("takes repeated and comma-separated namespaces, and port 0 for metrics", () => {
    const c = parseConfig({ nodeName: "n", namespace: ["a", "b,c", "a"], metricsPort: "0", proxyPort: "3129", resync: "1m30s" });
    expect(c.namespaces).to.deep.equal(["a", "b", "c"]);
    expect(c.metricsPort).to.equal(0);
    expect(c.proxyPort).to.equal(3129);
    expect(c.resyncMs).to.equal(90_000);
  });

  it("takes the lock's init container name, resolvers (repeated, comma-separated, canonicalised) and the standard port", () => {
    const c = parseConfig({ nodeName: "n", initContainer: "sidecar-init", allowDns: ["10.96.0.10,FD00:96:0::A", "10.96.0.10"], standardPort: "1080" });
    expect(c.initContainer).to.equal("sidecar-init");
    expect(c.allowDns).to.deep.equal(["10.96.0.10", "fd00:96::a"]);
    expect(c.standardPort).to.equal(1080);
    expect(parseConfig({ nodeName: "n", allowDns: "10.0.0.53", standardPort: "" })).to.include({ standardPort: undefined });
    expect(() => parseConfig({ nodeName: "n", allowDns: ["10.0.0.300"] })).to.throw(ConfigError, '--allow-dns "10.0.0.300" is not an IP address');
    expect(() => parseConfig({ nodeName: "n", initContainer: "Bad_Name" })).to.throw(ConfigError, '--init-container "Bad_Name" is not a valid container name');
    expect(() => parseConfig({ nodeName: "n", standardPort: "70000" })).to.throw(ConfigError, '--standard-port "70000" is not a port');
  });

  it("takes one node address per family to DNAT to (repeated or comma-separated, canonicalised), refusing a second of a family", () => {
    expect(parseConfig({ nodeName: "n", redirectToAddress: ["10.0.0.5", "FD00:0::5"] }).redirectTo).to.deep.equal({ ipv4: "10.0.0.5", ipv6: "fd00::5" });
    expect(parseConfig({ nodeName: "n", redirectToAddress: "10.0.0.5, 10.0.0.5" }).redirectTo).to.deep.equal({ ipv4: "10.0.0.5" });
    expect(parseConfig({ nodeName: "n", redirectToAddress: "" }).redirectTo).to.deep.equal({});
    expect(() => parseConfig({ nodeName: "n", redirectToAddress: "10.0.0.5,10.0.0.6" })).to.throw(ConfigError, '--redirect-to-address "10.0.0.6": 10.0.0.5 is already the IPv4 address (one per family)');
    expect(() => parseConfig({ nodeName: "n", redirectToAddress: ["node-a"] })).to.throw(ConfigError, '--redirect-to-address "node-a" is not an IP address');
  });

  it("names the flag, the value and what was expected on bad input", () => {
    expect(() => parseConfig({})).to.throw(ConfigError, "--node-name (or NODE_NAME) is required");
    expect(() => parseConfig({ nodeName: "n", proxyPort: "80a" })).to.throw(ConfigError, '--proxy-port "80a" is not a port');
    expect(() => parseConfig({ nodeName: "n", proxyPort: "0" })).to.throw(ConfigError, "--proxy-port");
    expect(() => parseConfig({ nodeName: "n", resync: "60" })).to.throw(ConfigError, '--resync "60" is not a duration');
    expect(() => parseConfig({ nodeName: "n", annotation: "bad key!" })).to.throw(ConfigError, "--annotation");
    expect(() => parseConfig({ nodeName: "n", namespace: ["Not_OK"] })).to.throw(ConfigError, "--namespace");
    expect(() => parseConfig({ nodeName: "Node A" })).to.throw(ConfigError, "--node-name");
  });

  it("parses durations", () => {
    expect(parseDuration("--resync", "500ms")).to.equal(500);
    expect(parseDuration("--resync", "2h")).to.equal(7_200_000);
    expect(() => parseDuration("--resync", "10ms")).to.throw(ConfigError);
  });
});
