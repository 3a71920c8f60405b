// `tproxy run` configuration parsed in-process: defaults, every flag's bounds, and messages that name
// the flag and the value. (test/cli.test.ts covers the same parser through the built command.)
import { expect } from "chai";
import { resolve } from "node:path";
import { parseRunConfig, type RawRunOptions } from "../src/config.ts";
import { ConfigError } from "../src/errors.ts";

const base: RawRunOptions = { caCert: "ca.pem", caKey: "ca.key", filter: "filter.ts" };
const parse = (over: RawRunOptions, auto?: () => number) => parseRunConfig({ ...base, ...over }, auto);

function message(over: RawRunOptions): string {
  try {
    parse(over);
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    expect((err as ConfigError).code).to.equal("ERR_CONFIG");
    return (err as ConfigError).message;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(over)}`);
}

describe("tproxy run config", () => {
  it("has the documented defaults, resolves the filter path and freezes the result", () => {
    const c = parse({});
    expect(c).to.deep.equal({
      caCert: "ca.pem",
      caKey: "ca.key",
      filter: resolve("filter.ts"),
      transparentPort: 15170,
      standardPort: undefined,
      metricsPort: 15171,
      listenAddress: "::",
      metricsAddress: "127.0.0.1",
      upstreamCa: undefined,
      insecureUpstream: false,
      onFilterError: "deny",
      filterTimeoutMs: 100,
      filterAudit: false,
      http2: true,
      maxBodyBytes: 1_048_576,
      logFormat: "text",
      probeAddress: "192.0.2.1",
      drainTimeoutMs: 25_000,
      workers: 1,
      blockCidrs: [],
      allowUpstreamCidrs: [],
      allowPorts: [80, 443],
      handshakeTimeoutMs: 10_000,
      headerTimeoutMs: 10_000,
      idleTimeoutMs: 30_000,
      requestTimeoutMs: 300_000,
      sendTimeoutMs: 60_000,
      maxClientConnections: 512,
      maxConnections: 0,
    });
    expect(Object.isFrozen(c)).to.equal(true);
  });

  it("treats an empty value (an unset variable) as not given", () => {
    const c = parse({ transparentPort: "", standardPort: "", metricsPort: "", filterTimeout: "", drainTimeout: "", upstreamCa: "", workers: "" }, () => 3);
    expect(c).to.deep.include({ transparentPort: 15170, standardPort: undefined, metricsPort: 15171, filterTimeoutMs: 100, drainTimeoutMs: 25_000, upstreamCa: undefined, workers: 3 });
  });

  it("takes every value given", () => {
    const c = parse({
      transparentPort: "3129", standardPort: "1080", metricsPort: "0", listenAddress: "10.0.0.5", upstreamCa: "/etc/extra.pem",
      insecureUpstream: true, onFilterError: "allow", filterTimeout: "250", filterAudit: true, maxBody: "4096", logFormat: "json", probeAddress: "fd00::1", drainTimeout: "1", workers: "4",
    });
    expect(c).to.deep.include({
      transparentPort: 3129, standardPort: 1080, metricsPort: 0, listenAddress: "10.0.0.5", upstreamCa: "/etc/extra.pem",
      insecureUpstream: true, onFilterError: "allow", filterTimeoutMs: 250, filterAudit: true, maxBodyBytes: 4096, logFormat: "json", probeAddress: "fd00::1", drainTimeoutMs: 1, workers: 4,
    });
  });

  it("accepts the edges of every range", () => {
    expect(parse({ transparentPort: "0", standardPort: "65535" })).to.deep.include({ transparentPort: 0, standardPort: 65535 });
    expect(parse({ workers: "1" }).workers).to.equal(1);
    expect(parse({ workers: "256" }).workers).to.equal(256);
    expect(parse({ workers: "auto" }, () => 7).workers).to.equal(7);
    expect(parse({}, () => 5).workers).to.equal(5);
  });

  it("takes --max-connections as a number, or auto (the default) from what the memory limit holds for the worker count", () => {
    const capacity = (workers: number) => 1000 * workers;
    expect(parseRunConfig({ ...base, workers: "3" }, undefined, capacity).maxConnections).to.equal(3000);
    expect(parseRunConfig({ ...base, workers: "3", maxConnections: "auto" }, undefined, capacity).maxConnections).to.equal(3000);
    expect(parseRunConfig({ ...base, maxConnections: "" }, () => 2, capacity).maxConnections).to.equal(2000);
    expect(parseRunConfig({ ...base, maxConnections: "0" }, undefined, capacity).maxConnections).to.equal(0);
    expect(parseRunConfig({ ...base, maxConnections: "10000000" }, undefined, capacity).maxConnections).to.equal(10_000_000);
    expect(message({ maxConnections: "10000001" })).to.equal('--max-connections "10000001" must be a whole number of connections (or "auto") from 0 (off) to 10000000');
    expect(message({ maxConnections: "-1" })).to.equal('--max-connections "-1" must be a whole number of connections (or "auto") from 0 (off) to 10000000');
  });

  it("serves the admin endpoints on the loopback unless told otherwise", () => {
    expect(parse({ metricsAddress: "0.0.0.0" }).metricsAddress).to.equal("0.0.0.0");
    expect(message({ metricsAddress: "localhost" })).to.equal('--metrics-address "localhost" is not an IP address');
  });

  it("reads --http2 as a switch: the flag alone or on/true/1 is on, off/false/0 is off, absent is on", () => {
    const http2 = (v: boolean | string | undefined) => parse(v === undefined ? {} : { http2: v }).http2;
    expect([true, "on", "ON", "true", "1", " on "].map(http2)).to.deep.equal([true, true, true, true, true, true]);
    expect([false, "off", "Off", "false", "0"].map(http2)).to.deep.equal([false, false, false, false, false]);
    expect(http2(undefined)).to.equal(true);
  });

  const refused: Array<[RawRunOptions, string]> = [
    [{ caCert: undefined }, "--ca-cert is required"],
    [{ caCert: "" }, "--ca-cert is required"],
    [{ caKey: undefined }, "--ca-key is required"],
    [{ filter: "" }, "--filter is required"],
    [{ transparentPort: "65536" }, '--transparent-port "65536" is not a port number (0-65535)'],
    [{ transparentPort: "80a" }, '--transparent-port "80a" is not a port number (0-65535)'],
    [{ transparentPort: "-1" }, '--transparent-port "-1" is not a port number (0-65535)'],
    [{ standardPort: "1e3" }, '--standard-port "1e3" is not a port number (0-65535)'],
    [{ metricsPort: " 9090" }, '--metrics-port " 9090" is not a port number (0-65535)'],
    [{ metricsPort: "70000" }, '--metrics-port "70000" is not a port number (0-65535)'],
    [{ filterTimeout: "0" }, '--filter-timeout "0" must be a positive whole number of milliseconds'],
    [{ maxBody: "0" }, '--max-body "0" must be a whole number of bytes from 1 to 1073741824'],
    [{ maxBody: "1Mi" }, '--max-body "1Mi" must be a whole number of bytes from 1 to 1073741824'],
    [{ maxBody: "1073741825" }, '--max-body "1073741825" must be a whole number of bytes from 1 to 1073741824'],
    [{ filterTimeout: "1.5" }, '--filter-timeout "1.5" must be a positive whole number of milliseconds'],
    [{ filterTimeout: "100ms" }, '--filter-timeout "100ms" must be a positive whole number of milliseconds'],
    [{ drainTimeout: "0" }, '--drain-timeout "0" must be a positive whole number of milliseconds'],
    [{ workers: "0" }, '--workers "0" must be "auto" or a whole number from 1 to 256'],
    [{ workers: "257" }, '--workers "257" must be "auto" or a whole number from 1 to 256'],
    [{ workers: "2x" }, '--workers "2x" must be "auto" or a whole number from 1 to 256'],
    [{ workers: "x2" }, '--workers "x2" must be "auto" or a whole number from 1 to 256'],
    [{ onFilterError: "ignore" }, '--on-filter-error "ignore" must be deny or allow'],
    [{ logFormat: "pretty" }, '--log-format "pretty" must be text or json'],
    [{ http2: "yes please" }, '--http2 "yes please" must be on or off'],
    [{ http2: "" }, '--http2 "" must be on or off'],
    [{ listenAddress: "localhost" }, '--listen-address "localhost" is not an IP address'],
    [{ probeAddress: "192.0.2.300" }, '--probe-address "192.0.2.300" is not an IP address'],
  ];
  for (const [over, expected] of refused) {
    it(`refuses ${JSON.stringify(over)} naming the flag and the value`, () => {
      expect(message(over)).to.equal(expected);
    });
  }
});
