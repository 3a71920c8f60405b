// The injector in the chart: its objects, its webhooks, its certificate (made, kept, renewed, or
// cert-manager's), and the equality the issue asks for: the webhook's injection applied to
// examples/debian-app.yaml gives exactly the pod of examples/debian-app-locked-manual.yaml.
import { expect } from "chai";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { createInterface } from "node:readline";
import jsonPatch from "fast-json-patch";
import type { Operation } from "fast-json-patch";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import type { KubeApiStandIn } from "../support/kube-api-stand-in.ts";
import { withCluster } from "../support/cluster.ts";
import { CHART_DIR, REPO_ROOT, helm, makeTestCa, one, renderArgs, template, validateObject, type K8sObject, type RenderOptions } from "../support/helm.ts";
import { inject, parseInjectionConfig, type InjectionConfig, type Pod } from "../../packages/injector/src/index.ts";

const NS = "tproxy-system";
const SVC = "tproxy-injector";

interface Webhook {
  name: string; admissionReviewVersions: string[]; sideEffects: string; failurePolicy: string; timeoutSeconds: number;
  matchPolicy: string; reinvocationPolicy?: string;
  clientConfig: { service: { name: string; namespace: string; path: string; port: number }; caBundle?: string };
  rules: Array<{ apiGroups: string[]; apiVersions: string[]; operations: string[]; resources: string[]; scope: string }>;
  namespaceSelector: { matchExpressions: Array<{ key: string; operator: string; values: string[] }> };
  objectSelector?: { matchExpressions: Array<{ key: string; operator: string; values: string[] }> };
}
interface PodTemplate { metadata: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: NonNullable<Pod["spec"]> }

const webhooksOf = (o: K8sObject) => o["webhooks"] as Webhook[];
const dataOf = (o: K8sObject) => o["data"] as Record<string, string>;
const b64 = (s: string) => Buffer.from(s, "base64").toString();
const injectorObjects = (objs: K8sObject[]) => objs.filter((o) => o.metadata.labels?.["app.kubernetes.io/component"] === "injector");
const injectionConfig = (objs: K8sObject[]): InjectionConfig => parseInjectionConfig(JSON.parse(dataOf(one(objs, "ConfigMap", "-injector"))["injection.json"]!), "the rendered ConfigMap");
const exampleTemplate = (file: string) => (parseYaml(readFileSync(join(REPO_ROOT, "examples", file), "utf8")) as { spec: { template: PodTemplate } }).spec.template;

/** The certificates of a PEM bundle, in order. */
function certs(pem: string): X509Certificate[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map((m) => new X509Certificate(m[0]));
}

