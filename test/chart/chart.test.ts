// The Helm chart, rendered by the real Helm 4 (from the npm package that ships it) over the default
// values and several variants; every rendered object validated against the Kubernetes schemas.
import { expect } from "chai";
import { execFile, spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { once } from "node:events";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { parse as parseYaml } from "yaml";
import { KubeApiStandIn } from "../support/kube-api-stand-in.ts";
import { withCluster } from "../support/cluster.ts";
import { Netns, uniqueName } from "../support/netns.ts";
import { CHART_DIR, REPO_ROOT, flagValue, freePort, helm, makeTestCa, mustHelm, one, parseManifests, renderArgs, template, validateObject, type K8sObject, type RenderOptions } from "../support/helm.ts";
import { BASE_MIB, PER_CONNECTION_KIB, PER_WORKER_MIB, RESERVE_CONNECTIONS, planWorkers } from "../../packages/tproxy/src/resources.ts";

const pexec = promisify(execFile);

// ---- shapes of the objects the tests look into ----
interface EnvVar { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }
interface Mount { name: string; mountPath: string; subPath?: string; readOnly?: boolean }
interface SecurityContext {
  runAsUser?: number; runAsNonRoot?: boolean; privileged?: boolean; allowPrivilegeEscalation?: boolean;
  readOnlyRootFilesystem?: boolean; capabilities?: { add?: string[]; drop?: string[] };
}
interface Container {
  name: string; image: string; command?: string[]; args?: string[]; env?: EnvVar[]; volumeMounts?: Mount[];
  securityContext?: SecurityContext; ports?: { name: string; containerPort: number }[];
  livenessProbe?: { httpGet?: { path: string; port: string | number; host?: string } }; readinessProbe?: { httpGet?: { path: string; port: string | number; host?: string } };
  startupProbe?: { httpGet?: { path: string; port: string | number; host?: string }; periodSeconds?: number; failureThreshold?: number };
  terminationMessagePolicy?: string;
  resources?: unknown;
}
interface Volume {
  name: string; secret?: { secretName: string }; configMap?: { name: string; items?: unknown[] }; hostPath?: { path: string };
  projected?: { sources: Array<{ serviceAccountToken?: { path: string }; configMap?: { items?: Array<{ path: string }> }; downwardAPI?: { items?: Array<{ path: string }> } }> };
}
interface PodSpec {
  hostNetwork?: boolean; dnsPolicy?: string; containers: Container[]; initContainers?: Container[]; volumes?: Volume[];
  securityContext?: { seccompProfile?: { type: string } }; serviceAccountName?: string; automountServiceAccountToken?: boolean;
  priorityClassName?: string; tolerations?: Array<Record<string, string>>;
}
interface PodTemplate { metadata: { labels: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec }

function daemonSetPod(objs: K8sObject[]): { ds: K8sObject; tpl: PodTemplate; podwatch: Container; proxy: Container } {
  const ds = one(objs, "DaemonSet");
  const tpl = (ds["spec"] as { template: PodTemplate }).template;
  const byName = (n: string) => {
    const c = tpl.spec.containers.find((x) => x.name === n);
    if (c === undefined) throw new Error(`DaemonSet has no container ${n}`);
    return c;
  };
  return { ds, tpl, podwatch: byName("podwatch"), proxy: byName("tproxy") };
}

/** Objects of the chart but the injector's (its TLS Secret and ClusterRole are checked in injector.test.ts). */
const notInjector = (o: K8sObject) => o.metadata.labels?.["app.kubernetes.io/component"] !== "injector";

function envOf(c: Container): Record<string, EnvVar> {
  return Object.fromEntries((c.env ?? []).map((e) => [e.name, e]));
}

/** NOTES.txt as `helm install --dry-run=client` prints it (no cluster: the CA is supplied, the test CA unless the values give one). */
async function notes(opts: RenderOptions = {}): Promise<string> {
  const out = await mustHelm(["install", ...renderArgs(withCa({ ...opts, kubeconfig: undefined })), "--dry-run=client"]);
  const i = out.indexOf("\nNOTES:\n");
  if (i < 0) throw new Error("helm install --dry-run printed no NOTES");
  return out.slice(i + "\nNOTES:\n".length);
}

const BEGIN = "# ----- paste into spec.template -----";
const END = "# ----- end -----";
/** The pod-template snippet NOTES prints between its markers, parsed. */
function snippetOf(text: string): PodTemplate {
  const a = text.indexOf(BEGIN);
  const b = text.indexOf(END);
  if (a < 0 || b < a) throw new Error(`NOTES has no snippet between "${BEGIN}" and "${END}":\n${text}`);
  return parseYaml(text.slice(a + BEGIN.length, b)) as PodTemplate;
}

let tmp: string;
let testCa: { cert: string; key: string };
/** The cluster the chart is rendered against where it makes its own CA (a fresh install: no CA Secret yet). */
let cluster: KubeApiStandIn;

/** Renders against the cluster stand-in (`helm template --dry-run=server`), so the chart may generate its CA. */
function onCluster(opts: RenderOptions = {}): RenderOptions {
  return { ...opts, kubeconfig: cluster.kubeconfigPath };
}

/** The options with a CA Secret named (ca.existingSecret, ca.cert: the test CA) unless they name a CA already (for renders without a cluster). */
function withCa(opts: RenderOptions): RenderOptions {
  const set = opts.set ?? {};
  if ("ca.cert" in set || "ca.existingSecret" in set) return opts;
  return { ...opts, set: { ...set, "ca.existingSecret": "tproxy-ca", "ca.cert": testCa.cert } };
}

// The variants the chart is rendered with in every check below.
const VARIANTS: Record<string, () => RenderOptions> = {
  default: () => onCluster(),
  "standard mode": () => onCluster({ set: { "proxy.standardMode.enabled": true } }),
  "existing CA secret": () => ({ set: { "ca.existingSecret": "corp-proxy-ca", "ca.cert": testCa.cert } }),
  "blocked CIDR + DNS": () => onCluster({ set: { "lock.blockCidrs": ["10.96.0.0/12", "fd00:10:96::/112"], "lock.allowDns": ["10.96.0.10"] } }),
  "namespaces, legacy iptables, upstream CA, supplied CA": () => ({
    set: {
      "podwatch.namespaces": ["team-a", "team-b"],
      "rootCerts.namespaces": ["team-a", "team-b"],
      "podwatch.iptablesBackend": "legacy",
      "proxy.upstreamCa": testCa.cert,
      "ca.cert": testCa.cert,
      "ca.key": testCa.key,
    },
    releaseName: "edge",
  }),
  // Without a cluster: the stand-in serves no PodMonitor kind, as a cluster without the Prometheus Operator.
  "PodMonitor, filter files and Secret": () => ({
    set: {
      "podMonitor.enabled": true, "proxy.metricsAddress": "0.0.0.0", "podwatch.metricsAddress": "0.0.0.0",
      "filter.files": { "allow-list.json": '["storage.googleapis.com"]' }, "filter.secret.name": "api-token",
      "ca.cert": testCa.cert, "ca.key": testCa.key,
    },
  }),
};

describe("helm chart charts/tproxy", function () {
  this.timeout(120_000);

  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), "tproxy-chart-"));
    testCa = await makeTestCa(tmp, "chart test CA");
    cluster = await KubeApiStandIn.start({ anonymous: true });
  });
  after(async () => {
    await cluster?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  it("passes helm lint --strict with the default values and every variant", async () => {
    for (const [name, variant] of Object.entries(VARIANTS)) {
      // helm lint renders without a cluster; Helm's lint reports the chart's `fail` (no CA) as INFO only.
      const opts = { ...variant(), kubeconfig: undefined };
      const [, chart, ...flags] = renderArgs(opts);
      const r = await helm(["lint", "--strict", chart!, ...flags]);
      expect(r.code, `${name}: ${r.stdout}${r.stderr}`).to.equal(0);
      expect(r.stdout).to.match(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    }
  });

  for (const [name, variant] of Object.entries(VARIANTS)) {
    describe(`rendered with ${name}`, () => {
      let objs: K8sObject[];
      before(async () => {
        objs = await template(variant());
      });

      it("renders only objects valid against the Kubernetes schemas (strict: no unknown fields)", async () => {
        expect(objs.length).to.be.greaterThan(5);
        for (const o of objs) await validateObject(o);
      });

      it("labels every object and selects the DaemonSet's pods by stable labels only", () => {
        for (const o of objs) {
          const l = o.metadata.labels ?? {};
          for (const k of ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component", "app.kubernetes.io/managed-by", "helm.sh/chart", "app.kubernetes.io/version"]) {
            expect(l, `${o.kind}/${o.metadata.name} label ${k}`).to.have.property(k);
          }
          expect(l["app.kubernetes.io/name"]).to.equal("tproxy");
        }
        const { ds, tpl } = daemonSetPod(objs);
        const selector = (ds["spec"] as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels;
        expect(Object.keys(selector).sort()).to.deep.equal(["app.kubernetes.io/component", "app.kubernetes.io/instance", "app.kubernetes.io/name"]);
        for (const [k, v] of Object.entries(selector)) expect(tpl.metadata.labels[k]).to.equal(v);
      });

      it("runs podwatch with NET_ADMIN and NET_RAW only and the proxy non-root with no capabilities", () => {
        const { tpl, podwatch, proxy } = daemonSetPod(objs);
        expect(tpl.spec.hostNetwork).to.equal(true);
        expect(tpl.spec.dnsPolicy).to.equal("ClusterFirstWithHostNet");
        expect(tpl.spec.securityContext?.seccompProfile?.type).to.equal("RuntimeDefault");

        const pw = podwatch.securityContext!;
        expect(pw.capabilities?.drop).to.deep.equal(["ALL"]);
        expect([...(pw.capabilities?.add ?? [])].sort()).to.deep.equal(["NET_ADMIN", "NET_RAW"]);
        expect(pw.privileged).to.equal(false);
        expect(pw.allowPrivilegeEscalation).to.equal(false);
        expect(pw.readOnlyRootFilesystem).to.equal(true);

        const px = proxy.securityContext!;
        expect(px.runAsNonRoot).to.equal(true);
        expect(px.runAsUser).to.be.a("number").and.not.equal(0);
        expect(px.capabilities?.drop).to.deep.equal(["ALL"]);
        expect(px.capabilities?.add ?? []).to.deep.equal([]);
        expect(px.readOnlyRootFilesystem).to.equal(true);
        expect(px.allowPrivilegeEscalation).to.equal(false);

        // Nothing anywhere in the release runs privileged.
        for (const o of objs) expect(JSON.stringify(o), `${o.kind}/${o.metadata.name}`).not.to.match(/"privileged":true/);
      });

      it("gives podwatch its node name, annotation, proxy port and health endpoint", () => {
        const { podwatch, proxy } = daemonSetPod(objs);
        expect(podwatch.command).to.deep.equal(["tproxy-podwatch"]);
        const args = podwatch.args!;
        expect(flagValue(args, "--node-name")).to.equal("$(NODE_NAME)");
        expect(envOf(podwatch)["NODE_NAME"]?.valueFrom?.fieldRef?.fieldPath).to.equal("spec.nodeName");
        // DNAT to the node's address on every datapath (REDIRECT fails on Calico's address-less veths).
        expect(envOf(podwatch)["TPROXY_REDIRECT_TO_ADDRESS"]?.valueFrom?.fieldRef?.fieldPath).to.equal("status.hostIP");
        expect(flagValue(args, "--annotation")).to.equal("initializer.kubernetes.io/tproxy");
        expect(flagValue(args, "--proxy-port")).to.equal(flagValue(proxy.args!, "--transparent-port")).and.equal("15170");
        expect(flagValue(args, "--resync")).to.equal("60s");
        expect(flagValue(args, "--metrics-port")).to.equal("15172");
        expect(podwatch.livenessProbe?.httpGet?.path).to.equal("/healthz");
        expect(podwatch.livenessProbe?.httpGet?.port).to.equal(15172);
        expect(podwatch.volumeMounts?.map((m) => m.mountPath)).to.include("/run/xtables.lock");
      });

      it("binds both admin endpoints to the node's loopback (every address for the PodMonitor), and probes them there", () => {
        const { podwatch, proxy } = daemonSetPod(objs);
        const open = objs.some((o) => o.kind === "PodMonitor");
        expect(flagValue(podwatch.args!, "--metrics-address")).to.equal(open ? "0.0.0.0" : "127.0.0.1");
        expect(flagValue(proxy.args!, "--metrics-address")).to.equal(open ? "0.0.0.0" : "127.0.0.1");
        for (const c of [podwatch, proxy]) {
          expect(c.livenessProbe?.httpGet?.host, `${c.name} liveness`).to.equal(open ? undefined : "127.0.0.1");
          expect(c.readinessProbe?.httpGet?.host, `${c.name} readiness`).to.equal(open ? undefined : "127.0.0.1");
        }
      });

      it("mounts the filter as a directory (no subPath) and the CA into the proxy only", () => {
        const { tpl, podwatch, proxy } = daemonSetPod(objs);
        expect(proxy.command).to.deep.equal(["tproxy"]);
        const args = proxy.args!;
        expect(args[0]).to.equal("run");
        expect(flagValue(args, "--filter")).to.equal("/etc/tproxy/filter/filter.ts");
        expect(flagValue(args, "--ca-cert")).to.equal("/etc/tproxy/ca/tls.crt");
        expect(flagValue(args, "--ca-key")).to.equal("/etc/tproxy/ca/tls.key");
        expect(flagValue(args, "--metrics-port")).to.equal("15171");

        const filterMount = proxy.volumeMounts!.find((m) => m.mountPath === "/etc/tproxy/filter");
        expect(filterMount, "filter mount").to.not.equal(undefined);
        expect(filterMount!.subPath).to.equal(undefined);
        const filterVolume = tpl.spec.volumes!.find((v) => v.name === filterMount!.name)!;
        expect(filterVolume.configMap?.name).to.match(/-filter$/);
        expect(filterVolume.configMap?.items).to.equal(undefined);
        for (const c of [...tpl.spec.containers, ...(tpl.spec.initContainers ?? [])]) {
          for (const m of c.volumeMounts ?? []) expect(m.subPath, `${c.name} ${m.mountPath}`).to.equal(undefined);
        }

        const caVolume = tpl.spec.volumes!.find((v) => v.secret !== undefined)!;
        expect(proxy.volumeMounts!.find((m) => m.name === caVolume.name)?.mountPath).to.equal("/etc/tproxy/ca");
        expect(podwatch.volumeMounts!.map((m) => m.name)).not.to.include(caVolume.name);
        const secretName = caVolume.secret!.secretName;
        const secrets = objs.filter((o) => o.kind === "Secret" && notInjector(o));
        if (name === "existing CA secret") {
          expect(secretName).to.equal("corp-proxy-ca");
          expect(secrets, "no chart-made CA Secret").to.deep.equal([]);
        } else {
          expect(one(objs, "Secret", "-ca").metadata.name).to.equal(secretName);
        }

        expect(proxy.readinessProbe?.httpGet?.path).to.equal("/readyz");
        expect(proxy.livenessProbe?.httpGet?.path).to.equal("/healthz");
      });

      it("gives the API token to podwatch only: no automount, a projected token mounted into podwatch alone", () => {
        const { tpl, podwatch, proxy } = daemonSetPod(objs);
        expect(tpl.spec.automountServiceAccountToken).to.equal(false);
        const saPath = "/var/run/secrets/kubernetes.io/serviceaccount";
        const tokenVolumes = tpl.spec.volumes!.filter((v) => v.projected?.sources.some((s) => s.serviceAccountToken !== undefined));
        expect(tokenVolumes.map((v) => v.name)).to.have.length(1);
        expect(podwatch.volumeMounts!.find((m) => m.name === tokenVolumes[0]!.name)?.mountPath).to.equal(saPath);
        for (const c of [proxy, ...(tpl.spec.initContainers ?? [])]) {
          expect((c.volumeMounts ?? []).map((m) => m.name), c.name).not.to.include(tokenVolumes[0]!.name);
          expect((c.volumeMounts ?? []).map((m) => m.mountPath), c.name).not.to.include(saPath);
        }
        // What client-node's in-cluster config reads: token, ca.crt and namespace, in that folder.
        const paths = tokenVolumes[0]!.projected!.sources.flatMap((s) => [s.serviceAccountToken?.path, ...(s.configMap?.items ?? []).map((i) => i.path), ...(s.downwardAPI?.items ?? []).map((i) => i.path)]);
        expect(paths.filter(Boolean).sort()).to.deep.equal(["ca.crt", "namespace", "token"]);
      });

      it("publishes the CA in the root-certs ConfigMap under ca-certificates.crt, in every listed namespace", () => {
        const roots = objs.filter((o) => o.kind === "ConfigMap" && o.metadata.name.endsWith("-root-certs"));
        const expectNs = name.startsWith("namespaces") ? ["team-a", "team-b", "tproxy-system"] : ["tproxy-system"];
        expect(roots.map((o) => o.metadata.namespace).sort()).to.deep.equal(expectNs);
        const bundle = (roots[0]!["data"] as Record<string, string>)["ca-certificates.crt"]!;
        expect(bundle).to.match(/^-----BEGIN CERTIFICATE-----/);
        const secret = objs.find((o) => o.kind === "Secret" && notInjector(o));
        const caCert = secret ? Buffer.from((secret["data"] as Record<string, string>)["tls.crt"]!, "base64").toString() : testCa.cert;
        expect(bundle.trim()).to.equal(caCert.trim());
      });

      it("follows the variant's values", () => {
        const { podwatch, proxy } = daemonSetPod(objs);
        const pArgs = proxy.args!;
        if (name === "standard mode") {
          expect(flagValue(pArgs, "--standard-port")).to.equal("1080");
          expect(proxy.ports, "no ports declared, the standard one neither").to.equal(undefined);
        } else {
          expect(pArgs).not.to.include("--standard-port");
        }
        // podwatch runs the chosen backend's suffixed programs itself: no PATH of its own for either.
        expect(envOf(podwatch)["PATH"]).to.equal(undefined);
        if (name.startsWith("namespaces")) {
          expect(podwatch.args!.filter((_, i, a) => a[i - 1] === "--namespace")).to.deep.equal(["team-a", "team-b"]);
          expect(flagValue(podwatch.args!, "--iptables-backend")).to.equal("legacy");
          expect(flagValue(pArgs, "--upstream-ca")).to.equal("/etc/tproxy/upstream-ca/ca-bundle.crt");
          expect(objs.filter((o) => o.kind === "Role" && o.metadata.name.endsWith("-podwatch")).map((o) => o.metadata.namespace)).to.deep.equal(["team-a", "team-b"]);
          expect(objs.filter((o) => o.kind === "Role" && o.metadata.name.endsWith("-uninstall-check")).map((o) => o.metadata.namespace)).to.deep.equal(["team-a", "team-b"]);
          expect(objs.filter((o) => o.kind === "ClusterRole" && notInjector(o))).to.deep.equal([]);
          expect(one(objs, "DaemonSet").metadata.name).to.equal("edge-tproxy");
        } else {
          expect(podwatch.args).not.to.include("--namespace");
          expect(flagValue(podwatch.args!, "--iptables-backend")).to.equal("auto");
          const role = one(objs, "ClusterRole", "-podwatch");
          expect(role["rules"]).to.deep.equal([{ apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"] }]);
        }
      });

      it("rolls each node with a surge pod (maxSurge 1, maxUnavailable 0); no container declares ports, which would be hostPorts that keep the surge pod off the node; probes name the admin ports by number", () => {
        const { ds, podwatch, proxy } = daemonSetPod(objs);
        expect((ds["spec"] as { updateStrategy: unknown }).updateStrategy).to.deep.equal({ type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
        for (const c of [podwatch, proxy]) expect(c.ports, c.name).to.equal(undefined);
        for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"] as const) {
          expect(podwatch[probe]?.httpGet?.port, `podwatch ${probe}`).to.equal(Number(flagValue(podwatch.args!, "--metrics-port")));
          expect(proxy[probe]?.httpGet?.port, `proxy ${probe}`).to.equal(Number(flagValue(proxy.args!, "--metrics-port")));
        }
      });

      it("tells podwatch its DaemonSet (TPROXY_DAEMONSET) and lets it get that one only, to tell an uninstall from a restart", () => {
        const { ds, podwatch } = daemonSetPod(objs);
        expect(envOf(podwatch)["TPROXY_DAEMONSET"]?.value).to.equal(`${ds.metadata.namespace}/${ds.metadata.name}`);
        const role = one(objs, "Role", "-podwatch-daemonset");
        expect(role.metadata.namespace).to.equal(ds.metadata.namespace);
        expect(role["rules"]).to.deep.equal([{ apiGroups: ["apps"], resources: ["daemonsets"], resourceNames: [ds.metadata.name], verbs: ["get"] }]);
        const binding = one(objs, "RoleBinding", "-podwatch-daemonset");
        expect(binding["roleRef"]).to.deep.include({ kind: "Role", name: role.metadata.name });
        expect(binding["subjects"]).to.deep.equal([{ kind: "ServiceAccount", name: (daemonSetPod(objs).tpl.spec.serviceAccountName), namespace: ds.metadata.namespace }]);
      });

      it("checks before an uninstall that no locked pod is left: a pre-delete hook Job running uninstall-check, its ServiceAccount and RBAC hooks made before it", () => {
        const hooks = objs.filter((o) => o.metadata.annotations?.["helm.sh/hook"] === "pre-delete");
        const job = one(hooks, "Job", "-uninstall-check");
        const sa = one(hooks, "ServiceAccount", "-uninstall-check");
        const weight = (o: K8sObject) => Number(o.metadata.annotations?.["helm.sh/hook-weight"]);
        for (const o of hooks) {
          expect(o.metadata.annotations?.["helm.sh/hook-delete-policy"], `${o.kind}`).to.equal("before-hook-creation,hook-succeeded");
          if (o !== job) expect(weight(o), `${o.kind}/${o.metadata.name} made before the Job`).to.be.below(weight(job));
        }
        const { podwatch } = daemonSetPod(objs);
        const spec = (job["spec"] as { backoffLimit: number; template: { spec: PodSpec & { restartPolicy: string } } });
        expect(spec.backoffLimit).to.equal(0);
        const pod = spec.template.spec;
        expect(pod.serviceAccountName).to.equal(sa.metadata.name);
        expect(pod.restartPolicy).to.equal("Never");
        const c = pod.containers[0]!;
        expect(c.image).to.equal(podwatch.image);
        expect(c.command).to.deep.equal(["tproxy-podwatch", "uninstall-check"]);
        expect(flagValue(c.args!, "--annotation")).to.equal(flagValue(podwatch.args!, "--annotation"));
        expect(flagValue(c.args!, "--init-container")).to.equal(flagValue(podwatch.args!, "--init-container"));
        expect(c.args!.filter((_, i, a) => a[i - 1] === "--namespace")).to.deep.equal(podwatch.args!.filter((_, i, a) => a[i - 1] === "--namespace"));
        expect(c.terminationMessagePolicy).to.equal("FallbackToLogsOnError");
        expect(c.securityContext).to.deep.include({ runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
        // It may list pods, nothing else, where podwatch watches them.
        const roles = hooks.filter((o) => o.kind === "ClusterRole" || o.kind === "Role");
        expect(roles.length).to.be.at.least(1);
        for (const r of roles) expect(r["rules"]).to.deep.equal([{ apiGroups: [""], resources: ["pods"], verbs: ["list"] }]);
        for (const b of hooks.filter((o) => o.kind === "ClusterRoleBinding" || o.kind === "RoleBinding")) {
          expect(b["subjects"]).to.deep.equal([{ kind: "ServiceAccount", name: sa.metadata.name, namespace: sa.metadata.namespace }]);
        }
      });

      it("makes the helm test pod a locked pod that runs the isolation checks", () => {
        const pod = objs.find((o) => o.kind === "Pod")!;
        expect(pod.metadata.annotations).to.include({ "helm.sh/hook": "test", "initializer.kubernetes.io/tproxy": "true" });
        const spec = pod["spec"] as PodSpec;
        expect(spec.initContainers![0]!.command).to.deep.equal(["tproxy-sidecar-init"]);
        const script = spec.containers[0]!.args!.join("\n");
        expect(script).to.include("https://storage.googleapis.com/solutions-public-assets/").and.include("https://www.google.com");
        expect(script).to.include("169.254.169.254").and.include("ping -c 1").and.include("ok   ping not permitted");
        // The ping check needs EPERM itself, not just a failed ping (test/e2e/tutorial.test.ts runs the script).
        expect(script).to.include('grep -q "Operation not permitted"');
        if (name === "blocked CIDR + DNS") expect(script).to.include("KUBERNETES_SERVICE_HOST");
        else expect(script).to.include("skip service range");
      });
    });
  }

  describe("NOTES.txt", () => {
    it("prints, for each variant, an init container snippet whose env matches the values", async () => {
      for (const [name, variant] of Object.entries(VARIANTS)) {
        const text = await notes(variant());
        const snippet = snippetOf(text);
        const init = snippet.spec.initContainers![0]!;
        const env = envOf(init);
        expect(init.command, name).to.deep.equal(["tproxy-sidecar-init"]);
        expect(init.securityContext?.capabilities?.add, name).to.include("NET_ADMIN");
        expect(init.securityContext?.capabilities?.drop, name).to.deep.equal(["ALL"]);
        expect(init.securityContext?.privileged, name).to.equal(false);
        expect(snippet.metadata.annotations, name).to.deep.equal({ "initializer.kubernetes.io/tproxy": "true" });
        expect(snippet.spec.volumes![0]!.configMap!.name, name).to.equal(name.startsWith("namespaces") ? "edge-tproxy-root-certs" : "tproxy-root-certs");
        if (name === "blocked CIDR + DNS") {
          expect(env["BLOCK_SVC_CIDR"]?.value).to.equal("10.96.0.0/12,fd00:10:96::/112");
          expect(env["ALLOW_DNS"]?.value).to.equal("10.96.0.10");
          expect(text).not.to.include("WARNINGS");
        } else {
          expect(env, name).not.to.have.any.keys("BLOCK_SVC_CIDR", "ALLOW_DNS");
          expect(text.indexOf("WARNINGS"), `${name}: warnings come first`).to.equal(0);
          expect(text).to.include("lock.blockCidrs is empty");
        }
        if (name === "standard mode") {
          expect(env["NODE_NAME"]?.valueFrom?.fieldRef?.fieldPath).to.equal("spec.nodeName");
          const appEnv = envOf(snippet.spec.containers[0]!);
          expect(appEnv["http_proxy"]?.value).to.equal("http://$(NODE_NAME):1080");
        } else {
          expect(env, name).not.to.have.any.keys("NODE_NAME");
        }
      }
    });

    it("leaves DNS to the pods' own nameservers by default, and warns only when lock.allowDns is any", async () => {
      const byDefault = await notes();
      expect(envOf(snippetOf(byDefault).spec.initContainers![0]!)).not.to.have.any.keys("ALLOW_DNS");
      expect(byDefault).not.to.include("lock.allowDns");
      const any = await notes({ set: { "lock.allowDns": ["any"], "lock.blockCidrs": ["10.96.0.0/12"] } });
      expect(envOf(snippetOf(any).spec.initContainers![0]!)["ALLOW_DNS"]?.value).to.equal("any");
      expect(any.indexOf("WARNINGS")).to.equal(0);
      expect(any).to.include('lock.allowDns is ["any"]: locked pods may send DNS (udp and tcp 53) to every address');
      // A link-local resolver with its interface passes the schema.
      const scoped = await notes({ set: { "lock.allowDns": ["fe80::1%eth0", "10.96.0.10"], "lock.blockCidrs": ["10.96.0.0/12"] } });
      expect(envOf(snippetOf(scoped).spec.initContainers![0]!)["ALLOW_DNS"]?.value).to.equal("fe80::1%eth0,10.96.0.10");
      expect(scoped).not.to.include("WARNINGS");
    });

    it("prints exactly what examples/debian-app-locked-manual.yaml holds (default values, release tproxy)", async () => {
      const snippet = snippetOf(await notes());
      const example = parseYaml(readFileSync(join(REPO_ROOT, "examples/debian-app-locked-manual.yaml"), "utf8")) as { apiVersion: string; spec: { template: PodTemplate } };
      expect(example.apiVersion).to.equal("apps/v1");
      const tpl = example.spec.template;
      for (const [k, v] of Object.entries(snippet.metadata.annotations!)) expect(tpl.metadata.annotations?.[k]).to.equal(v);
      expect(tpl.spec.initContainers).to.deep.equal(snippet.spec.initContainers);
      expect(tpl.spec.volumes).to.deep.equal(snippet.spec.volumes);
      expect(tpl.spec.containers[0]!.volumeMounts).to.deep.equal(snippet.spec.containers[0]!.volumeMounts);
      expect(tpl.spec.containers[0]!.securityContext).to.deep.equal(snippet.spec.containers[0]!.securityContext);
      expect(snippet.spec.containers[0]!.securityContext).to.deep.equal({ capabilities: { drop: ["NET_RAW"] } });
    });

    it("names the images the examples use, from values.yaml", async () => {
      const objs = await template(onCluster());
      const testPod = objs.find((o) => o.kind === "Pod")!;
      const appImage = (testPod["spec"] as PodSpec).containers[0]!.image;
      for (const file of ["debian-app.yaml", "debian-app-locked-manual.yaml"]) {
        const ex = parseYaml(readFileSync(join(REPO_ROOT, "examples", file), "utf8")) as { apiVersion: string; kind: string; metadata: { name: string }; spec: { template: PodTemplate } };
        expect(ex.apiVersion, file).to.equal("apps/v1");
        expect(ex.spec.template.spec.containers[0]!.image, file).to.equal(appImage);
        await validateObject(ex as unknown as K8sObject);
      }
      expect(appImage).to.equal("tproxy/example-app:0.1.0");
      const custom = await template(onCluster({ set: { "images.registry": "registry.example.com/platform", "images.tag": "1.2.3", "images.tproxy.digest": `sha256:${"a".repeat(64)}` } }));
      const { podwatch, proxy } = daemonSetPod(custom);
      expect(podwatch.image).to.equal("registry.example.com/platform/tproxy/podwatch:1.2.3");
      expect(proxy.image).to.equal(`registry.example.com/platform/tproxy/tproxy@sha256:${"a".repeat(64)}`);
    });
  });

  describe("the CA: made once, kept, never silently replaced", () => {
    const NS = "tproxy-system";
    const text = (o: K8sObject, key: string) => Buffer.from((o["data"] as Record<string, string>)[key]!, "base64").toString();
    const bundleOf = (objs: K8sObject[]) => (one(objs, "ConfigMap", "-root-certs")["data"] as Record<string, string>)["ca-certificates.crt"]!;
    const mountedSecret = (objs: K8sObject[]) => daemonSetPod(objs).tpl.spec.volumes!.find((v) => v.secret !== undefined)!.secret!.secretName;

    it("refuses to generate a CA where it cannot read the cluster (helm template, --dry-run=client), and says how to supply one", async () => {
      const how = [
        "no CA supplied, and this render cannot read the cluster (helm template, --dry-run=client, Argo CD or another GitOps tool)",
        "Make the CA once: `tproxy ca create --cert ca.crt --key ca.key`, then `kubectl create secret tls tproxy-ca --cert=ca.crt --key=ca.key --namespace tproxy-system` and set ca.existingSecret=tproxy-ca",
        "or set ca.cert and ca.key",
      ];
      const runs = {
        "helm template": await helm(["template", ...renderArgs()]),
        "helm template --is-upgrade": await helm(["template", ...renderArgs(), "--is-upgrade"]),
        "helm install --dry-run=client": await helm(["install", ...renderArgs(), "--dry-run=client"]),
      };
      for (const [what, r] of Object.entries(runs)) {
        expect(r.code, what).to.not.equal(0);
        for (const part of how) expect(`${r.stderr}${r.stdout}`, what).to.include(part);
      }
    });

    it("renders without a cluster when the CA is supplied: ca.cert + ca.key in its Secret, ca.existingSecret mounted, the ConfigMap publishing that certificate", async () => {
      const pair = await template({ set: { "ca.cert": testCa.cert, "ca.key": testCa.key } });
      const secret = one(pair, "Secret", "-ca");
      expect(text(secret, "tls.crt")).to.equal(testCa.cert);
      expect(text(secret, "tls.key")).to.equal(testCa.key);
      expect(bundleOf(pair).trim()).to.equal(testCa.cert.trim());
      expect(mountedSecret(pair)).to.equal(secret.metadata.name);

      const existing = await template({ set: { "ca.existingSecret": "corp-proxy-ca", "ca.cert": testCa.cert } });
      expect(existing.filter((o) => o.kind === "Secret" && notInjector(o))).to.deep.equal([]);
      expect(mountedSecret(existing)).to.equal("corp-proxy-ca");
      expect(bundleOf(existing).trim()).to.equal(testCa.cert.trim());

      const bare = await helm(["template", ...renderArgs({ set: { "ca.existingSecret": "corp-proxy-ca" } })]);
      expect(bare.code).to.not.equal(0);
      expect(bare.stderr).to.include('ca.existingSecret "corp-proxy-ca": Secret not found, since this render cannot read the cluster (helm template, --dry-run=client, GitOps); also set ca.cert');
    });

    it("generates a CA on a fresh install that can read the cluster, keeps it on uninstall (helm.sh/resource-policy: keep) and publishes it", async () => {
      await withCluster(async (api) => {
        const objs = await template({ kubeconfig: api.kubeconfigPath });
        const secret = one(objs, "Secret", "-ca");
        expect(secret.metadata.annotations).to.deep.equal({ "helm.sh/resource-policy": "keep" });
        const cert = text(secret, "tls.crt");
        expect(bundleOf(objs).trim()).to.equal(cert.trim());
        writeFileSync(join(tmp, "generated.crt"), cert);
        const shown = (await pexec("openssl", ["x509", "-in", join(tmp, "generated.crt"), "-noout", "-subject", "-ext", "basicConstraints"])).stdout;
        expect(shown).to.match(/CN ?= ?tproxy CA/).and.include("CA:TRUE");
        // The render asked the cluster: whether it can read it at all, and for a CA Secret of a previous install.
        expect(api.requests).to.include("GET /api/v1/namespaces/kube-system");
        expect(api.requests).to.include(`GET /api/v1/namespaces/${NS}/secrets/tproxy-ca`);
      });
    });

    it("reuses the CA Secret it finds, byte for byte, on install (after uninstall kept it) and on upgrade", async () => {
      await withCluster(async (api) => {
        // As a previous install left it (helm.sh/resource-policy: keep): owned by release tproxy, which Helm
        // checks before it adopts an existing object.
        api.putSecret(NS, "tproxy-ca", { "tls.crt": testCa.cert, "tls.key": testCa.key }, {
          type: "kubernetes.io/tls",
          labels: { "app.kubernetes.io/managed-by": "Helm" },
          annotations: { "meta.helm.sh/release-name": "tproxy", "meta.helm.sh/release-namespace": NS, "helm.sh/resource-policy": "keep" },
        });
        for (const upgrade of [false, true]) {
          const objs = await template({ kubeconfig: api.kubeconfigPath, upgrade });
          const secret = one(objs, "Secret", "-ca");
          expect(text(secret, "tls.crt"), `upgrade=${upgrade}`).to.equal(testCa.cert);
          expect(text(secret, "tls.key"), `upgrade=${upgrade}`).to.equal(testCa.key);
          expect(bundleOf(objs).trim()).to.equal(testCa.cert.trim());
          expect(secret.metadata.annotations?.["helm.sh/resource-policy"]).to.equal("keep");
        }
      });
    });

    it("fails an upgrade whose CA Secret is gone, asking to restore it, instead of generating a CA", async () => {
      await withCluster(async (api) => {
        const r = await helm(["template", ...renderArgs({ kubeconfig: api.kubeconfigPath, upgrade: true })]);
        expect(r.code).to.not.equal(0);
        expect(r.stderr).to.include(
          'the CA Secret "tproxy-ca" is gone from namespace "tproxy-system", but this is an upgrade of release "tproxy": restore it (`kubectl create secret tls tproxy-ca --cert=ca.crt --key=ca.key --namespace tproxy-system` from the CA\'s files), or set ca.existingSecret or ca.cert and ca.key; refusing to make a new CA that locked pods do not trust',
        );
        expect(r.stdout).not.to.include("BEGIN CERTIFICATE");
        // The same upgrade with the CA supplied goes through.
        const supplied = await template({ kubeconfig: api.kubeconfigPath, upgrade: true, set: { "ca.cert": testCa.cert, "ca.key": testCa.key } });
        expect(text(one(supplied, "Secret", "-ca"), "tls.crt")).to.equal(testCa.cert);
      });
    });

    it("publishes the tls.crt of ca.existingSecret read from the cluster, and fails naming the Secret when the cluster has none", async () => {
      await withCluster(async (api) => {
        api.putSecret(NS, "corp-proxy-ca", { "tls.crt": testCa.cert, "tls.key": testCa.key }, { type: "kubernetes.io/tls" });
        const objs = await template({ kubeconfig: api.kubeconfigPath, set: { "ca.existingSecret": "corp-proxy-ca" } });
        expect(objs.filter((o) => o.kind === "Secret" && notInjector(o))).to.deep.equal([]);
        expect(bundleOf(objs)).to.equal(`${testCa.cert.trim()}\n`);
        const missing = await helm(["template", ...renderArgs({ kubeconfig: api.kubeconfigPath, set: { "ca.existingSecret": "nope" } })]);
        expect(missing.code).to.not.equal(0);
        expect(missing.stderr).to.include('ca.existingSecret "nope": Secret not found in namespace "tproxy-system"; create it first (`tproxy ca create --cert ca.crt --key ca.key`, then `kubectl create secret tls nope --cert=ca.crt --key=ca.key --namespace tproxy-system`)');
      });
    });

    it("trusts the old and the new CA during a rotation: rootCerts.extraBundle beside the CA in the root-certs ConfigMap", async () => {
      await withCluster(async (api) => {
        const objs = await template({ kubeconfig: api.kubeconfigPath, set: { "rootCerts.extraBundle": testCa.cert } });
        const generated = text(one(objs, "Secret", "-ca"), "tls.crt");
        expect(generated).to.not.equal(testCa.cert);
        expect(bundleOf(objs)).to.equal(`${generated.trim()}\n${testCa.cert.trim()}\n`);
      });
    });

    it("explains in the chart README how the CA is made, kept, supplied for GitOps and rotated", () => {
      const readme = readFileSync(join(CHART_DIR, "README.md"), "utf8");
      const section = readme.slice(readme.indexOf("## The CA"), readme.indexOf("## Sizing"));
      for (const part of ["helm.sh/resource-policy: keep", "tproxy ca create", "kubectl create secret tls", "ca.existingSecret", "kube-system", "rootCerts.extraBundle", "### Rotating the CA"]) {
        expect(section, part).to.include(part);
      }
    });
  });

  describe("the filter", () => {
    it("ships files/filter.ts byte for byte in the filter ConfigMap", async () => {
      const cm = one(await template(onCluster()), "ConfigMap", "-filter");
      expect((cm["data"] as Record<string, string>)["filter.ts"]).to.equal(readFileSync(join(CHART_DIR, "files/filter.ts"), "utf8"));
    });

    it("changes only the filter ConfigMap when the filter changes (no rollout of the DaemonSet)", async () => {
      const fixed = { "ca.cert": testCa.cert, "ca.key": testCa.key };
      const mine = join(tmp, "my-filter.ts");
      const script = "  // leading spaces survive\nexport default {\n  request(flow) {\n    flow.respond(403, \"no\");\n  },\n};\n";
      writeFileSync(mine, script);
      const before = await template({ set: fixed });
      const after = await template({ set: fixed, setFile: { "filter.script": mine } });
      expect(after.length).to.equal(before.length);
      const key = (o: K8sObject) => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;
      // Without a cluster each render makes the webhook another certificate (injector.test.ts): not a change of the filter's.
      const regenerated = (o: K8sObject) => o.metadata.name.endsWith("-injector-tls") || o.kind.endsWith("WebhookConfiguration");
      const changed = after.filter((o, i) => !regenerated(o) && JSON.stringify(o) !== JSON.stringify(before[i])).map(key);
      expect(changed).to.deep.equal(["ConfigMap/tproxy-system/tproxy-filter"]);
      expect((one(after, "ConfigMap", "-filter")["data"] as Record<string, string>)["filter.ts"]).to.equal(script);
      expect(daemonSetPod(after).tpl).to.deep.equal(daemonSetPod(before).tpl);
    });
  });

  describe("values.schema.json", () => {
    const cases: [string, string[], RegExp][] = [
      ["a string port", ["--set-string", "proxy.transparentPort=15170"], /proxy\/transparentPort/],
      ["a port the non-root proxy cannot bind", ["--set", "proxy.transparentPort=80"], /proxy\/transparentPort': minimum/],
      ["an unknown key", ["--set", "podwatch.watchEverything=true"], /podwatch': additional properties 'watchEverything' not allowed/],
      ["a CIDR without prefix length", ["--set-json", 'lock.blockCidrs=["10.96.0.0"]'], /lock\/blockCidrs\/0/],
      ["an unknown filter error mode", ["--set", "proxy.onFilterError=maybe"], /proxy\/onFilterError/],
      ["a resync that is no duration", ["--set", "podwatch.resync=soon"], /podwatch\/resync/],
      ["a misspelt top-level section", ["--set", "podwach.resync=60s"], /additional properties 'podwach' not allowed/],
      ["any next to a resolver", ["--set-json", 'lock.allowDns=["any","10.96.0.10"]'], /lock\/allowDns/],
      ["a resolver given by name", ["--set-json", 'lock.allowDns=["kube-dns"]'], /lock\/allowDns\/0/],
      ["zero proxy workers", ["--set", "proxy.workers=0"], /proxy\/workers/],
      ["a worker count that is a word", ["--set", "proxy.workers=many"], /proxy\/workers/],
    ];
    for (const [what, args, where] of cases) {
      it(`rejects ${what} with Helm's schema error`, async () => {
        const r = await helm(["template", "tproxy", CHART_DIR, ...args]);
        expect(r.code).to.not.equal(0);
        expect(r.stderr).to.include("values don't meet the specifications of the schema");
        expect(r.stderr).to.match(where);
      });
    }

    it("rejects half a CA pair and a missing existing Secret with a one-line reason", async () => {
      const half = await helm(["template", "tproxy", CHART_DIR, "--set-json", `ca.cert=${JSON.stringify(testCa.cert)}`]);
      expect(half.code).to.not.equal(0);
      expect(half.stderr).to.include("ca.cert and ca.key go together");
      const missing = await helm(["template", "tproxy", CHART_DIR, "--set", "ca.existingSecret=nope"]);
      expect(missing.code).to.not.equal(0);
      expect(missing.stderr).to.match(/ca.existingSecret "nope": Secret not found/);
    });

    it("closes every object in the schema (additionalProperties: false) and covers every value", () => {
      const schema = JSON.parse(readFileSync(join(CHART_DIR, "values.schema.json"), "utf8")) as Record<string, unknown>;
      const values = parseYaml(readFileSync(join(CHART_DIR, "values.yaml"), "utf8")) as Record<string, unknown>;
      const open: string[] = [];
      const walk = (node: Record<string, unknown>, v: unknown, path: string) => {
        const props = node["properties"] as Record<string, Record<string, unknown>> | undefined;
        if (props === undefined) return;
        if (node["additionalProperties"] !== false) open.push(path);
        for (const k of Object.keys((v ?? {}) as object)) {
          expect(props, `schema for ${path}.${k}`).to.have.property(k);
          walk(props[k]!, (v as Record<string, unknown>)[k], `${path}.${k}`);
        }
      };
      walk(schema, values, "");
      expect(open).to.deep.equal([]);
    });
  });

  describe("the proxy's memory limit against its workers (files/sizing.yaml)", () => {
    const MIB = 1024 * 1024;
    interface Sizing { baseMiB: number; perWorkerMiB: number; perConnectionKiB: number; reserveConnections: number }
    const sizing = () => parseYaml(readFileSync(join(CHART_DIR, "files/sizing.yaml"), "utf8")) as Sizing;
    /** What the proxy plans for a limit with unbounded CPUs: the most workers the limit holds at these costs. */
    const holds = (bytes: number, costs: Sizing = sizing()) => planWorkers({ cpus: 1_000_000, memoryBytes: bytes, ...costs }).workers;
    const render = (set: Record<string, unknown>, chartDir?: string) => helm(["template", ...renderArgs(onCluster({ set, ...(chartDir ? { chartDir } : {}) }))]);
    const defaultLimit = () => (parseYaml(readFileSync(join(CHART_DIR, "values.yaml"), "utf8")) as { proxy: { resources: { limits: { memory: string } } } }).proxy.resources.limits.memory;

    it("runs on every node, at node-critical priority (with the quota that admits it outside kube-system), and gives each container a minute to start", async () => {
      const r = await render({});
      expect(r.code, r.stderr).to.equal(0);
      const objs = parseManifests(r.stdout);
      const { tpl, podwatch, proxy } = daemonSetPod(objs);
      expect(tpl.spec.priorityClassName).to.equal("system-node-critical");
      expect(tpl.spec.tolerations).to.deep.equal([{ operator: "Exists" }]);
      const quota = one(objs, "ResourceQuota") as K8sObject & { spec: { scopeSelector: { matchExpressions: Array<{ scopeName: string; values: string[] }> } } };
      expect(quota.metadata.namespace).to.equal("tproxy-system");
      expect(quota.spec.scopeSelector.matchExpressions).to.deep.equal([{ operator: "In", scopeName: "PriorityClass", values: ["system-node-critical"] }]);
      for (const c of [podwatch, proxy]) {
        expect(c.startupProbe?.httpGet?.path, c.name).to.equal("/healthz");
        expect(c.startupProbe?.httpGet?.host, c.name).to.equal("127.0.0.1");
        expect((c.startupProbe?.periodSeconds ?? 0) * (c.startupProbe?.failureThreshold ?? 0), c.name).to.equal(60);
      }
      // No quota where none is needed: no class, or kube-system itself.
      const none = await render({ "daemonset.priorityClassName": "" });
      expect(parseManifests(none.stdout).filter((o) => o.kind === "ResourceQuota")).to.deep.equal([]);
      expect(daemonSetPod(parseManifests(none.stdout)).tpl.spec.priorityClassName).to.equal(undefined);
    });

    it("passes extra arguments, environment and volumes to each container (escape hatches)", async () => {
      const r = await render({
        "proxy.extraArgs": ["--drain-timeout", "5000"], "proxy.extraEnv": [{ name: "LOG_LEVEL", value: "debug" }],
        "proxy.extraVolumeMounts": [{ name: "creds", mountPath: "/etc/tproxy/creds", readOnly: true }],
        "podwatch.extraArgs": ["--resync", "30s"], "podwatch.extraEnv": [{ name: "TPROXY_LOG_LEVEL", value: "debug" }],
        "podwatch.extraVolumeMounts": [{ name: "creds", mountPath: "/creds" }],
        "daemonset.extraVolumes": [{ name: "creds", secret: { secretName: "filter-creds" } }],
      });
      expect(r.code, r.stderr).to.equal(0);
      const { tpl, podwatch, proxy } = daemonSetPod(parseManifests(r.stdout));
      expect(proxy.args!.slice(-2)).to.deep.equal(["--drain-timeout", "5000"]);
      expect(podwatch.args!.slice(-2)).to.deep.equal(["--resync", "30s"]);
      expect(proxy.env).to.deep.equal([{ name: "LOG_LEVEL", value: "debug" }]);
      expect(podwatch.env?.map((e) => e.name)).to.deep.equal(["NODE_NAME", "TPROXY_REDIRECT_TO_ADDRESS", "TPROXY_DAEMONSET", "TPROXY_LOG_LEVEL"]);
      expect(proxy.volumeMounts?.at(-1)).to.deep.equal({ name: "creds", mountPath: "/etc/tproxy/creds", readOnly: true });
      expect(podwatch.volumeMounts?.at(-1)).to.deep.equal({ name: "creds", mountPath: "/creds" });
      expect(tpl.spec.volumes?.at(-1)).to.deep.equal({ name: "creds", secret: { secretName: "filter-creds" } });
    });

    it("opens the admin endpoints to every address when asked (a Prometheus scraping the node), probing the pod's address", async () => {
      const r = await render({ "proxy.metricsAddress": "0.0.0.0", "podwatch.metricsAddress": "0.0.0.0" });
      expect(r.code, r.stderr).to.equal(0);
      const { podwatch, proxy } = daemonSetPod(parseManifests(r.stdout));
      for (const c of [podwatch, proxy]) {
        expect(flagValue(c.args!, "--metrics-address")).to.equal("0.0.0.0");
        expect(c.readinessProbe?.httpGet?.host).to.equal(undefined);
      }
    });

    it("holds the costs the proxy has built in (packages/tproxy/src/resources.ts)", () => {
      expect(sizing()).to.deep.equal({ baseMiB: BASE_MIB, perWorkerMiB: PER_WORKER_MIB, perConnectionKiB: PER_CONNECTION_KIB, reserveConnections: RESERVE_CONNECTIONS });
      expect(defaultLimit()).to.equal("512Mi");
    });

    it("fails proxy.workers=8 with a 512Mi limit when 8 workers do not fit, naming the memory they need", async () => {
      // A copy of the chart whose measured per-worker cost makes 8 too many for 512Mi: 60 + 8 × 60 + 1000 × 64 KiB = 602.5 MiB.
      const chart = join(tmp, "chart-costly-workers");
      cpSync(CHART_DIR, chart, { recursive: true });
      writeFileSync(join(chart, "files/sizing.yaml"), "baseMiB: 60\nperWorkerMiB: 60\nperConnectionKiB: 64\nreserveConnections: 1000\n");
      const r = await render({ "proxy.workers": 8, "proxy.resources.limits.memory": "512Mi" }, chart);
      expect(r.code).to.not.equal(0);
      expect(r.stderr).to.include("proxy.workers=8 needs about 603 MiB at the measured per-worker cost but proxy.resources.limits.memory is 512Mi: raise the limit or lower proxy.workers (it holds 6;");
      // The same copy renders the count the limit holds.
      expect((await render({ "proxy.workers": 6, "proxy.resources.limits.memory": "512Mi" }, chart)).code).to.equal(0);
    });

    it("renders proxy.workers=2 within the default 512Mi limit, and passes the count on", async () => {
      const r = await render({ "proxy.workers": 2 });
      expect(r.code, r.stderr).to.equal(0);
      const { proxy } = daemonSetPod(parseManifests(r.stdout));
      expect(flagValue(proxy.args!, "--workers")).to.equal("2");
      expect(proxy.resources).to.deep.include({ limits: { memory: "512Mi" } });
    });

    it("with the measured costs, renders the most workers the default limit holds and fails one more", async () => {
      const n = holds(512 * MIB);
      expect(n).to.be.greaterThan(1);
      expect((await render({ "proxy.workers": n })).code).to.equal(0);
      const more = await render({ "proxy.workers": n + 1 });
      expect(more.code).to.not.equal(0);
      const { baseMiB, perWorkerMiB, perConnectionKiB, reserveConnections } = sizing();
      const need = Math.ceil(baseMiB + (n + 1) * perWorkerMiB + (reserveConnections * perConnectionKiB) / 1024);
      expect(more.stderr).to.include(`proxy.workers=${n + 1} needs about ${need} MiB at the measured per-worker cost but proxy.resources.limits.memory is 512Mi`);
      expect(more.stderr).to.include(`(it holds ${n}; base ${baseMiB} MiB + ${perWorkerMiB} MiB per worker + ${reserveConnections} connections × ${perConnectionKiB} KiB; see Sizing in the chart README)`);
      // A limit of exactly base + 3 workers + the reserve holds 3; a byte less does not.
      const exact = (baseMiB + 3 * perWorkerMiB) * MIB + reserveConnections * perConnectionKiB * 1024;
      expect((await render({ "proxy.workers": 3, "proxy.resources.limits.memory": String(exact) })).code).to.equal(0);
      const short = await render({ "proxy.workers": 3, "proxy.resources.limits.memory": String(exact - 1) });
      expect(short.stderr).to.include("proxy.workers=3 needs about").and.include("(it holds 2;");
    });

    it("fails a 64Mi limit as below the measured minimum, with auto and with a number", async () => {
      const { baseMiB, perWorkerMiB, perConnectionKiB, reserveConnections } = sizing();
      const minimum = Math.ceil(baseMiB + perWorkerMiB + (reserveConnections * perConnectionKiB) / 1024);
      expect(minimum).to.be.greaterThan(64);
      for (const workers of ["auto", 1]) {
        const r = await render({ "proxy.workers": workers, "proxy.resources.limits.memory": "64Mi" });
        expect(r.code, String(workers)).to.not.equal(0);
        expect(r.stderr).to.include(`proxy.resources.limits.memory is 64Mi, below the proxy's measured minimum of about ${minimum} MiB for one worker`);
        expect(r.stderr).to.include("raise the limit");
      }
    });

    it("renders auto (the proxy decides at run time) with the default limit, and any count without a memory limit", async () => {
      const auto = await render({ "proxy.workers": "auto" });
      expect(auto.code, auto.stderr).to.equal(0);
      expect(flagValue(daemonSetPod(parseManifests(auto.stdout)).proxy.args!, "--workers")).to.equal("auto");
      const unlimited = await render({ "proxy.workers": 256, "proxy.resources.limits": null });
      expect(unlimited.code, unlimited.stderr).to.equal(0);
      const { proxy } = daemonSetPod(parseManifests(unlimited.stdout));
      expect(flagValue(proxy.args!, "--workers")).to.equal("256");
      expect(proxy.resources).to.deep.equal({ requests: { cpu: "100m", memory: "160Mi" } });
    });

    it("reads the memory quantities Kubernetes writes (binary and decimal suffixes, plain bytes) and refuses others", async () => {
      // The message shows the size in MiB unless it is written in Mi, so the tests see what the chart read.
      const forms: [unknown, number, string][] = [
        ["512Mi", 512 * MIB, "512Mi"],
        ["312.5Mi", 312.5 * MIB, "312.5Mi"],
        ["0.5Gi", 512 * MIB, "0.5Gi (512 MiB)"],
        ["524288Ki", 512 * MIB, "524288Ki (512 MiB)"],
        ["536870912", 512 * MIB, "536870912 (512 MiB)"],
        [536870912, 512 * MIB, "536870912 (512 MiB)"],
        ["600000k", 600e6, "600000k (572.2 MiB)"],
        ["600M", 600e6, "600M (572.2 MiB)"],
        ["1G", 1e9, "1G (953.7 MiB)"],
        ["1Gi", 1024 * MIB, "1Gi (1024 MiB)"],
      ];
      for (const [limit, bytes, shown] of forms) {
        const r = await render({ "proxy.workers": 256, "proxy.resources.limits.memory": limit });
        expect(r.stderr, String(limit)).to.include(`but proxy.resources.limits.memory is ${shown}: raise the limit or lower proxy.workers (it holds ${holds(bytes)};`);
      }
      const milli = await render({ "proxy.resources.limits.memory": "100m" });
      expect(milli.code).to.not.equal(0);
      expect(milli.stderr).to.include('proxy.resources.limits.memory "100m" is not a memory size the chart can read');
    });

    it("states the costs of files/sizing.yaml and what the default limit holds in the README's Sizing section", () => {
      const readme = readFileSync(join(CHART_DIR, "README.md"), "utf8");
      const section = readme.slice(readme.indexOf("## Sizing"), readme.indexOf("## Values"));
      const cell = (key: string) => new RegExp(`^\\| [^|]+ \\| ([^|]+) \\| \`${key}\` \\|$`, "m").exec(section)?.[1];
      const s = sizing();
      expect(cell("baseMiB")).to.equal(`${s.baseMiB} MiB`);
      expect(cell("perWorkerMiB")).to.equal(`${s.perWorkerMiB} MiB`);
      expect(cell("perConnectionKiB")).to.equal(`${s.perConnectionKiB} KiB`);
      expect(cell("reserveConnections")).to.equal(`${s.reserveConnections}`);
      expect(section).to.include(`| the default \`proxy.resources.limits.memory\`, ${defaultLimit()}, holds | ${holds(512 * MIB)} workers | |`);
      expect(section).to.include("npm run bench");
    });
  });

  describe("values.yaml and the chart README: each value documented once (npm run chart:docs)", () => {
    /** The keys values.yaml documents, in order: its `## @param <key>` lines. */
    const documented = (text = readFileSync(join(CHART_DIR, "values.yaml"), "utf8")) => [...text.matchAll(/^\s*## @param (\S+)/gm)].map((m) => m[1]!);
    /** A copy of the chart to regenerate the documentation in. */
    const chartCopy = (name: string) => {
      const dir = join(tmp, name);
      rmSync(dir, { recursive: true, force: true });
      cpSync(CHART_DIR, dir, { recursive: true });
      return dir;
    };
    const chartDocs = (dir: string) => pexec(process.execPath, [join(REPO_ROOT, "test/support/chart-docs.ts"), dir]).then(
      () => ({ code: 0, stdout: "", stderr: "" }),
      (err: { code: number; stdout: string; stderr: string }) => err,
    );

    it("regenerates exactly the committed README tables and values.schema.json (they cannot drift from values.yaml)", async () => {
      const dir = chartCopy("chart-docs-same");
      const r = await chartDocs(dir);
      expect(r.code, r.stderr).to.equal(0);
      for (const f of ["README.md", "values.schema.json", "values.yaml"]) {
        expect(readFileSync(join(dir, f), "utf8"), `${f}: run npm run chart:docs`).to.equal(readFileSync(join(CHART_DIR, f), "utf8"));
      }
    });

    it("carries a changed description into the README and the schema, keeping the schema's constraints", async () => {
      const dir = chartCopy("chart-docs-changed");
      const values = readFileSync(join(dir, "values.yaml"), "utf8");
      writeFileSync(join(dir, "values.yaml"), values.replace("## @param proxy.onFilterError What a filter hook", "## @param proxy.onFilterError Changed: what a filter hook"));
      const r = await chartDocs(dir);
      expect(r.code, r.stderr).to.equal(0);
      expect(readFileSync(join(dir, "README.md"), "utf8")).to.match(/^\| `proxy.onFilterError` +\| Changed: what a filter hook/m);
      const schema = JSON.parse(readFileSync(join(dir, "values.schema.json"), "utf8")) as { properties: { proxy: { properties: Record<string, { description: string; enum?: string[] }> } } };
      expect(schema.properties.proxy.properties["onFilterError"]!.description).to.match(/^Changed: what a filter hook/);
      expect(schema.properties.proxy.properties["onFilterError"]!.enum).to.deep.equal(["deny", "allow"]);
    });

    it("fails, naming the key, for a value without `## @param`, a `## @param` of no value, and a value the schema lacks", async () => {
      const values = readFileSync(join(CHART_DIR, "values.yaml"), "utf8");
      const undocumented = chartCopy("chart-docs-undocumented");
      writeFileSync(join(undocumented, "values.yaml"), values.replace(/^ *## @param proxy\.logFormat .*\n/m, ""));
      const a = await chartDocs(undocumented);
      expect(a.code).to.not.equal(0);
      expect(a.stderr).to.include("ERROR: Missing metadata for key: proxy.logFormat");

      const stale = chartCopy("chart-docs-stale");
      writeFileSync(join(stale, "values.yaml"), values.replace(/^( *)(## @param proxy\.logFormat .*\n)/m, "$1## @param proxy.logFormatOld Gone.\n$1$2"));
      const b = await chartDocs(stale);
      expect(b.code).to.not.equal(0);
      expect(b.stderr).to.include("ERROR: Metadata provided for non existing key: proxy.logFormatOld");

      const unschemed = chartCopy("chart-docs-unschemed");
      writeFileSync(join(unschemed, "values.yaml"), values.replace(/^( *)## @param proxy\.logFormat /m, "$1## @param proxy.logStyle Style.\n$1logStyle: plain\n$1## @param proxy.logFormat "));
      const c = await chartDocs(unschemed);
      expect(c.code).to.not.equal(0);
      expect(c.stderr).to.include("values.schema.json has no property for proxy.logStyle");
    });

    it("lists exactly the documented values in the README's Values tables, with their defaults", () => {
      const readme = readFileSync(join(CHART_DIR, "README.md"), "utf8");
      const section = readme.slice(readme.indexOf("\n## Values\n"), readme.indexOf("\n## Limits\n"));
      const rows = [...section.matchAll(/^\| `([A-Za-z0-9_.]+)` +\|.*\| `(.*)` +\|$/gm)];
      expect(rows.map((m) => m[1])).to.deep.equal(documented());
      expect(documented().length).to.be.greaterThan(40);
      // Values documented as a whole object or list show what values.yaml holds, not the generator's `{}`.
      const cell = Object.fromEntries(rows.map((m) => [m[1]!, m[2]!]));
      expect(cell["proxy.resources"]).to.equal('{"requests":{"cpu":"100m","memory":"160Mi"},"limits":{"memory":"512Mi"}}');
      expect(cell["daemonset.tolerations"]).to.equal('[{"operator":"Exists"}]');
      expect(cell["proxy.standardMode.allowPorts"]).to.equal("[80,443]");
      for (const step of ["helm install tproxy charts/tproxy", "helm upgrade tproxy", "helm uninstall tproxy", "helm test tproxy"]) {
        expect(readme).to.include(step);
      }
    });
  });

  describe("the rendered command lines against the real binaries", () => {
    it("passes only flags that tproxy run and tproxy-podwatch document", async () => {
      const { podwatch, proxy } = daemonSetPod(await template(onCluster({ set: { "proxy.standardMode.enabled": true, "proxy.upstreamCa": testCa.cert } })));
      const node = process.execPath;
      const tproxyHelp = (await pexec(node, [join(REPO_ROOT, "packages/tproxy/dist/cli.js"), "run", "--help"])).stdout;
      const podwatchHelp = (await pexec(node, [join(REPO_ROOT, "packages/podwatch/dist/cli.js"), "--help"])).stdout;
      for (const flag of proxy.args!.filter((a) => a.startsWith("--"))) expect(tproxyHelp, `tproxy run ${flag}`).to.include(flag);
      for (const flag of podwatch.args!.filter((a) => a.startsWith("--"))) expect(podwatchHelp, `tproxy-podwatch ${flag}`).to.include(flag);
    });

    /** A namespace standing for a pod: eth0 up with an IPv4 and an IPv6 address (the only sources the lock lets out). */
    const podNs = async (): Promise<Netns> => {
      const ns = await Netns.create(uniqueName("tch"));
      await ns.must("ip", ["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
      await ns.must("ip", ["addr", "add", "10.244.1.5/24", "dev", "eth0"]);
      await ns.must("ip", ["addr", "add", "fd00:244:1::5/64", "dev", "eth0", "nodad"]);
      for (const dev of ["eth0", "eth0p"]) await ns.must("ip", ["link", "set", dev, "up"]);
      return ns;
    };

    it("locks a namespace with the init container NOTES prints (real sidecar-init, blocked CIDRs + DNS)", async function () {
      this.timeout(60_000);
      const init = snippetOf(await notes(VARIANTS["blocked CIDR + DNS"]!())).spec.initContainers![0]!;
      expect(init.command).to.deep.equal(["tproxy-sidecar-init"]);
      const env: Record<string, string> = {};
      for (const e of init.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
      const ns = await podNs();
      try {
        const r = await ns.run(process.execPath, [join(REPO_ROOT, "packages/sidecar-init/dist/cli.js"), ...(init.args ?? []), "--no-wait"], { env: { ...process.env, ...env } });
        expect(r.code, r.stderr).to.equal(0);
        const v4 = await ns.must("iptables-save", []);
        expect(v4).to.include("-A TPROXY-EGRESS -s 10.244.1.5/32 -d 10.96.0.10/32 -p udp -m udp --dport 53 -j ACCEPT");
        expect(v4).to.match(/-A TPROXY-EGRESS -s 10\.244\.1\.5\/32 -d 10\.96\.0\.0\/12 .*-j REJECT/);
        expect(await ns.must("ip6tables-save", [])).to.match(/-A TPROXY-EGRESS -s fd00:244:1::5\/128 -d fd00:10:96::\/112 .*-j REJECT/);
      } finally {
        await ns.destroy();
      }
    });

    it("with default values, locks DNS to the nameservers of the namespace's resolv.conf, and refuses to lock without one (real sidecar-init)", async function () {
      this.timeout(60_000);
      const init = snippetOf(await notes()).spec.initContainers![0]!;
      expect(init.env ?? []).to.deep.equal([]);
      const ns = await podNs();
      try {
        const lock = () => ns.run(process.execPath, [join(REPO_ROOT, "packages/sidecar-init/dist/cli.js"), ...(init.args ?? []), "--no-wait"]);
        // What Netns.create writes: a resolv.conf without nameserver.
        const none = await lock();
        expect(none.code).to.equal(2);
        expect(none.stderr).to.include("/etc/resolv.conf (--resolv-conf, RESOLV_CONF) lists no nameserver");
        expect(await ns.must("iptables-save", [])).not.to.include("TPROXY-EGRESS");
        // The kubelet's file: kube-dns over IPv4 and IPv6.
        writeFileSync(`/etc/netns/${ns.name}/resolv.conf`, "search default.svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00:10:96::a\noptions ndots:5\n");
        const r = await lock();
        expect(r.code, r.stderr).to.equal(0);
        const dns = (await ns.must("iptables-save", [])).split("\n").filter((l) => l.includes("--dport 53"));
        expect(dns).to.deep.equal([
          "-A TPROXY-EGRESS -s 10.244.1.5/32 -d 10.96.0.10/32 -p udp -m udp --dport 53 -j ACCEPT",
          "-A TPROXY-EGRESS -s 10.244.1.5/32 -d 10.96.0.10/32 -p tcp -m tcp --dport 53 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT",
        ]);
        expect(await ns.must("ip6tables-save", [])).to.include("-A TPROXY-EGRESS -s fd00:244:1::5/128 -d fd00:10:96::a/128 -p udp -m udp --dport 53 -j ACCEPT");
      } finally {
        await ns.destroy();
      }
    });

    it("starts the real podwatch with the rendered arguments and env against the API stand-in, and it becomes healthy", async function () {
      this.timeout(60_000);
      const { podwatch } = daemonSetPod(await template(onCluster()));
      const ns = await Netns.create(uniqueName("tch"));
      const api = await KubeApiStandIn.start();
      try {
        const exposure = await api.exposeIn(ns);
        const env: Record<string, string> = { KUBECONFIG: exposure.kubeconfigPath, NODE_NAME: "node-a" };
        for (const e of podwatch.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
        // The kubelet fills the node's address in from the downward API: podwatch must take it.
        for (const e of podwatch.env ?? []) if (e.valueFrom?.fieldRef?.fieldPath === "status.hostIP") env[e.name] = "10.0.0.5";
        expect(env).to.have.property("TPROXY_REDIRECT_TO_ADDRESS", "10.0.0.5");
        // The kubelet expands $(NODE_NAME) in args from the downward-API variable.
        const args = (podwatch.args ?? []).map((a) => a.replace("$(NODE_NAME)", env.NODE_NAME!));
        const metrics = args[args.indexOf("--metrics-port") + 1];
        const child = ns.spawn(process.execPath, [join(REPO_ROOT, "packages/podwatch/dist/cli.js"), ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
        let output = "";
        child.stdout?.on("data", (b: Buffer) => (output += b.toString()));
        child.stderr?.on("data", (b: Buffer) => (output += b.toString()));
        const deadline = Date.now() + 30_000;
        let code = "";
        while (Date.now() < deadline && child.exitCode === null && code !== "200") {
          code = (await ns.run("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", `http://127.0.0.1:${metrics}/healthz`])).stdout;
          if (code !== "200") await new Promise((r) => setTimeout(r, 200));
        }
        expect(code, `podwatch output:\n${output}`).to.equal("200");
      } finally {
        await api.close();
        await ns.destroy();
      }
    });

    it("starts the real proxy with the rendered arguments, generated CA and filter, and it becomes ready", async function () {
      this.timeout(60_000);
      const objs = await template(onCluster());
      const { proxy } = daemonSetPod(objs);
      const root = join(tmp, "etc-tproxy");
      const secret = one(objs, "Secret", "-ca")["data"] as Record<string, string>;
      const filter = one(objs, "ConfigMap", "-filter")["data"] as Record<string, string>;
      mkdirSync(join(root, "ca"), { recursive: true });
      mkdirSync(join(root, "filter"), { recursive: true });
      writeFileSync(join(root, "ca/tls.crt"), Buffer.from(secret["tls.crt"]!, "base64"));
      writeFileSync(join(root, "ca/tls.key"), Buffer.from(secret["tls.key"]!, "base64"), { mode: 0o600 });
      writeFileSync(join(root, "filter/filter.ts"), filter["filter.ts"]!);
      const [transparent, metrics] = [await freePort(), await freePort()];
      const args = proxy.args!.map((a) => a.replace(/^\/etc\/tproxy\//, `${root}/`));
      args[args.indexOf("--transparent-port") + 1] = String(transparent);
      args[args.indexOf("--metrics-port") + 1] = String(metrics);
      const child = spawn(process.execPath, [join(REPO_ROOT, "packages/tproxy/dist/cli.js"), ...args, "--listen-address", "127.0.0.1"], { stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      child.stdout.on("data", (b: Buffer) => (output += b.toString()));
      child.stderr.on("data", (b: Buffer) => (output += b.toString()));
      try {
        const deadline = Date.now() + 30_000;
        let status = 0;
        while (Date.now() < deadline && child.exitCode === null) {
          status = await fetch(`http://127.0.0.1:${metrics}/readyz`).then((r) => r.status, () => 0);
          if (status === 200) break;
          await new Promise((r) => setTimeout(r, 200));
        }
        expect(status, `proxy output:\n${output}`).to.equal(200);
      } finally {
        child.kill("SIGTERM");
      }
    });
  });

  describe("the helm home folders of test/support/helm.ts", () => {
    const HELM_TS = join(REPO_ROOT, "test/support/helm.ts");
    const homesOf = (pid: number | undefined): string[] => readdirSync(tmpdir()).filter((e) => e.startsWith(`tproxy-helm-${pid}-`));

    it("leave nothing behind when the process exits, and a later run removes those whose process is gone", async () => {
      // A pid no process has: one that ran and ended.
      const ended = spawn("true");
      await once(ended, "exit");
      const gone = mkdtempSync(join(tmpdir(), `tproxy-helm-${ended.pid}-`));
      const oldUnnumbered = mkdtempSync(join(tmpdir(), "tproxy-helm-"));
      utimesSync(oldUnnumbered, new Date(Date.now() - 2 * 3_600_000), new Date(Date.now() - 2 * 3_600_000));
      const recentUnnumbered = mkdtempSync(join(tmpdir(), "tproxy-helm-"));
      const mine = mkdtempSync(join(tmpdir(), `tproxy-helm-${process.pid}-`));
      try {
        // The child prints the folders it made while it runs, then exits after one helm call.
        const script = `import { helm } from ${JSON.stringify(HELM_TS)}; import { readdirSync } from "node:fs"; import { tmpdir } from "node:os";
          const r = await helm(["version", "--short"]); if (r.code !== 0) process.exit(3);
          console.log(JSON.stringify(readdirSync(tmpdir()).filter((e) => e.startsWith("tproxy-helm-" + process.pid + "-"))));`;
        const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        let err = "";
        child.stdout.on("data", (b: Buffer) => (out += b.toString()));
        child.stderr.on("data", (b: Buffer) => (err += b.toString()));
        const [code] = (await once(child, "exit")) as [number | null];
        expect(code, err).to.equal(0);
        const during = JSON.parse(out) as string[];
        expect(during).to.have.length(1);
        expect(existsSync(join(tmpdir(), during[0]!)), "removed at exit").to.equal(false);
        expect(homesOf(child.pid)).to.deep.equal([]);
        expect(existsSync(gone), "a dead process's folder").to.equal(false);
        expect(existsSync(oldUnnumbered), "an unnumbered folder two hours old").to.equal(false);
        expect(existsSync(recentUnnumbered), "an unnumbered folder of a run that may still go on").to.equal(true);
        expect(existsSync(mine), "a running process's folder").to.equal(true);
      } finally {
        for (const d of [gone, oldUnnumbered, recentUnnumbered, mine]) rmSync(d, { recursive: true, force: true });
      }
    });
  });
});
