import { expect } from "chai";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { run } from "../../../test/support/netns.ts";

const CLI = resolve(import.meta.dirname, "../dist/cli.js");
const tproxy = (args: string[]) => run(process.execPath, [CLI, ...args]);

describe("tproxy command line", function () {
  this.timeout(20_000);
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), "tproxy-cli-")); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("lists every run flag with its environment variable in --help", async () => {
    const help = (await tproxy(["run", "--help"])).stdout.replace(/\s+/g, " ");
    for (const [flag, env] of [["--ca-cert", "TPROXY_CA_CERT"], ["--filter", "TPROXY_FILTER"], ["--transparent-port", "TPROXY_TRANSPARENT_PORT"], ["--standard-port", "TPROXY_STANDARD_PORT"], ["--metrics-port", "TPROXY_METRICS_PORT"], ["--upstream-ca", "TPROXY_UPSTREAM_CA"], ["--insecure-upstream", "TPROXY_INSECURE_UPSTREAM"], ["--on-filter-error", "TPROXY_ON_FILTER_ERROR"], ["--filter-timeout", "TPROXY_FILTER_TIMEOUT"], ["--filter-audit", "TPROXY_FILTER_AUDIT"], ["--http2", "TPROXY_HTTP2"], ["--log-format", "TPROXY_LOG_FORMAT"]]) {
      expect(help).to.include(flag);
      expect(help).to.include(`env: ${env}`);
    }
  });

  it("creates a CA and refuses to overwrite it without --force", async () => {
    const args = ["ca", "create", "--cert", join(dir, "ca.pem"), "--key", join(dir, "ca.key")];
    expect((await tproxy(args)).code).to.equal(0);
    const again = await tproxy(args);
    expect(again.code).to.equal(1);
    expect(again.stderr).to.match(/ca\.pem already exists; pass --force to overwrite it/);
    expect((await tproxy([...args, "--force"])).code).to.equal(0);
  });

  it("fails at start with one line naming a bad flag value", async () => {
    writeFileSync(join(dir, "f.ts"), "export default {};");
    const base = ["run", "--ca-cert", join(dir, "ca.pem"), "--ca-key", join(dir, "ca.key"), "--filter", join(dir, "f.ts"), "--metrics-port", "0", "--transparent-port", "0"];
    const badPort = await tproxy([...base, "--standard-port", "70000"]);
    expect(badPort.code).to.equal(2);
    expect(badPort.stderr).to.equal('tproxy: --standard-port "70000" is not a port number (0-65535)\n');
    const badSwitch = await tproxy([...base, "--http2", "maybe"]);
    expect([badSwitch.code, badSwitch.stderr]).to.deep.equal([2, 'tproxy: --http2 "maybe" must be on or off\n']);
    const missing = await tproxy(["run", "--filter", "x.ts"]);
    expect(missing.stderr).to.equal("tproxy: --ca-cert is required\n");
    const badCa = await tproxy(["run", "--ca-cert", join(dir, "f.ts"), "--ca-key", join(dir, "ca.key"), "--filter", join(dir, "f.ts")]);
    expect(badCa.code).to.equal(1);
    expect(badCa.stderr).to.match(/f\.ts is not a PEM certificate/);
  });
});
