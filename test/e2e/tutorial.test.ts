// The tutorial's story and its test chart's isolation checks, end to end: real sidecar-init in a pod
// namespace, real podwatch (against the Kubernetes API stand-in) and the real proxy on the node.
import { expect } from "chai";
import { readFileSync } from "node:fs";
import { one, template } from "../support/helm.ts";
import { KubeApiStandIn } from "../support/kube-api-stand-in.ts";
import { waitFor, type RunResult } from "../support/netns.ts";
import { BUCKET_URL, CHART_FILTER, DNS_IP, GOOGLE_IP, LOCKED_IP, METADATA_IP, SERVICE_CIDR, SERVICE_IP, TutorialWorld, type PodNs } from "../support/tutorial-world.ts";
import { wiringTitle } from "../support/datapath.ts";

describe(`the tutorial, end to end (namespaces, ${wiringTitle()}; Kubernetes API stand-in)`, function () {
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

  describe("the chart's `helm test` pod script (templates/tests/test-isolation.yaml), run in the pods", () => {
    let script: string;

    before(async () => {
      // Rendered by Helm with the values this world matches (the tutorial's URLs, host and status are the defaults).
      // As against a cluster (the stand-in), where the chart may generate its CA.
      const api = await KubeApiStandIn.start({ anonymous: true });
      const objs = await template({ set: { "lock.blockCidrs": [SERVICE_CIDR], "lock.allowDns": [DNS_IP] }, kubeconfig: api.kubeconfigPath }).finally(() => api.close());
      const spec = one(objs, "Pod", "-test-isolation")["spec"] as { containers: Array<{ command: string[]; args: string[] }> };
      expect(spec.containers[0]!.command).to.deep.equal(["/bin/bash", "-c"]);
      expect(spec.containers[0]!.args).to.have.length(1);
      script = spec.containers[0]!.args[0]!;
    });

    /** Runs the script as the test pod's container would, with the variables the kubelet sets for the API's Service. */
    const runScript = (pod: PodNs): Promise<RunResult> =>
      pod.ns.run("/bin/bash", ["-c", script], {
        env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", KUBERNETES_SERVICE_HOST: SERVICE_IP, KUBERNETES_SERVICE_PORT: "443" },
        timeoutMs: 120_000,
      });
    const verdicts = (r: RunResult): string[] => r.stdout.split("\n").filter((l) => /^(ok|FAIL) /.test(l));
    const ALLOWED = `ok   allowed ${BUCKET_URL}: 200`;
    const PING_OK = "ok   ping not permitted";

    it("exits 0 in the locked pod, every check passing", async () => {
      const r = await runScript(world.locked);
      expect(verdicts(r), r.stdout + r.stderr).to.deep.equal([
        ALLOWED,
        "ok   denied https://www.google.com: 418",
        "ok   metadata server http://169.254.169.254/computeMetadata/v1/: 418",
        `ok   service range ${SERVICE_IP} blocked (curl exit): 7`,
        PING_OK,
      ]);
      expect(r.stdout).to.include("ping: sendmsg: Operation not permitted");
      expect(r.code, r.stdout + r.stderr).to.equal(0);
    });

    it("exits non-zero in the unlocked pod (control): every isolation check fails", async () => {
      const r = await runScript(world.app);
      expect(verdicts(r), r.stdout + r.stderr).to.deep.equal([
        ALLOWED,
        "FAIL denied https://www.google.com: got 200, want 418",
        "FAIL metadata server http://169.254.169.254/computeMetadata/v1/: got 200, want 418",
        `FAIL service range ${SERVICE_IP} blocked (curl exit): got 0, want 7`,
        'FAIL ping: exit 0 without "Operation not permitted", want the lock to refuse ICMP with EPERM',
      ]);
      expect(r.code).to.equal(1);
    });

    it("exits non-zero in the locked pod when the filter allows everything", async () => {
      world.updateFilter("export default { request() {} };\n");
      try {
        await waitFor("the allow-all filter", async () => (await status("locked", "https://www.google.com")) === "200", 5000, 100);
        const r = await runScript(world.locked);
        expect(verdicts(r), r.stdout + r.stderr).to.include("FAIL denied https://www.google.com: got 200, want 418");
        expect(verdicts(r)).to.include(PING_OK);
        expect(r.code).to.equal(1);
      } finally {
        world.updateFilter(readFileSync(CHART_FILTER, "utf8"));
        await waitFor("418 again", async () => (await status("locked", "https://www.google.com")) === "418", 5000, 100);
      }
    });

    it("exits non-zero when ping fails for another reason than the lock (no answer, no EPERM)", async () => {
      // The pod's lock lets ICMP out; the node drops it instead: ping fails, but not with EPERM.
      const podRule = ["TPROXY-EGRESS", "1", "-p", "icmp", "-j", "ACCEPT"];
      const nodeRule = ["FORWARD", "1", "-s", `${LOCKED_IP}/32`, "-d", `${GOOGLE_IP}/32`, "-p", "icmp", "-j", "DROP"];
      await world.locked.ns.must("iptables", ["-I", ...podRule]);
      await world.node.must("iptables", ["-I", ...nodeRule]);
      try {
        const r = await runScript(world.locked);
        expect(r.stdout).to.match(/1 packets transmitted, 0 received, 100% packet loss/);
        expect(r.stdout).not.to.include("ping: sendmsg");
        expect(verdicts(r), r.stdout + r.stderr).to.deep.equal([
          ALLOWED,
          "ok   denied https://www.google.com: 418",
          "ok   metadata server http://169.254.169.254/computeMetadata/v1/: 418",
          `ok   service range ${SERVICE_IP} blocked (curl exit): 7`,
          'FAIL ping: exit 1 without "Operation not permitted", want the lock to refuse ICMP with EPERM',
        ]);
        expect(r.code).to.equal(1);
      } finally {
        await world.locked.ns.must("iptables", ["-D", ...podRule.filter((_, i) => i !== 1)]);
        await world.node.must("iptables", ["-D", ...nodeRule.filter((_, i) => i !== 1)]);
      }
    });
  });
});
