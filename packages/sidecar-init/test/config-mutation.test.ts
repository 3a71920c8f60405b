// sidecar-init configuration edges: every variable is read under its own name, errors name the flag
// or variable that was wrong, and range ends are right. Cases found by `npm run mutation`.
import { expect } from "chai";
import { ConfigError, parseConfig, type RawOptions } from "../src/index.ts";

const noEnv = {};

function message(raw: RawOptions, env: NodeJS.ProcessEnv): string {
  try {
    parseConfig(raw, env);
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).message;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify({ raw, env })}`);
}

describe("sidecar-init config edges", () => {
  it("reads each option's own variable", () => {
    const c = parseConfig({}, { NODE_IP: "10.128.0.7", STANDARD_PORT: "3128", PORTS: "80 , 8080", PROBE_ADDRESS: "192.0.2.9", LOG_LEVEL: "debug" });
    expect(c).to.deep.include({ node: { kind: "ip", ip: "10.128.0.7", family: "ipv4" }, standardPort: 3128, ports: [80, 8080], probeAddress: "192.0.2.9", logLevel: "debug" });
  });

  it("names the variable and its flag when a variable is wrong", () => {
    expect(message({}, { IPV6_INTERCEPTED: "sometimes" })).to.equal('IPV6_INTERCEPTED (environment, for --ipv6-intercepted): invalid value "sometimes", expected true or false');
    expect(message({}, { NO_WAIT: "2" })).to.equal('NO_WAIT (environment, for --no-wait): invalid value "2", expected true or false');
    expect(message({ logLevel: "loud" }, noEnv)).to.equal('--log-level: invalid value "loud", expected one of fatal, error, warn, info, debug, trace, silent');
    expect(message({}, { PORTS: "443" })).to.equal('PORTS (environment, for --ports) "443" leaves out port 80, which the interception probe uses: add 80 or pass --no-wait');
    expect(message({ ports: "443,8443" }, noEnv)).to.match(/^--ports "443,8443" leaves out port 80/);
    expect(message({ ports: ", ," }, noEnv)).to.equal('--ports: invalid value ", ,", expected a comma-separated list of TCP ports such as 80,443');
  });

  it("takes switches as yes/no words, blank as unset, and trims variables", () => {
    for (const v of ["1", "true", "YES", " on "]) expect(parseConfig({}, { DRY_RUN: v }).dryRun, v).to.equal(true);
    for (const v of ["0", "false", "No", "off", "", "  "]) expect(parseConfig({}, { DRY_RUN: v }).dryRun, JSON.stringify(v)).to.equal(false);
    expect(parseConfig({}, { NODE_NAME: "   ", PROBE_ADDRESS: " 192.0.2.7 " })).to.deep.include({ node: undefined, probeAddress: "192.0.2.7" });
  });

  it("drops empty list items and duplicate CIDRs, and reads the variable when the flag list is empty", () => {
    expect(parseConfig({}, { ALLOW_DNS: ",10.0.0.10,,10.0.0.11," }).allowDns).to.deep.equal({ kind: "list", resolvers: [{ ip: "10.0.0.10", family: "ipv4" }, { ip: "10.0.0.11", family: "ipv4" }] });
    expect(parseConfig({ allowDns: [] }, { ALLOW_DNS: "10.0.0.12" }).allowDns).to.deep.equal({ kind: "list", resolvers: [{ ip: "10.0.0.12", family: "ipv4" }] });
    expect(parseConfig({ blockCidr: ["10.96.0.0/12", "10.96.0.0/12"] }, noEnv).blockCidrs.map((b) => b.text)).to.deep.equal(["10.96.0.0/12"]);
    expect(parseConfig({ ports: "80,,443" }, noEnv).ports).to.deep.equal([80, 443]);
  });

  it("reads a bare address as a single-host block and accepts full-length prefixes", () => {
    expect(parseConfig({ blockCidr: ["10.96.0.1", "fd00::1", "10.0.0.0/32", "fd00::/128", "0.0.0.0/0"] }, noEnv).blockCidrs).to.deep.equal([
      { family: "ipv4", address: "10.96.0.1", prefix: 32, text: "10.96.0.1/32" },
      { family: "ipv6", address: "fd00::1", prefix: 128, text: "fd00::1/128" },
      { family: "ipv4", address: "10.0.0.0", prefix: 32, text: "10.0.0.0/32" },
      { family: "ipv6", address: "fd00::", prefix: 128, text: "fd00::/128" },
      { family: "ipv4", address: "0.0.0.0", prefix: 0, text: "0.0.0.0/0" },
    ]);
    for (const bad of ["10.0.0.0/8/9", "fe80::1%eth0/64", "10.0.0.0/a8", "10.0.0.0/8a", "fd00::/129"]) {
      expect(message({ blockCidr: [bad] }, noEnv), bad).to.match(/^--block-cidr: invalid value .*, expected a CIDR/);
    }
  });

  it("takes ports 1 and 65535, durations of any digits with fractions, and refuses zero", () => {
    expect(parseConfig({ ports: "1,80,65535", waitTimeout: "10s" }, noEnv)).to.deep.include({ ports: [1, 80, 65535], waitTimeoutMs: 10_000 });
    expect(parseConfig({ waitTimeout: "1.25s" }, noEnv).waitTimeoutMs).to.equal(1250);
    expect(message({ ports: "80,65536" }, noEnv)).to.equal('--ports: invalid value "65536", expected a TCP port 1-65535');
    for (const d of ["0s", "x60s", "60sx", "60 s"]) expect(message({ waitTimeout: d }, noEnv), d).to.match(/^--wait-timeout: invalid value .*, expected a positive duration/);
  });

  it("picks the node: a flag over any variable, NODE_IP over NODE_NAME, short names allowed", () => {
    expect(parseConfig({}, { NODE_IP: "10.0.0.1", NODE_NAME: "node-a" }).node).to.deep.equal({ kind: "ip", ip: "10.0.0.1", family: "ipv4" });
    expect(parseConfig({ nodeName: "node-b" }, { NODE_IP: "10.0.0.1" }).node).to.deep.equal({ kind: "name", name: "node-b" });
    expect(parseConfig({ nodeIp: "10.0.0.2" }, { NODE_NAME: "node-a" }).node).to.deep.equal({ kind: "ip", ip: "10.0.0.2", family: "ipv4" });
    expect(parseConfig({ nodeName: "n" }, noEnv).node).to.deep.equal({ kind: "name", name: "n" });
    expect(parseConfig({ nodeName: "node-a", standardPort: "3128" }, noEnv).standardPort).to.equal(3128);
  });
});