describe("the injector in the chart", function () {
  this.timeout(120_000);
  let tmp: string;
  let testCa: { cert: string; key: string };
  /** Without a cluster, the proxy CA must be supplied (the chart refuses to make one it cannot keep). */
  const withCa = (opts: RenderOptions = {}): RenderOptions => ({ ...opts, set: { "ca.cert": testCa.cert, "ca.key": testCa.key, ...opts.set } });

  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), "tproxy-injector-chart-"));
    testCa = await makeTestCa(tmp, "injector chart test CA");
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  describe("with default values", () => {
    let objs: K8sObject[];
    before(async () => {
      objs = await withCluster((api) => template({ kubeconfig: api.kubeconfigPath }));
    });

    it("renders the injector's objects, all valid against the Kubernetes schemas (strict)", async () => {
      expect(injectorObjects(objs).map((o) => `${o.kind}/${o.metadata.name}`).sort()).to.deep.equal([
        `ClusterRole/${SVC}`, `ClusterRoleBinding/${SVC}`, `ConfigMap/${SVC}`, `Deployment/${SVC}`, `MutatingWebhookConfiguration/${SVC}`,
        `PodDisruptionBudget/${SVC}`, `Secret/${SVC}-tls`, `Service/${SVC}`, `ServiceAccount/${SVC}`, `ValidatingWebhookConfiguration/${SVC}`,
      ]);
      for (const o of injectorObjects(objs)) await validateObject(o);
    });

    it("registers a mutating and a validating webhook for locked namespaces and for labelled pods elsewhere, never kube-system or the release namespace", () => {
      const excluded = { key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["kube-system", NS] };
      for (const [kind, path] of [["MutatingWebhookConfiguration", "/mutate"], ["ValidatingWebhookConfiguration", "/validate"]] as const) {
        const hooks = webhooksOf(one(objs, kind));
        expect(hooks.map((h) => h.name), kind).to.deep.equal(["namespace.lock.tproxy.io", "pod.lock.tproxy.io"]);
        const [byNamespace, byPod] = hooks as [Webhook, Webhook];
        expect(byNamespace.namespaceSelector).to.deep.equal({ matchExpressions: [{ key: "tproxy.io/lock", operator: "In", values: ["enabled"] }, excluded] });
        expect(byNamespace.objectSelector).to.equal(undefined);
        expect(byPod.namespaceSelector).to.deep.equal({ matchExpressions: [{ key: "tproxy.io/lock", operator: "NotIn", values: ["enabled"] }, excluded] });
        expect(byPod.objectSelector).to.deep.equal({ matchExpressions: [{ key: "tproxy.io/lock", operator: "In", values: ["enabled"] }] });
        for (const h of hooks) {
          // Validation also sees updates: an init container's image can change on a running pod, and kubectl debug adds ephemeral containers.
          const rule = kind === "MutatingWebhookConfiguration"
            ? { apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE"], resources: ["pods"], scope: "Namespaced" }
            : { apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE", "UPDATE"], resources: ["pods", "pods/ephemeralcontainers"], scope: "Namespaced" };
          expect(h.rules).to.deep.equal([rule]);
          expect(h).to.include({ sideEffects: "None", failurePolicy: "Fail", timeoutSeconds: 5, matchPolicy: "Equivalent" });
          expect(h.admissionReviewVersions).to.deep.equal(["v1"]);
          expect(h.reinvocationPolicy).to.equal(kind === "MutatingWebhookConfiguration" ? "IfNeeded" : undefined);
          expect(h.clientConfig.service).to.deep.equal({ name: SVC, namespace: NS, path, port: 443 });
        }
      }
    });

    it("gives the webhooks a caBundle that is the CA which signed the Secret's certificate, valid for <svc>.<ns>.svc", () => {
      const secret = one(objs, "Secret", "-injector-tls");
      expect(secret["type"]).to.equal("kubernetes.io/tls");
      const caPem = b64(dataOf(secret)["ca.crt"]!);
      const [ca] = certs(caPem) as [X509Certificate];
      const [leaf] = certs(b64(dataOf(secret)["tls.crt"]!)) as [X509Certificate];
      for (const kind of ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]) {
        for (const h of webhooksOf(one(objs, kind))) expect(b64(h.clientConfig.caBundle!), `${kind} ${h.name}`).to.equal(caPem);
      }
      expect(ca.ca).to.equal(true);
      expect(leaf.verify(ca.publicKey), "the certificate is signed by the caBundle's CA").to.equal(true);
      expect(leaf.verify(new X509Certificate(testCa.cert).publicKey)).to.equal(false);
      for (const name of [`${SVC}.${NS}.svc`, `${SVC}.${NS}`, SVC, `${SVC}.${NS}.svc.cluster.local`]) expect(leaf.checkHost(name), name).to.equal(name);
      expect(leaf.checkHost(`${SVC}.other.svc`)).to.equal(undefined);
      expect(leaf.checkPrivateKey(createPrivateKey(b64(dataOf(secret)["tls.key"]!))), "tls.key is the certificate's key").to.equal(true);
      // The not-after the next render reads back is the certificate's own (to the minute).
      const notAfter = Date.parse(secret.metadata.annotations!["tproxy.io/not-after"]!);
      expect(Math.abs(notAfter - Date.parse(leaf.validTo))).to.be.lessThan(120_000);
      expect(Date.parse(leaf.validTo) - Date.now()).to.be.greaterThan(364 * 86400_000);
    });

    it("runs 2 non-root replicas, spread over nodes, ready on /readyz, with the ConfigMap and the Secret as directories; a PDB keeps one", () => {
      const d = one(objs, "Deployment", "-injector");
      const spec = d["spec"] as { replicas: number; template: { metadata: { annotations: Record<string, string> }; spec: Record<string, unknown> } };
      expect(spec.replicas).to.equal(2);
      const pod = spec.template.spec as { serviceAccountName: string; affinity: unknown; containers: Array<Record<string, unknown>>; volumes: unknown[]; securityContext: unknown };
      expect(pod.serviceAccountName).to.equal(SVC);
      expect(JSON.stringify(pod.affinity)).to.include("preferredDuringSchedulingIgnoredDuringExecution").and.include("kubernetes.io/hostname");
      const c = pod.containers[0]!;
      expect(c["command"]).to.deep.equal(["tproxy-injector"]);
      expect(c["args"]).to.deep.equal(["serve", "--port=15173", "--tls-cert=/etc/tproxy/injector-tls/tls.crt", "--tls-key=/etc/tproxy/injector-tls/tls.key", "--config=/etc/tproxy/injector/injection.json"]);
      expect(c["image"]).to.equal("tproxy/injector:0.1.0");
      expect(c["readinessProbe"]).to.deep.equal({ httpGet: { path: "/readyz", port: 15173, scheme: "HTTPS" }, periodSeconds: 5 });
      expect(c["securityContext"]).to.deep.equal({ runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, privileged: false, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
      expect(pod.securityContext).to.deep.equal({ seccompProfile: { type: "RuntimeDefault" } });
      expect(c["volumeMounts"]).to.deep.equal([
        { name: "tls", mountPath: "/etc/tproxy/injector-tls", readOnly: true },
        { name: "config", mountPath: "/etc/tproxy/injector", readOnly: true },
      ]);
      expect(pod.volumes).to.deep.equal([{ name: "tls", secret: { secretName: `${SVC}-tls` } }, { name: "config", configMap: { name: SVC } }]);
      expect(spec.template.metadata.annotations["checksum/injection"]).to.match(/^[0-9a-f]{64}$/);
      const pdb = one(objs, "PodDisruptionBudget", "-injector")["spec"] as { minAvailable: number; selector: { matchLabels: Record<string, string> } };
      expect(pdb.minAvailable).to.equal(1);
      expect(pdb.selector.matchLabels).to.deep.equal((d["spec"] as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels);
      const svc = one(objs, "Service", "-injector")["spec"] as { ports: unknown[]; selector: Record<string, string> };
      expect(svc.ports).to.deep.equal([{ name: "https", port: 443, targetPort: "https" }]);
      expect(svc.selector).to.deep.equal(pdb.selector.matchLabels);
    });

    it("lets the injector's ServiceAccount get, list and watch namespaces, and nothing else", () => {
      expect(one(objs, "ClusterRole", "-injector")["rules"]).to.deep.equal([{ apiGroups: [""], resources: ["namespaces"], verbs: ["get", "list", "watch"] }]);
      const binding = one(objs, "ClusterRoleBinding", "-injector");
      expect(binding["roleRef"]).to.deep.equal({ apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: SVC });
      expect(binding["subjects"]).to.deep.equal([{ kind: "ServiceAccount", name: SVC, namespace: NS }]);
    });

    it("injects into examples/debian-app.yaml exactly the pod of examples/debian-app-locked-manual.yaml (one source of the snippet)", () => {
      const config = injectionConfig(objs);
      const plain = exampleTemplate("debian-app.yaml");
      const manual = exampleTemplate("debian-app-locked-manual.yaml");
      const pod: Pod = { apiVersion: "v1", kind: "Pod", metadata: { generateName: "debian-app-", namespace: "team-a", labels: plain.metadata.labels }, spec: plain.spec };
      const result = inject(pod, { "tproxy.io/lock": "enabled", "kubernetes.io/metadata.name": "team-a" }, config);
      if (!result.allowed) throw new Error(result.message);
      expect(result.pod.spec).to.deep.equal(manual.spec);
      expect(result.pod.metadata!.annotations).to.deep.equal(manual.metadata.annotations);
      // Only the label that tells the two examples apart differs.
      const { variant: a, ...plainLabels } = result.pod.metadata!.labels!;
      const { variant: b, ...manualLabels } = manual.metadata.labels!;
      expect(plainLabels).to.deep.equal(manualLabels);
      expect([a, b]).to.deep.equal(["unlocked", "locked"]);
    });
  });

  it("runs for real as rendered: the binary with the Deployment's arguments, the Secret's certificate verified against the caBundle as <svc>.<ns>.svc, the ConfigMap's injection", async () => {
    const objs = await withCluster((api) => template({ kubeconfig: api.kubeconfigPath }));
    const dir = mkdtempSync(join(tmp, "run-"));
    const secret = dataOf(one(objs, "Secret", "-injector-tls"));
    const files: Record<string, string> = {
      "/etc/tproxy/injector-tls/tls.crt": b64(secret["tls.crt"]!),
      "/etc/tproxy/injector-tls/tls.key": b64(secret["tls.key"]!),
      "/etc/tproxy/injector/injection.json": dataOf(one(objs, "ConfigMap", "-injector"))["injection.json"]!,
    };
    // The rendered arguments, with the mounted files' paths moved into the test's folder and port 0.
    const container = ((one(objs, "Deployment", "-injector")["spec"] as { template: { spec: { containers: Array<{ args: string[] }> } } }).template.spec.containers[0]!);
    const args = container.args.map((a) => {
      const [flag, value] = a.split("=") as [string, string | undefined];
      if (value === undefined) return a;
      if (flag === "--port") return "--port=0";
      const local = join(dir, value.replaceAll("/", "_"));
      writeFileSync(local, files[value]!);
      return `${flag}=${local}`;
    });
    // An API that is not there: a labelled pod needs no namespace labels.
    writeFileSync(join(dir, "kubeconfig"), JSON.stringify({
      apiVersion: "v1", kind: "Config", "current-context": "c", users: [{ name: "u", user: { token: "t" } }],
      clusters: [{ name: "c", cluster: { server: "http://127.0.0.1:9", "insecure-skip-tls-verify": true } }], contexts: [{ name: "c", context: { cluster: "c", user: "u" } }],
    }));
    const child = spawn(process.execPath, [join(REPO_ROOT, "packages/injector/bin/tproxy-injector.js"), ...args, "--address=127.0.0.1"], {
      env: { PATH: process.env.PATH, KUBECONFIG: join(dir, "kubeconfig") },
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        child.once("exit", (code) => reject(new Error(`tproxy-injector exited ${code}`)));
        createInterface({ input: child.stdout! }).on("line", (line) => {
          const rec = JSON.parse(line) as { msg: string; port?: number };
          if (rec.msg === "listening") resolve(rec.port!);
        });
      });
      const hook = webhooksOf(one(objs, "MutatingWebhookConfiguration")).find((h) => h.name === "pod.lock.tproxy.io")!;
      const plain = exampleTemplate("debian-app.yaml");
      const pod: Pod = { apiVersion: "v1", kind: "Pod", metadata: { generateName: "debian-app-", labels: { ...plain.metadata.labels, "tproxy.io/lock": "enabled" } }, spec: plain.spec };
      const review = { apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", request: { uid: "u-1", kind: { group: "", version: "v1", kind: "Pod" }, operation: "CREATE", namespace: "team-a", object: pod } };
      // As the API server calls it: HTTPS to the Service name, trusting only the caBundle.
      const answer = await new Promise<{ response: { uid: string; allowed: boolean; patch: string } }>((resolve, reject) => {
        const req = request({ host: "127.0.0.1", port, method: "POST", path: hook.clientConfig.service.path, servername: `${SVC}.${NS}.svc`, ca: b64(hook.clientConfig.caBundle!), headers: { "content-type": "application/json" } }, (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c)).on("end", () => resolve(JSON.parse(Buffer.concat(chunks).toString())));
        });
        req.on("error", reject);
        req.end(JSON.stringify(review));
      });
      expect(answer.response).to.include({ uid: "u-1", allowed: true });
      const locked = jsonPatch.applyPatch(structuredClone(pod), JSON.parse(b64(answer.response.patch)) as Operation[], true, false).newDocument;
      const manual = exampleTemplate("debian-app-locked-manual.yaml");
      expect(locked.spec).to.deep.equal(manual.spec);
      expect(locked.metadata!.annotations).to.deep.equal(manual.metadata.annotations);
    } finally {
      child.kill("SIGKILL");
    }
  });

  describe("the webhook certificate across upgrades", () => {
    const putTls = (api: KubeApiStandIn, notAfter: string, pair: { cert: string; key: string; ca: string }) =>
      api.putSecret(NS, `${SVC}-tls`, { "tls.crt": pair.cert, "tls.key": pair.key, "ca.crt": pair.ca }, {
        type: "kubernetes.io/tls",
        labels: { "app.kubernetes.io/managed-by": "Helm" },
        annotations: { "meta.helm.sh/release-name": "tproxy", "meta.helm.sh/release-namespace": NS, "tproxy.io/not-after": notAfter },
      });
    const caBundles = (objs: K8sObject[]) => ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"].flatMap((k) => webhooksOf(one(objs, k)).map((h) => b64(h.clientConfig.caBundle!)));

    it("keeps the Secret it finds, byte for byte, while its certificate is more than 30 days from expiry", async () => {
      await withCluster(async (api) => {
        const first = one(await template(withCa({ kubeconfig: api.kubeconfigPath })), "Secret", "-injector-tls");
        const pair = { cert: b64(dataOf(first)["tls.crt"]!), key: b64(dataOf(first)["tls.key"]!), ca: b64(dataOf(first)["ca.crt"]!) };
        putTls(api, first.metadata.annotations!["tproxy.io/not-after"]!, pair);
        const objs = await template(withCa({ kubeconfig: api.kubeconfigPath, upgrade: true }));
        const kept = one(objs, "Secret", "-injector-tls");
        expect(dataOf(kept)).to.deep.equal(dataOf(first));
        expect(kept.metadata.annotations).to.deep.equal(first.metadata.annotations);
        for (const bundle of caBundles(objs)) expect(bundle).to.equal(pair.ca);
        expect(api.requests).to.include(`GET /api/v1/namespaces/${NS}/secrets/${SVC}-tls`);
      });
    });

    it("makes a new CA and certificate within 30 days of expiry, the caBundle trusting the new CA and the old one meanwhile", async () => {
      await withCluster(async (api) => {
        const old = one(await template(withCa({ kubeconfig: api.kubeconfigPath })), "Secret", "-injector-tls");
        const oldCa = b64(dataOf(old)["ca.crt"]!);
        const soon = new Date(Date.now() + 29 * 86400_000).toISOString().replace(/\.\d+Z$/, "Z");
        putTls(api, soon, { cert: b64(dataOf(old)["tls.crt"]!), key: b64(dataOf(old)["tls.key"]!), ca: oldCa });
        const objs = await template(withCa({ kubeconfig: api.kubeconfigPath, upgrade: true }));
        const renewed = one(objs, "Secret", "-injector-tls");
        const newCa = b64(dataOf(renewed)["ca.crt"]!);
        expect(newCa).to.not.equal(oldCa);
        expect(dataOf(renewed)["tls.crt"]).to.not.equal(dataOf(old)["tls.crt"]);
        expect(Date.parse(renewed.metadata.annotations!["tproxy.io/not-after"]!) - Date.now()).to.be.greaterThan(364 * 86400_000);
        const leaf = certs(b64(dataOf(renewed)["tls.crt"]!))[0]!;
        for (const bundle of caBundles(objs)) {
          const inBundle = certs(bundle);
          expect(inBundle.map((c) => c.fingerprint256)).to.deep.equal([certs(newCa)[0]!.fingerprint256, certs(oldCa)[0]!.fingerprint256]);
          expect(leaf.verify(inBundle[0]!.publicKey)).to.equal(true);
        }
        // Control: 31 days ahead is kept.
        putTls(api, new Date(Date.now() + 31 * 86400_000).toISOString().replace(/\.\d+Z$/, "Z"), { cert: b64(dataOf(old)["tls.crt"]!), key: b64(dataOf(old)["tls.key"]!), ca: oldCa });
        const kept = one(await template(withCa({ kubeconfig: api.kubeconfigPath, upgrade: true })), "Secret", "-injector-tls");
        expect(dataOf(kept)["tls.crt"]).to.equal(dataOf(old)["tls.crt"]);
      });
    });
  });

  it("follows its values: failurePolicy, timeoutSeconds, replicas, lockLabel", async () => {
    const objs = await template(withCa({ set: { "injector.failurePolicy": "Ignore", "injector.timeoutSeconds": 10, "injector.replicas": 3, "injector.lockLabel": "example.com/egress-lock" } }));
    for (const h of webhooksOf(one(objs, "MutatingWebhookConfiguration"))) {
      expect(h).to.include({ failurePolicy: "Ignore", timeoutSeconds: 10 });
      expect(h.namespaceSelector.matchExpressions[0]!.key).to.equal("example.com/egress-lock");
    }
    expect((one(objs, "Deployment", "-injector")["spec"] as { replicas: number }).replicas).to.equal(3);
    expect(injectionConfig(objs).lockLabel).to.equal("example.com/egress-lock");
    const bad = await helm(["template", ...renderArgs(withCa({ set: { "injector.failurePolicy": "Maybe" } }))]);
    expect(bad.code).to.not.equal(0);
    expect(bad.stderr).to.include("failurePolicy");
  });

  it("renders none of it with injector.enabled=false", async () => {
    const objs = await template(withCa({ set: { "injector.enabled": false } }));
    expect(injectorObjects(objs)).to.deep.equal([]);
    expect(objs.filter((o) => /WebhookConfiguration$/.test(o.kind))).to.deep.equal([]);
  });

  it("with certManager.enabled: a Certificate (and a self-signed Issuer unless one is named), the inject-ca annotation, no chart-made Secret or caBundle", async () => {
    const objs = await template(withCa({ set: { "injector.certManager.enabled": true } }));
    expect(objs.filter((o) => o.kind === "Secret" && o.metadata.name.endsWith("-injector-tls"))).to.deep.equal([]);
    const cert = one(objs, "Certificate", "-injector");
    expect(cert.apiVersion).to.equal("cert-manager.io/v1");
    const spec = cert["spec"] as { secretName: string; dnsNames: string[]; issuerRef: Record<string, string>; renewBefore: string };
    expect(spec.secretName).to.equal(`${SVC}-tls`);
    expect(spec.dnsNames).to.include(`${SVC}.${NS}.svc`);
    expect(spec.renewBefore).to.equal("720h");
    expect(spec.issuerRef).to.deep.equal({ name: `${SVC}-selfsigned`, kind: "Issuer", group: "cert-manager.io" });
    expect(one(objs, "Issuer", "-selfsigned")["spec"]).to.deep.equal({ selfSigned: {} });
    for (const kind of ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]) {
      const o = one(objs, kind);
      expect(o.metadata.annotations).to.deep.equal({ "cert-manager.io/inject-ca-from": `${NS}/${SVC}` });
      for (const h of webhooksOf(o)) expect(h.clientConfig.caBundle).to.equal(undefined);
      await validateObject(o);
    }
    const mounted = ((one(objs, "Deployment", "-injector")["spec"] as { template: { spec: { volumes: Array<{ secret?: { secretName: string } }> } } }).template.spec.volumes)[0]!.secret!.secretName;
    expect(mounted).to.equal(spec.secretName);

    const named = await template(withCa({ set: { "injector.certManager.enabled": true, "injector.certManager.issuerRef": { name: "corp-ca", kind: "ClusterIssuer", group: "cert-manager.io" } } }));
    expect((one(named, "Certificate", "-injector")["spec"] as typeof spec).issuerRef).to.deep.equal({ name: "corp-ca", kind: "ClusterIssuer", group: "cert-manager.io" });
    expect(named.filter((o) => o.kind === "Issuer")).to.deep.equal([]);
  });

  it("explains injection in the chart README and NOTES: the label first, then the snippet as the manual way", async () => {
    const readme = readFileSync(join(CHART_DIR, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## Injection"));
    for (const part of ["kubectl label namespace", "tproxy.io/lock=enabled", "annotation", "failurePolicy", "rootCerts.namespaces", "hostNetwork", "NET_ADMIN", "opt out"]) {
      expect(section, part).to.include(part);
    }
    const out = await helm(["install", ...renderArgs(withCa()), "--dry-run=client"]);
    const notes = out.stdout.slice(out.stdout.indexOf("NOTES:"));
    expect(notes.indexOf("kubectl label namespace")).to.be.greaterThan(0);
    expect(notes.indexOf("kubectl label namespace")).to.be.lessThan(notes.indexOf("# ----- paste into spec.template -----"));
    expect(notes).to.not.include("injector.failurePolicy is Ignore");
    const ignore = await helm(["install", ...renderArgs(withCa({ set: { "injector.failurePolicy": "Ignore" } })), "--dry-run=client"]);
    expect(ignore.stdout).to.include("WARNINGS").and.include("injector.failurePolicy is Ignore: while no injector answers, pods of locked namespaces are created without the lock.");
    const off = await helm(["install", ...renderArgs(withCa({ set: { "injector.enabled": false } })), "--dry-run=client"]);
    expect(off.stdout).to.not.include("kubectl label namespace");
  });
});

