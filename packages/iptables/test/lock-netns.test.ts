// The xtables lock, for real: iptables-legacy-restore in a fresh namespace while another process holds
// the lock. The lock file is a private one (XTABLES_LOCKFILE), so iptables users elsewhere on this
// machine are not held up. Needs root.
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Netns, removeStale, uniqueName, waitFor } from "../../../test/support/netns.ts";
import { execRunner, IptablesFailure, restore, type FamilyTools } from "../src/index.ts";

const LEGACY: FamilyTools = { family: "ipv4", save: "/usr/sbin/iptables-legacy-save", restore: "/usr/sbin/iptables-legacy-restore" };
const INPUT = "*filter\n:TPROXY-LOCK-TEST - [0:0]\nCOMMIT\n";

describe("@tproxy/iptables and the xtables lock (netns)", function () {
  this.timeout(30_000);
  let ns: Netns;
  let dir: string;
  let holder: ChildProcess | undefined;

  before(async () => {
    await removeStale("tpxl");
    ns = await Netns.create(uniqueName("tpxl"));
    dir = mkdtempSync(join(tmpdir(), "tproxy-xtlock-"));
  });
  after(async () => {
    if (holder && holder.exitCode === null && holder.signalCode === null) {
      process.kill(-holder.pid!, "SIGKILL");
      await once(holder, "exit");
    }
    await ns?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it("gives up after the wait with kind `lock` while another program holds it, and applies once it is free", async () => {
    const lockFile = join(dir, "xtables.lock");
    const run = execRunner({ prefix: ["env", `XTABLES_LOCKFILE=${lockFile}`, "ip", "netns", "exec", ns.name] });
    // Its own process group: flock and the sleep that inherits the locked descriptor end together.
    holder = spawn("flock", [lockFile, "sh", "-c", "echo held; exec sleep 30"], { stdio: ["ignore", "pipe", "inherit"], detached: true });
    let out = "";
    holder.stdout?.on("data", (d: Buffer) => (out += d.toString()));
    await waitFor("the lock to be held", () => out.includes("held"), 5_000);

    const started = Date.now();
    const err = await restore(LEGACY, INPUT, run, { lockWaitSeconds: 1 }).then(() => undefined, (e: unknown) => e);
    expect(err).to.be.instanceOf(IptablesFailure);
    expect((err as IptablesFailure).kind).to.equal("lock");
    expect((err as IptablesFailure).exitCode).to.equal(4);
    expect((err as IptablesFailure).message).to.match(/^iptables-legacy-restore -w 1 --noflush failed \(exit 4, lock\): /);
    expect((err as IptablesFailure).stderr).to.include("Another app is currently holding the xtables lock");
    expect(Date.now() - started, "it waited for the lock").to.be.at.least(900);
    expect(await ns.must("iptables-legacy-save", ["-t", "filter"])).not.to.include("TPROXY-LOCK-TEST");

    // Control: the same call once the lock is free.
    process.kill(-holder.pid!, "SIGTERM");
    await once(holder, "exit");
    await restore(LEGACY, INPUT, run, { lockWaitSeconds: 1 });
    expect(await ns.must("iptables-legacy-save", ["-t", "filter"])).to.include(":TPROXY-LOCK-TEST - [0:0]");
  });
});
