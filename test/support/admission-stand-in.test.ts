// The admission stand-in must behave as kube-apiserver's webhook admission does where the injection tests
// lean on it: selectors, the review it sends, the patch it applies, the certificate it verifies, and
// failurePolicy. A tiny webhook (real HTTPS) answers as the test tells it.
import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AdmissionDenied, AdmissionStandIn, selectorMatches, type WebhookConfiguration } from "./admission-stand-in.ts";
import { TestCa } from "./pki.ts";

type Answer = (review: { request: { uid: string; namespace: string; object: { metadata: Record<string, unknown> } } }) => object;

describe("admission stand-in (kube-apiserver's webhook admission, as the injection tests use it)", function () {
  this.timeout(20_000);
  let dir: string;
  let ca: TestCa;
  let server: Server;
  let port: number;
  let answer: Answer;
  const seen: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "admission-stand-in-"));
    ca = new TestCa(dir, "webhook-ca");
    const cert = ca.issue("svc", ["hook.tproxy-system.svc"]);
    server = createServer({ cert: readFileSync(cert.certPath), key: readFileSync(cert.keyPath) }, (req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        seen.push(`${req.method} ${req.url} ${req.headers.host}`);
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer(JSON.parse(body))));
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const config = (over: Record<string, unknown> = {}, caPem = readFileSync(ca.certPath)): WebhookConfiguration => ({
    kind: "MutatingWebhookConfiguration",
    metadata: { name: "t" },
    webhooks: [{
      name: "lock.tproxy.io",
      clientConfig: { caBundle: caPem.toString("base64"), service: { namespace: "tproxy-system", name: "hook", path: "/mutate", port: 443 } },
      rules: [{ operations: ["CREATE"], apiGroups: [""], apiVersions: ["v1"], resources: ["pods"] }],
      namespaceSelector: { matchExpressions: [{ key: "tproxy.io/lock", operator: "In", values: ["enabled"] }, { key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["kube-system"] }] },
      failurePolicy: "Fail",
      timeoutSeconds: 5,
      ...over,
    }],
  });
  const pod = () => ({ metadata: { generateName: "web-", labels: { app: "web" } }, spec: { containers: [{ name: "app", image: "x" }] } });
  const patchAnnotation = (r: Parameters<Answer>[0]) => ({
    apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview",
    response: { uid: r.request.uid, allowed: true, patchType: "JSONPatch", patch: Buffer.from(JSON.stringify([{ op: "add", path: "/metadata/annotations", value: { seen: r.request.namespace } }])).toString("base64") },
  });

  it("matches label selectors as the API does (In, NotIn, Exists, DoesNotExist, matchLabels)", () => {
    expect(selectorMatches({ matchLabels: { a: "1" } }, { a: "1", b: "2" })).to.equal(true);
    expect(selectorMatches({ matchLabels: { a: "1" } }, { a: "2" })).to.equal(false);
    expect(selectorMatches({ matchExpressions: [{ key: "a", operator: "NotIn", values: ["1"] }] }, {})).to.equal(true);
    expect(selectorMatches({ matchExpressions: [{ key: "a", operator: "In", values: ["1"] }] }, {})).to.equal(false);
    expect(selectorMatches({ matchExpressions: [{ key: "a", operator: "Exists" }] }, { a: "" })).to.equal(true);
    expect(selectorMatches({ matchExpressions: [{ key: "a", operator: "DoesNotExist" }] }, { a: "" })).to.equal(false);
  });

  it("calls a matching webhook over verified HTTPS with a review of the unnamed pod, and applies its JSONPatch", async () => {
    answer = patchAnnotation;
    const a = new AdmissionStandIn(() => ({ host: "127.0.0.1", port }));
    a.apply(config());
    const out = await a.admitCreate("team-a", { "tproxy.io/lock": "enabled" }, pod());
    expect(out.metadata.annotations).to.deep.equal({ seen: "team-a" });
    const review = a.calls.at(-1)!.review as unknown as { request: { name?: string; namespace: string; operation: string; object: { metadata: { name?: string; generateName: string } } } };
    expect(review.request.name).to.equal(undefined);
    expect(review.request.object.metadata.generateName).to.equal("web-");
    expect(review.request.operation).to.equal("CREATE");
    expect(seen.at(-1)).to.equal("POST /mutate hook.tproxy-system.svc");
  });

  it("skips webhooks whose namespace selector does not match (control for the call above)", async () => {
    answer = patchAnnotation;
    const a = new AdmissionStandIn(() => ({ host: "127.0.0.1", port }));
    a.apply(config());
    for (const [ns, labels] of [["team-b", {}], ["kube-system", { "tproxy.io/lock": "enabled" }]] as const) {
      const out = await a.admitCreate(ns, labels, pod());
      expect(out.metadata.annotations, ns).to.equal(undefined);
    }
    expect(a.calls).to.have.length(0);
  });

  it("refuses the pod with the webhook's message when it is not allowed", async () => {
    answer = (r) => ({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", response: { uid: r.request.uid, allowed: false, status: { code: 403, message: "tampered init container" } } });
    const a = new AdmissionStandIn(() => ({ host: "127.0.0.1", port }));
    a.apply(config());
    const err = await a.admitCreate("team-a", { "tproxy.io/lock": "enabled" }, pod()).then(() => undefined, (e: unknown) => e);
    expect(err).to.be.instanceOf(AdmissionDenied);
    expect((err as Error).message).to.equal('admission webhook "lock.tproxy.io" denied the request: tampered init container');
  });

  it("fails closed under failurePolicy Fail when the certificate is not the caBundle's, and lets the pod through unchanged under Ignore", async () => {
    answer = patchAnnotation;
    const other = new TestCa(dir, "other-ca");
    const strict = new AdmissionStandIn(() => ({ host: "127.0.0.1", port }));
    strict.apply(config({}, readFileSync(other.certPath)));
    const err = await strict.admitCreate("team-a", { "tproxy.io/lock": "enabled" }, pod()).then(() => undefined, (e: unknown) => e);
    expect((err as Error).message).to.match(/failed calling webhook: .*certificate/);
    const lenient = new AdmissionStandIn(() => ({ host: "127.0.0.1", port }));
    lenient.apply(config({ failurePolicy: "Ignore" }, readFileSync(other.certPath)));
    expect((await lenient.admitCreate("team-a", { "tproxy.io/lock": "enabled" }, pod())).metadata.annotations).to.equal(undefined);
  });

  it("refuses an answer whose uid is not the request's", async () => {
    answer = () => ({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", response: { uid: "other", allowed: true } });
    const a = new AdmissionStandIn(() => ({ host: "127.0.0.1", port }));
    a.apply(config());
    const err = await a.admitCreate("team-a", { "tproxy.io/lock": "enabled" }, pod()).then(() => undefined, (e: unknown) => e);
    expect((err as Error).message).to.match(/response uid is "other"/);
  });
});
