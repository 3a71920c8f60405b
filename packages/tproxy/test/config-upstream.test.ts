import { expect } from "chai";
import { parseRunConfig } from "../src/config.ts";
import { ConfigError } from "../src/errors.ts";

const base = { caCert: "ca.pem", caKey: "ca.key", filter: "filter.ts" };

describe("upstream policy flags (--block-cidr, --allow-upstream-cidr, --allow-port)", () => {
  it("defaults: nothing blocked or opened beyond the built-in classes; standard mode reaches 80 and 443", () => {
    const c = parseRunConfig(base);
    expect(c.blockCidrs).to.deep.equal([]);
    expect(c.allowUpstreamCidrs).to.deep.equal([]);
    expect(c.allowPorts).to.deep.equal([80, 443]);
  });

  it("takes repeated flags and comma-separated environment values", () => {
    const c = parseRunConfig({ ...base, blockCidr: ["10.96.0.0/12,fd00:10:96::/112", "192.168.0.0/16"], allowUpstreamCidr: ["169.254.169.254/32"], allowPort: ["80", "8443"] });
    expect(c.blockCidrs).to.deep.equal(["10.96.0.0/12", "fd00:10:96::/112", "192.168.0.0/16"]);
    expect(c.allowUpstreamCidrs).to.deep.equal(["169.254.169.254/32"]);
    expect(c.allowPorts).to.deep.equal([80, 8443]);
  });

  it("refuses bad values at start, naming the flag and the value", () => {
    expect(() => parseRunConfig({ ...base, blockCidr: ["10.96.0.1/12"] })).to.throw(ConfigError, /--block-cidr: "10\.96\.0\.1\/12" is not a valid CIDR \(host bits are set/);
    expect(() => parseRunConfig({ ...base, allowUpstreamCidr: ["localhost"] })).to.throw(ConfigError, /--allow-upstream-cidr: "localhost"/);
    expect(() => parseRunConfig({ ...base, allowPort: ["0"] })).to.throw(ConfigError, /--allow-port "0" is not a port number/);
    expect(() => parseRunConfig({ ...base, allowPort: ["080"] })).to.throw(ConfigError, /--allow-port "080"/);
  });
});
