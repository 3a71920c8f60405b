// The chart's escape hatches (as in cert-manager's chart): pod and container security contexts as values,
// an optional PodMonitor, more files next to the filter and a Secret for it. Rendered by the real Helm 4,
// every object validated against its schema; defaults render what the templates hard-coded before; and
// the real proxy loads a filter that imports a file from filter.files.
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { once } from "node:events";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT, flagValue, freePort, helm, makeTestCa, one, parseManifests, renderArgs, validateObject, type K8sObject } from "../support/helm.ts";

interface SecurityContext { [field: string]: unknown }
interface Container { name: string; args?: string[]; ports?: { name: string; containerPort: number }[]; securityContext?: SecurityContext; volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[] }
interface PodSpec { securityContext?: SecurityContext; containers: Container[]; volumes?: { name: string; secret?: { secretName: string; defaultMode?: number } }[] }

function podOf(objs: K8sObject[]): { spec: PodSpec; podwatch: Container; proxy: Container } {
  const spec = (one(objs, "DaemonSet")["spec"] as { template: { spec: PodSpec } }).template.spec;
  const byName = (n: string) => spec.containers.find((c) => c.name === n) ?? expect.fail(`DaemonSet has no container ${n}`);
  return { spec, podwatch: byName("podwatch"), proxy: byName("tproxy") };
}

/** A PodMonitor endpoint's relabelings: keep the target of one container, aim it at a port of the pod's address. */
function target(container: string, port: number): unknown[] {
  return [
    { action: "keep", sourceLabels: ["__meta_kubernetes_pod_container_name"], regex: container },
    { action: "replace", sourceLabels: ["__meta_kubernetes_pod_ip"], regex: "(.+)", targetLabel: "__address__", replacement: `$1:${port}` },
  ];
}

let tmp: string;
let ca: { cert: string; key: string };

/** `helm template` with a supplied CA (no cluster needed) and these values (`--set-json`, `--set-file`). */
function render(set: Record<string, unknown> = {}, setFile: Record<string, string> = {}) {
  return helm(["template", ...renderArgs({ set: { "ca.cert": ca.cert, "ca.key": ca.key, ...set }, setFile })]);
}
async function objects(set: Record<string, unknown> = {}, setFile: Record<string, string> = {}): Promise<K8sObject[]> {
  const r = await render(set, setFile);
  if (r.code !== 0) throw new Error(`helm template failed: ${r.stderr}`);
  return parseManifests(r.stdout);
}
/** A render that must fail: helm's message. */
async function failure(set: Record<string, unknown>, setFile: Record<string, string> = {}): Promise<string> {
  const r = await render(set, setFile);
  expect(r.code, `rendered although it should fail:\n${r.stdout.slice(0, 400)}`).to.not.equal(0);
  return r.stderr;
}

