// The tutorial's story and its test chart's isolation checks, end to end: real sidecar-init in a pod
// namespace, real podwatch (against the Kubernetes API stand-in) and the real proxy on the node.
import { expect } from "chai";
import { readFileSync } from "node:fs";
import { waitFor } from "../support/netns.ts";
import { BUCKET_URL, CHART_FILTER, LOCKED_IP, METADATA_IP, SERVICE_IP, TutorialWorld } from "../support/tutorial-world.ts";

describe("the tutorial, end to end (namespaces; Kubernetes API stand-in)", function () {
  this.timeout(60_000);
  let world: TutorialWorld;

  before(async function () {
    this.timeout(120_000);
    world = await TutorialWorld.installed("tpe");
  });
  after(async () => {
    await world?.close();
  });

  const status = async (pod: "app" | "locked", url: string, extra: string[] = []) =>
    (await world.curlFrom(world[pod], ["-o", "/dev/null", "-w", "%{http_code}", ...extra, url])).stdout;

  it("leaves the unlocked pod alone: 200, 200, ping answers", async () => {
    const lines = await world.appRound(world.app);
    expect(lines.slice(0, 2)).to.deep.equal(["https://www.google.com: 200", `${BUCKET_URL}: 200`]);
    expect(lines.join("\n")).to.match(/64 bytes from www\.google\.com/);
  });

  it("locked pod: allowed bucket 200, other HTTPS 418, ping not permitted", async () => {
    const lines = await world.appRound(world.locked);
    expect(lines.slice(0, 2)).to.deep.equal(["https://www.google.com: 418", `${BUCKET_URL}: 200`]);
    expect(lines.join("\n")).to.match(/ping: sendmsg: Operation not permitted/);
    expect(lines.join("\n")).to.not.match(/64 bytes from/);
  });

  it("locked pod: the metadata server is denied by the filter (418), by name and by address", async () => {
    expect(await status("locked", "http://metadata.google.internal/computeMetadata/v1/", ["-H", "Metadata-Flavor: Google"])).to.equal("418");
    expect(await status("locked", `http://${METADATA_IP}/computeMetadata/v1/`)).to.equal("418");
    expect(await status("app", `http://${METADATA_IP}/computeMetadata/v1/`)).to.equal("200"); // it is there
  });

  it("locked pod: the service range is blocked outright, even on 443", async () => {
    const r = await world.curlFrom(world.locked, ["-o", "/dev/null", "-w", "%{http_code}", `https://${SERVICE_IP}/`]);
    expect(r.stdout).to.equal("000");
    expect(r.code).to.equal(7); // could not connect
    expect(await status("app", `https://${SERVICE_IP}/`, ["-k"])).to.equal("200"); // it is there
  });

  it("the filter's 418 becomes 500 after the ConfigMap update, with nothing restarted", async () => {
    const pids = [world.proxy!.child.pid, world.podwatch!.child.pid];
    world.updateFilter(readFileSync(CHART_FILTER, "utf8").replace("418", "500"));
    await waitFor("500 from the locked pod", async () => (await status("locked", "https://www.google.com")) === "500", 5000, 100);
    expect(await status("locked", BUCKET_URL)).to.equal("200");
    expect([world.proxy!.child.pid, world.podwatch!.child.pid]).to.deep.equal(pids);
    expect(world.proxy!.child.exitCode).to.equal(null);
    expect(world.proxy!.output).to.match(new RegExp(`${LOCKED_IP.replace(/\./g, "\\.")}:\\d+ GET https://www\\.google\\.com/ -> 500`));
    world.updateFilter(readFileSync(CHART_FILTER, "utf8"));
    await waitFor("418 again", async () => (await status("locked", "https://www.google.com")) === "418", 5000, 100);
  });
});
