import { expect } from "chai";
import { ConfigError, parseConfig } from "../src/index.ts";

const noEnv = {};

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

describe("sidecar-init config", () => {
  it("has the documented defaults and is frozen", () => {
    const c = parseConfig({}, noEnv);
    expect(c).to.deep.include({ allowDns: { kind: "resolv-conf" }, resolvConf: "/etc/resolv.conf", blockCidrs: [], node: undefined, standardPort: 1080, ports: [80, 443], ipv6Intercepted: false, wait: true, waitTimeoutMs: 60_000, probeAddress: "192.0.2.1", backend: "auto", dryRun: false, logLevel: "info", mode: "lock" });
    expect(Object.isFrozen(c)).to.equal(true);
    expect(Object.isFrozen(c.ports)).to.equal(true);
  });

  it("takes --mode wait (CNI mode) from the flag or LOCK_MODE", () => {
    expect(parseConfig({ mode: "wait" }, noEnv).mode).to.equal("wait");
    expect(parseConfig({}, { LOCK_MODE: "wait" }).mode).to.equal("wait");
    expect(parseConfig({ mode: "lock" }, { LOCK_MODE: "wait" }).mode).to.equal("lock");
  });

  it("reads the tutorial's variables when no flag is given", () => {
    const c = parseConfig({}, { ALLOW_DNS: "10.96.0.10, fd00::a", BLOCK_SVC_CIDR: "10.96.0.0/12", NODE_NAME: "node-a" });
    expect(c.allowDns).to.deep.equal({ kind: "list", resolvers: [{ ip: "10.96.0.10", family: "ipv4" }, { ip: "fd00::a", family: "ipv6" }] });
    expect(c.blockCidrs.map((b) => b.text)).to.deep.equal(["10.96.0.0/12"]);
    expect(c.node).to.deep.equal({ kind: "name", name: "node-a" });
  });

  it("lets flags win over variables and accepts repeated and comma-separated lists", () => {
    const c = parseConfig({ allowDns: ["10.0.0.10,10.0.0.11", "10.0.0.10"], blockCidr: ["10.96.0.0/12", "fd00:10:96::/112"] }, { ALLOW_DNS: "1.1.1.1" });
    expect(c.allowDns).to.deep.equal({ kind: "list", resolvers: [{ ip: "10.0.0.10", family: "ipv4" }, { ip: "10.0.0.11", family: "ipv4" }] });
    expect(c.blockCidrs.map((b) => [b.family, b.text])).to.deep.equal([["ipv4", "10.96.0.0/12"], ["ipv6", "fd00:10:96::/112"]]);
  });

  it("allows DNS to every address only when asked for by any, and reads the resolv.conf path", () => {
    expect(parseConfig({ allowDns: ["any"] }, noEnv).allowDns).to.deep.equal({ kind: "any" });
    expect(parseConfig({}, { ALLOW_DNS: "ANY" }).allowDns).to.deep.equal({ kind: "any" });
    expect(parseConfig({}, { RESOLV_CONF: "/tmp/r.conf" }).resolvConf).to.equal("/tmp/r.conf");
    expect(parseConfig({ resolvConf: "/a" }, { RESOLV_CONF: "/b" }).resolvConf).to.equal("/a");
    // A scoped resolver keeps its interface; the lock names it in the rule.
    expect(parseConfig({ allowDns: ["fe80::1%eth0"] }, noEnv).allowDns).to.deep.equal({ kind: "list", resolvers: [{ ip: "fe80::1", family: "ipv6", iface: "eth0" }] });
  });

  it("takes an IP literal as node name", () => {
    expect(parseConfig({}, { NODE_NAME: "10.128.0.7" }).node).to.deep.equal({ kind: "ip", ip: "10.128.0.7", family: "ipv4" });
    expect(parseConfig({ nodeIp: "fd00::7" }, noEnv).node).to.deep.equal({ kind: "ip", ip: "fd00::7", family: "ipv6" });
  });

  it("parses durations, ports and switches", () => {
    const c = parseConfig({ waitTimeout: "1.5s", ports: "80,443,8443", wait: false, dryRun: true, iptablesBackend: "legacy" }, { IPV6_INTERCEPTED: "true" });
    expect(c).to.deep.include({ waitTimeoutMs: 1500, ports: [80, 443, 8443], wait: false, dryRun: true, backend: "legacy", ipv6Intercepted: true });
    expect(parseConfig({}, { NO_WAIT: "1", WAIT_TIMEOUT: "2m" })).to.deep.include({ wait: false, waitTimeoutMs: 120_000 });
  });

  const cases: Array<[string, Parameters<typeof parseConfig>[0], NodeJS.ProcessEnv, RegExp]> = [
    ["a CIDR with a prefix too long", { blockCidr: ["10.96.0.0/33"] }, noEnv, /^--block-cidr: invalid value "10\.96\.0\.0\/33", expected a CIDR such as 10\.96\.0\.0\/12 .*\(prefix 0-32\)$/],
    ["a CIDR that is no address", {}, { BLOCK_SVC_CIDR: "services" }, /^BLOCK_SVC_CIDR \(environment, for --block-cidr\): invalid value "services", expected a CIDR/],
    ["an IPv4 address out of range", { allowDns: ["10.96.0.300"] }, noEnv, /^--allow-dns: invalid value "10\.96\.0\.300", expected an IPv4 or IPv6 address/],
    ["a resolver with a prefix", {}, { ALLOW_DNS: "10.96.0.10/32" }, /^ALLOW_DNS \(environment, for --allow-dns\): invalid value "10\.96\.0\.10\/32"/],
    ["any next to addresses", { allowDns: ["any", "10.96.0.10"] }, noEnv, /^--allow-dns: invalid value "any,10\.96\.0\.10", expected either "any" alone or resolver addresses, not both$/],
    ["a resolver with a numeric scope", {}, { ALLOW_DNS: "fe80::1%2" }, /^ALLOW_DNS \(environment, for --allow-dns\): invalid value "fe80::1%2", expected .* with the interface named \(not numbered\) after the %$/],
    ["an IPv4 resolver with a scope", { allowDns: ["10.0.0.1%eth0"] }, noEnv, /^--allow-dns: invalid value "10\.0\.0\.1%eth0"/],
    ["an empty resolv.conf path", { resolvConf: "" }, noEnv, /^--resolv-conf: invalid value "", expected a file path$/],
    ["a node IP that is a name", { nodeIp: "node-a" }, noEnv, /^--node-ip: invalid value "node-a", expected an IPv4 or IPv6 address/],
    ["a node name with spaces", { nodeName: "node a" }, noEnv, /^--node-name: invalid value "node a", expected a node name/],
    ["both node flags", { nodeIp: "10.0.0.1", nodeName: "node-a" }, noEnv, /^--node-ip and --node-name both given/],
    ["a standard port without a node", { standardPort: "1080" }, noEnv, /^--standard-port 1080 given without --node-ip or --node-name/],
    ["port 0", { ports: "0,443" }, noEnv, /^--ports: invalid value "0", expected a TCP port 1-65535$/],
    ["ports without 80 while waiting", { ports: "443" }, noEnv, /leaves out port 80, which the interception probe uses: add 80 or pass --no-wait$/],
    ["a duration without unit", { waitTimeout: "60" }, noEnv, /^--wait-timeout: invalid value "60", expected a positive duration such as 60s/],
    ["an IPv6 probe address", { probeAddress: "2001:db8::1" }, noEnv, /^--probe-address: invalid value "2001:db8::1", expected an IPv4 address/],
    ["an unknown backend", {}, { IPTABLES_BACKEND: "nftables" }, /^IPTABLES_BACKEND \(environment, for --iptables-backend\): invalid value "nftables", expected one of auto, nft, legacy$/],
    ["an unknown mode", {}, { LOCK_MODE: "cni" }, /^LOCK_MODE \(environment, for --mode\): invalid value "cni", expected one of lock, wait$/],
    ["--dry-run in wait mode", { mode: "wait", dryRun: true }, noEnv, /^--mode wait writes no rules: --dry-run has nothing to print$/],
    ["a switch that is not a boolean", {}, { DRY_RUN: "maybe" }, /^DRY_RUN \(environment, for --dry-run\): invalid value "maybe", expected true or false$/],
  ];
  for (const [what, raw, env, message] of cases) {
    it(`refuses ${what} with a message naming it`, () => {
      const err = configError(() => parseConfig(raw, env));
      expect(err.message).to.match(message);
      expect(err.message).not.to.include("\n");
      expect(err.code).to.equal("ERR_CONFIG");
      expect(err.exitCode).to.equal(2);
    });
  }
});
