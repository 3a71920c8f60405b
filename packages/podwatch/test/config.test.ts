import { expect } from "chai";
import { parseConfig, parseDuration } from "../src/config.ts";
import { ConfigError } from "../src/errors.ts";

describe("podwatch config", () => {
  it("applies the documented defaults and freezes the result", () => {
    const c = parseConfig({ nodeName: "node-a" });
    expect(c).to.deep.equal({
      nodeName: "node-a",
      annotation: "initializer.kubernetes.io/tproxy",
      namespaces: [],
      proxyPort: 8080,
      resyncMs: 60_000,
      metricsPort: 9091,
    });
    expect(Object.isFrozen(c)).to.equal(true);
  });

  it("takes repeated and comma-separated namespaces, and port 0 for metrics", () => {
    const c = parseConfig({ nodeName: "n", namespace: ["a", "b,c", "a"], metricsPort: "0", proxyPort: "3129", resync: "1m30s" });
    expect(c.namespaces).to.deep.equal(["a", "b", "c"]);
    expect(c.metricsPort).to.equal(0);
    expect(c.proxyPort).to.equal(3129);
    expect(c.resyncMs).to.equal(90_000);
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
