// lock.mode cni in the chart, rendered by the real Helm: the DaemonSet's install-cni container and its
// host folders, podwatch's socket, and the init container snippet (NOTES, the test pod) that passes Pod
// Security "restricted": no capability added, all dropped, non-root, RuntimeDefault seccomp. Sidecar mode
// renders as before.
import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { helm, makeTestCa, mustHelm, one, renderArgs, template, validateObject, type K8sObject, type RenderOptions } from "../support/helm.ts";

interface SecurityContext {
  runAsUser?: number; runAsNonRoot?: boolean; privileged?: boolean; allowPrivilegeEscalation?: boolean;
  capabilities?: { add?: string[]; drop?: string[] }; seccompProfile?: { type: string };
}
interface Container { name: string; image: string; command?: string[]; args?: string[]; env?: unknown[]; securityContext?: SecurityContext; volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }> }
interface PodSpec { containers: Container[]; initContainers?: Container[]; volumes?: Array<{ name: string; hostPath?: { path: string; type?: string } }> }

const CNI = { "lock.mode": "cni", "lock.allowDns": ["10.96.0.10"], "lock.blockCidrs": ["10.96.0.0/12"] };

describe("chart: lock.mode cni", function () {
  this.timeout(60_000);
  let tmp: string;
  let ca: { cert: string; key: string };
  const withCa = (set: Record<string, unknown>): RenderOptions => ({ set: { ...set, "ca.existingSecret": "tproxy-ca", "ca.cert": ca.cert } });
  const podOf = (objs: K8sObject[]) => ((one(objs, "DaemonSet")["spec"] as { template: { spec: PodSpec } }).template.spec);
  const byName = (spec: PodSpec, name: string) => spec.containers.find((c) => c.name === name);
  /** The init container snippet as NOTES prints it. */
  async function notesInit(set: Record<string, unknown>): Promise<Container> {
    const out = await mustHelm(["install", ...renderArgs(withCa(set)), "--dry-run=client"]);
    const text = out.slice(out.indexOf("\nNOTES:\n"));
    const a = text.indexOf("# ----- paste into spec.template -----");
    const b = text.indexOf("# ----- end -----");
    return (parseYaml(text.slice(a + "# ----- paste into spec.template -----".length, b)) as { spec: PodSpec }).spec.initContainers![0]!;
  }
  /** What Pod Security "restricted" asks of a container (capabilities, privilege, user, seccomp). */
  function restrictedProblems(c: Container): string[] {
    const s = c.securityContext ?? {};
    const out: string[] = [];
    if ((s.capabilities?.add ?? []).some((x) => x !== "NET_BIND_SERVICE")) out.push(`adds ${s.capabilities?.add?.join(",")}`);
    if (!(s.capabilities?.drop ?? []).includes("ALL")) out.push("does not drop ALL");
    if (s.allowPrivilegeEscalation !== false) out.push("allowPrivilegeEscalation not false");
    if (s.privileged === true) out.push("privileged");
    if (s.runAsNonRoot !== true) out.push("runAsNonRoot not true");
    if (s.runAsUser === 0) out.push("runAsUser 0");
    if (s.seccompProfile?.type !== "RuntimeDefault" && s.seccompProfile?.type !== "Localhost") out.push("no seccompProfile");
    return out;
  }

  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), "tproxy-chart-cni-"));
    ca = await makeTestCa(tmp, "chart cni test CA");
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it("passes helm lint --strict", async () => {
    const [, chart, ...flags] = renderArgs(withCa(CNI));
    const r = await helm(["lint", "--strict", chart!, ...flags]);
    expect(r.code, `${r.stdout}${r.stderr}`).to.equal(0);
    expect(r.stdout).to.match(/1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  it("renders only valid objects; the DaemonSet installs tproxy-cni with the host's CNI folders and podwatch serves its socket", async () => {
    const objs = await template(withCa({ ...CNI, "cni.binDir": "/home/kubernetes/bin" }));
    for (const o of objs) await validateObject(o);
    const spec = podOf(objs);
    const install = byName(spec, "install-cni")!;
    expect(install.command).to.deep.equal(["tproxy-cni-install", "run"]);
    expect(install.image).to.match(/tproxy\/sidecar-init:/);
    const args = install.args!;
    const settings = JSON.parse(args[args.indexOf("--settings") + 1]!) as Record<string, unknown>;
    expect(settings).to.deep.equal({ socket: "/var/run/tproxy/cni.sock", allowDns: ["10.96.0.10"], blockCidrs: ["10.96.0.0/12"], excludeNamespaces: ["kube-system"] });
    expect(args.slice(args.indexOf("--bin-dir"), args.indexOf("--bin-dir") + 2)).to.deep.equal(["--bin-dir", "/host/cni/bin"]);
    expect(install.securityContext?.capabilities).to.deep.equal({ drop: ["ALL"] });
    const volumes = Object.fromEntries((spec.volumes ?? []).map((v) => [v.name, v.hostPath?.path]));
    expect(volumes).to.include({ "cni-bin": "/home/kubernetes/bin", "cni-conf": "/etc/cni/net.d", "cni-socket": "/var/run/tproxy" });
    expect(install.volumeMounts!.map((m) => [m.name, m.mountPath])).to.deep.equal([["cni-bin", "/host/cni/bin"], ["cni-conf", "/host/cni/net.d"], ["cni-socket", "/var/run/tproxy-cni"]]);
    const podwatch = byName(spec, "podwatch")!;
    expect(podwatch.args!.slice(podwatch.args!.indexOf("--cni-socket"), podwatch.args!.indexOf("--cni-socket") + 2)).to.deep.equal(["--cni-socket", "/var/run/tproxy-cni/cni.sock"]);
    expect(podwatch.volumeMounts!.find((m) => m.name === "cni-socket")?.mountPath).to.equal("/var/run/tproxy-cni");
  });

  it("prints (NOTES) and runs (helm test pod) an init container that passes Pod Security restricted: --mode wait, no capability", async () => {
    const init = await notesInit(CNI);
    expect(init.name).to.equal("tproxy");
    expect(init.args).to.deep.equal(["--mode", "wait"]);
    expect(init.env).to.equal(undefined);
    expect(restrictedProblems(init)).to.deep.equal([]);
    const testPod = (await template(withCa(CNI))).find((o) => o.kind === "Pod")!;
    expect(restrictedProblems((testPod["spec"] as PodSpec).initContainers![0]!)).to.deep.equal([]);
  });

  it("sidecar mode (the default) is unchanged: the init container writes the lock with NET_ADMIN, no CNI parts on the node", async () => {
    const init = await notesInit({ "lock.allowDns": ["10.96.0.10"] });
    expect(init.args).to.equal(undefined);
    expect(init.securityContext?.capabilities).to.deep.equal({ drop: ["ALL"], add: ["NET_ADMIN", "NET_RAW"] });
    expect(restrictedProblems(init)).to.include("adds NET_ADMIN,NET_RAW");
    const spec = podOf(await template(withCa({})));
    expect(byName(spec, "install-cni")).to.equal(undefined);
    expect(byName(spec, "podwatch")!.args).not.to.include("--cni-socket");
    expect((spec.volumes ?? []).map((v) => v.name)).not.to.include.members(["cni-bin", "cni-conf", "cni-socket"]);
  });

  it("refuses cni mode without lock.allowDns (the plugin cannot read the pod's resolv.conf) and with standard mode", async () => {
    const noDns = await helm(["template", ...renderArgs(withCa({ "lock.mode": "cni" }))]);
    expect(noDns.code).to.not.equal(0);
    expect(noDns.stderr).to.match(/lock\.mode cni needs lock\.allowDns/);
    const standard = await helm(["template", ...renderArgs(withCa({ ...CNI, "proxy.standardMode.enabled": true }))]);
    expect(standard.code).to.not.equal(0);
    expect(standard.stderr).to.match(/transparent mode only/);
    const bad = await helm(["template", ...renderArgs(withCa({ "lock.mode": "ebpf" }))]);
    expect(bad.stderr).to.match(/at .\/lock\/mode.: value must be one of .sidecar., .cni./);
  });
});