describe("helm chart charts/tproxy: escape hatches", function () {
  this.timeout(120_000);

  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), "tproxy-hatches-"));
    ca = await makeTestCa(tmp, "hatches test CA");
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  describe("security contexts", () => {
    it("render by default exactly what the templates hard-coded: podwatch NET_ADMIN + NET_RAW only, the proxy non-root with no capabilities", async () => {
      const { spec, podwatch, proxy } = podOf(await objects());
      expect(spec.securityContext).to.deep.equal({ seccompProfile: { type: "RuntimeDefault" }, fsGroup: 65532 });
      expect(podwatch.securityContext).to.deep.equal({
        runAsUser: 0, runAsNonRoot: false, privileged: false, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true,
        capabilities: { drop: ["ALL"], add: ["NET_ADMIN", "NET_RAW"] },
      });
      expect(proxy.securityContext).to.deep.equal({
        runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, privileged: false, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true,
        capabilities: { drop: ["ALL"] },
      });
    });

    it("take the pod's and each container's from values, merged key by key, null dropping a key", async () => {
      const objs = await objects({
        "daemonset.podSecurityContext.fsGroup": 2000,
        "daemonset.podSecurityContext.supplementalGroups": [3000],
        "proxy.securityContext.runAsUser": 1000,
        "proxy.securityContext.runAsGroup": 2000,
        "proxy.securityContext.readOnlyRootFilesystem": null,
        "podwatch.securityContext.seccompProfile": { type: "Localhost", localhostProfile: "profiles/podwatch.json" },
      });
      for (const o of objs) await validateObject(o);
      const { spec, podwatch, proxy } = podOf(objs);
      expect(spec.securityContext).to.deep.equal({ seccompProfile: { type: "RuntimeDefault" }, fsGroup: 2000, supplementalGroups: [3000] });
      expect(proxy.securityContext).to.deep.equal({
        runAsNonRoot: true, runAsUser: 1000, runAsGroup: 2000, privileged: false, allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] },
      });
      expect(podwatch.securityContext).to.deep.include({ seccompProfile: { type: "Localhost", localhostProfile: "profiles/podwatch.json" }, capabilities: { drop: ["ALL"], add: ["NET_ADMIN", "NET_RAW"] } });
    });

    const rejected: [string, Record<string, unknown>, RegExp][] = [
      ["a misspelt container field", { "proxy.securityContext.runAsUsr": 1000 }, /proxy\/securityContext': additional properties 'runAsUsr' not allowed/],
      ["a pod field in a container's context", { "podwatch.securityContext.fsGroup": 1 }, /podwatch\/securityContext': additional properties 'fsGroup' not allowed/],
      ["an unknown seccomp profile type", { "daemonset.podSecurityContext.seccompProfile.type": "Strict" }, /daemonset\/podSecurityContext\/seccompProfile\/type/],
      ["a capability that is a word of lower case", { "proxy.securityContext.capabilities.add": ["net_admin"] }, /proxy\/securityContext\/capabilities\/add\/0/],
      ["a negative uid", { "proxy.securityContext.runAsUser": -1 }, /proxy\/securityContext\/runAsUser/],
    ];
    for (const [what, set, where] of rejected) {
      it(`rejects ${what} with Helm's schema error`, async () => {
        const stderr = await failure(set);
        expect(stderr).to.include("values don't meet the specifications of the schema");
        expect(stderr).to.match(where);
      });
    }
  });

  describe("the PodMonitor", () => {
    const open = { "proxy.metricsAddress": "0.0.0.0", "podwatch.metricsAddress": "0.0.0.0" };

    it("is not rendered by default", async () => {
      expect((await objects()).filter((o) => o.kind === "PodMonitor")).to.deep.equal([]);
    });

    it("scrapes /metrics of both containers' metrics ports, on the DaemonSet's pods, when enabled with the metrics on 0.0.0.0", async () => {
      const objs = await objects({ ...open, "podMonitor.enabled": true });
      const pm = one(objs, "PodMonitor");
      await validateObject(pm);
      const { spec: podSpec, podwatch, proxy } = podOf(objs);
      expect(pm.metadata.name).to.equal("tproxy");
      expect(pm.metadata.namespace).to.equal("tproxy-system");
      expect(pm["spec"]).to.deep.equal({
        selector: { matchLabels: { "app.kubernetes.io/name": "tproxy", "app.kubernetes.io/instance": "tproxy", "app.kubernetes.io/component": "node" } },
        podMetricsEndpoints: [
          { path: "/metrics", honorLabels: false, relabelings: target("podwatch", 15172) },
          { path: "/metrics", honorLabels: false, relabelings: target("tproxy", 15171) },
        ],
      });
      // The ports it points at are the containers' metrics ports, and its selector picks the DaemonSet's pods.
      expect(flagValue(proxy.args!, "--metrics-port")).to.equal("15171");
      expect(flagValue(podwatch.args!, "--metrics-port")).to.equal("15172");
      const podLabels = (one(objs, "DaemonSet")["spec"] as { template: { metadata: { labels: Record<string, string> } } }).template.metadata.labels;
      for (const [k, v] of Object.entries((pm["spec"] as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels)) expect(podLabels[k]).to.equal(v);
      expect(podSpec.containers).to.have.length(2);
    });

    it("takes interval, scrape timeout, honorLabels, labels and annotations from values", async () => {
      const pm = one(await objects({
        ...open, "podMonitor.enabled": true, "podMonitor.interval": "30s", "podMonitor.scrapeTimeout": "10s", "podMonitor.honorLabels": true,
        "podMonitor.labels": { release: "kube-prometheus-stack" }, "podMonitor.annotations": { team: "platform" },
      }), "PodMonitor");
      await validateObject(pm);
      expect(pm.metadata.labels?.["release"]).to.equal("kube-prometheus-stack");
      expect(pm.metadata.labels?.["app.kubernetes.io/name"]).to.equal("tproxy");
      expect(pm.metadata.annotations).to.deep.equal({ team: "platform" });
      for (const e of (pm["spec"] as { podMetricsEndpoints: unknown[] }).podMetricsEndpoints) expect(e).to.deep.include({ interval: "30s", scrapeTimeout: "10s", honorLabels: true });
    });

    it("fails, naming the values to set, while a metrics endpoint listens on the node's loopback", async () => {
      const both = await failure({ "podMonitor.enabled": true });
      expect(both).to.include('podMonitor.enabled: Prometheus scrapes /metrics on the node\'s address, but proxy.metricsAddress is "127.0.0.1" and podwatch.metricsAddress is "127.0.0.1", the node\'s loopback');
      expect(both).to.include("set proxy.metricsAddress=0.0.0.0 and podwatch.metricsAddress=0.0.0.0");
      const one_ = await failure({ "podMonitor.enabled": true, "proxy.metricsAddress": "0.0.0.0", "podwatch.metricsAddress": "::1" });
      expect(one_).to.include('but podwatch.metricsAddress is "::1", the node\'s loopback');
      expect(one_).not.to.include("proxy.metricsAddress is");
      const proxyOnly = await failure({ "podMonitor.enabled": true, "proxy.metricsAddress": "127.0.0.2", "podwatch.metricsAddress": "0.0.0.0" });
      expect(proxyOnly).to.include('but proxy.metricsAddress is "127.0.0.2", the node\'s loopback');
    });

    it("rejects a scrape interval that is no duration, and an unknown key, with Helm's schema error", async () => {
      expect(await failure({ ...open, "podMonitor.enabled": true, "podMonitor.interval": "often" })).to.match(/podMonitor\/interval/);
      expect(await failure({ "podMonitor.path": "/stats" })).to.match(/podMonitor': additional properties 'path' not allowed/);
    });
  });

  describe("filter.files and filter.secret", () => {
    it("adds each of filter.files next to filter.ts, which stays the script as given (the proxy's version covers every file)", async () => {
      const script = "export default {};\n";
      const withA = one(await objects({ "filter.script": script, "filter.files": { "rules.json": '{"deny":["a.example"]}\n', "hosts.ts": "export const hosts = [];\n" } }), "ConfigMap", "-filter");
      await validateObject(withA);
      const data = withA["data"] as Record<string, string>;
      expect(Object.keys(data).sort()).to.deep.equal(["filter.ts", "hosts.ts", "rules.json"]);
      expect(data["rules.json"]).to.equal('{"deny":["a.example"]}\n');
      expect(data["hosts.ts"]).to.equal("export const hosts = [];\n");
      expect(data["filter.ts"]).to.equal(script);
      // Without filter.files, filter.ts is the script as given too.
      const plain = one(await objects({ "filter.script": script }), "ConfigMap", "-filter");
      expect(plain["data"]).to.deep.equal({ "filter.ts": script });
    });

    it("takes a file's text with --set-file, and leaves the DaemonSet as it was (no rollout when the files change)", async () => {
      writeFileSync(join(tmp, "allow-list.json"), '["storage.googleapis.com"]\n');
      const objs = await objects({}, { "filter.files.allow-list\\.json": join(tmp, "allow-list.json") });
      expect((one(objs, "ConfigMap", "-filter")["data"] as Record<string, string>)["allow-list.json"]).to.equal('["storage.googleapis.com"]\n');
      expect(one(objs, "DaemonSet")).to.deep.equal(one(await objects(), "DaemonSet"));
    });

    it("refuses names that cannot sit next to filter.ts, and content that is no text, saying why", async () => {
      expect(await failure({ "filter.files": { "filter.ts": "export default {};" } })).to.include('filter.files: "filter.ts" is the filter itself; set filter.script');
      for (const name of ["lib/rules.json", "..data", "rules json", "."]) {
        expect(await failure({ "filter.files": { [name]: "{}" } }), name).to.include(`filter.files: ${JSON.stringify(name)} is not a file name the filter ConfigMap can hold next to filter.ts`);
      }
      expect(await failure({ "filter.files": { "rules.json": { deny: [] } } })).to.match(/filter\/files\/rules.json': got object, want string/);
    });

    it("mounts filter.secret read-only into the proxy container only, group-readable (0440) by the proxy's group", async () => {
      const objs = await objects({ "filter.secret.name": "api-token" });
      for (const o of objs) await validateObject(o);
      const { spec, podwatch, proxy } = podOf(objs);
      expect(spec.volumes?.find((v) => v.name === "filter-secret")).to.deep.equal({ name: "filter-secret", secret: { secretName: "api-token", defaultMode: 0o440 } });
      expect(proxy.volumeMounts?.find((m) => m.name === "filter-secret")).to.deep.equal({ name: "filter-secret", mountPath: "/etc/tproxy/filter-secret", readOnly: true });
      expect(podwatch.volumeMounts?.map((m) => m.name)).not.to.include("filter-secret");
      expect(spec.securityContext?.["fsGroup"]).to.equal((proxy.securityContext as { runAsGroup: number }).runAsGroup);
      // None by default.
      expect(podOf(await objects()).spec.volumes?.map((v) => v.name)).not.to.include("filter-secret");
      expect(await failure({ "filter.secret.name": "Not_A_Name" })).to.match(/filter\/secret\/name/);
    });

    it("the real proxy, run with the rendered arguments and mounts, loads a filter importing a JSON file from filter.files and reading filter.secret, decides by them, and reloads when only the file changes", async function () {
      this.timeout(90_000);
      const script = [
        'import type { Filter } from "@tproxy/tproxy/filter";',
        'import { readFileSync } from "node:fs";',
        'import { join } from "node:path";',
        'import rules from "./rules.json";',
        "// The Secret is mounted beside the filter: /etc/tproxy/filter-secret next to /etc/tproxy/filter.",
        'const token = readFileSync(join(__dirname, "../filter-secret/token"), "utf8").trim();',
        "export default {",
        "  request(flow) {",
        "    const denied = (rules.deny as string[]).includes(flow.request.host);",
        '    flow.respond(denied ? 451 : 200, `${denied ? "denied" : "allowed"} by rules.json: ${flow.request.host}`, { "x-token": token });',
        "  },",
        "} satisfies Filter;",
        "",
      ].join("\n");
      const renderWith = (deny: string[]) => objects({ "proxy.standardMode.enabled": true, "filter.script": script, "filter.files": { "rules.json": JSON.stringify({ deny }) }, "filter.secret.name": "api-token" });
      const objs = await renderWith(["denied.example"]);
      const { proxy } = podOf(objs);
      const root = join(tmp, "etc-tproxy");
      const secret = one(objs, "Secret", "-ca")["data"] as Record<string, string>;
      mkdirSync(join(root, "ca"), { recursive: true });
      mkdirSync(join(root, "filter"), { recursive: true });
      writeFileSync(join(root, "ca/tls.crt"), Buffer.from(secret["tls.crt"]!, "base64"));
      writeFileSync(join(root, "ca/tls.key"), Buffer.from(secret["tls.key"]!, "base64"), { mode: 0o600 });
      // The filter Secret where the rendered mount puts it, relative to the filter's mount.
      const secretMount = proxy.volumeMounts?.find((m) => m.name === "filter-secret")?.mountPath ?? expect.fail("no filter-secret mount");
      expect(secretMount).to.match(/^\/etc\/tproxy\//);
      mkdirSync(join(root, secretMount.slice("/etc/tproxy/".length)), { recursive: true });
      writeFileSync(join(root, secretMount.slice("/etc/tproxy/".length), "token"), "s3cret-token\n");
      const writeFilter = (cm: K8sObject) => {
        const data = cm["data"] as Record<string, string>;
        // As the kubelet's swap shows them: the imported file is in place when filter.ts changes.
        for (const name of Object.keys(data).sort((a, b) => Number(a === "filter.ts") - Number(b === "filter.ts"))) writeFileSync(join(root, "filter", name), data[name]!);
      };
      writeFilter(one(objs, "ConfigMap", "-filter"));

      const [transparent, standard, metrics] = [await freePort(), await freePort(), await freePort()];
      const args = proxy.args!.map((a) => a.replace(/^\/etc\/tproxy\//, `${root}/`));
      args[args.indexOf("--transparent-port") + 1] = String(transparent);
      args[args.indexOf("--standard-port") + 1] = String(standard);
      args[args.indexOf("--metrics-port") + 1] = String(metrics);
      const child = spawn(process.execPath, [join(REPO_ROOT, "packages/tproxy/dist/cli.js"), ...args, "--listen-address", "127.0.0.1", "--workers", "1"], { stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      child.stdout!.on("data", (b: Buffer) => (output += b.toString()));
      child.stderr!.on("data", (b: Buffer) => (output += b.toString()));
      try {
        await until(child, async () => (await fetch(`http://127.0.0.1:${metrics}/readyz`).then((r) => r.status, () => 0)) === 200, () => `proxy not ready:\n${output}`);
        const ask = (host: string) => viaProxy(standard, `http://${host}/`);
        expect(await ask("denied.example"), output).to.deep.equal({ status: 451, body: "denied by rules.json: denied.example", token: "s3cret-token" });
        expect(await ask("other.example"), output).to.deep.equal({ status: 200, body: "allowed by rules.json: other.example", token: "s3cret-token" });

        // Only rules.json changes (filter.script as before): the proxy's version covers it, so it reloads.
        writeFilter(one(await renderWith(["other.example"]), "ConfigMap", "-filter"));
        await until(child, async () => (await ask("other.example")).status === 451, () => `the proxy kept the old rules.json:\n${output}`);
        expect(await ask("denied.example")).to.deep.equal({ status: 200, body: "allowed by rules.json: denied.example", token: "s3cret-token" });
      } finally {
        child.kill("SIGTERM");
        if (child.exitCode === null) await once(child, "exit");
      }
    });
  });

  it("passes helm lint --strict with every escape hatch set", async () => {
    const [, chart, ...flags] = renderArgs({
      set: {
        "ca.cert": ca.cert, "ca.key": ca.key, "podMonitor.enabled": true, "proxy.metricsAddress": "0.0.0.0", "podwatch.metricsAddress": "0.0.0.0",
        "filter.files": { "rules.json": "{}" }, "filter.secret.name": "api-token", "proxy.securityContext.runAsUser": 1000,
      },
    });
    const r = await helm(["lint", "--strict", chart!, ...flags]);
    expect(r.code, `${r.stdout}${r.stderr}`).to.equal(0);
    expect(r.stdout).to.match(/1 chart\(s\) linted, 0 chart\(s\) failed/);
  });
});

/** Polls `ok` every 200 ms until it holds, for up to 30 s or until the child exits. */
async function until(child: ChildProcess, ok: () => Promise<boolean>, why: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && child.exitCode === null) {
    if (await ok().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  expect.fail(why());
}

/** An absolute-form request through the proxy's standard port, as a client with http_proxy set sends it. */
function viaProxy(port: number, url: string): Promise<{ status: number; body: string; token: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method: "GET", path: url, headers: { host: new URL(url).host } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, token: res.headers["x-token"] as string | undefined }));
    });
    req.on("error", reject);
    req.end();
  });
}
