// The real `tproxy-injector serve` over real TLS: AdmissionReview JSON in, a JSONPatch out that
// fast-json-patch applies to the pod; bad input answered clearly and never the end of the server.
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { request } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { X509Certificate } from "node:crypto";
import { connect } from "node:tls";
import jsonPatch from "fast-json-patch";
import type { Operation } from "fast-json-patch";
import { TestCa } from "../../../test/support/pki.ts";
import type { Pod } from "../src/index.ts";
import { CONFIG, appPod } from "./fixtures.ts";

const CLI = new URL("../bin/tproxy-injector.js", import.meta.url).pathname;

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json?: { apiVersion: string; kind: string; response: { uid: string; allowed: boolean; patchType?: string; patch?: string; status?: { code: number; message: string }; warnings?: string[] } };
}

describe("tproxy-injector serve (real HTTPS server)", function () {
  this.timeout(30_000);
  let dir: string;
  let ca: TestCa;
  let child: ChildProcess;
  let port: number;
  let logs: string[];
  let namespaceApi: Server;
  let namespaceApiFails = false;
  const NAMESPACES: Record<string, Record<string, string>> = {
    "team-a": { "tproxy.io/lock": "enabled", "kubernetes.io/metadata.name": "team-a" },
    "team-b": { "kubernetes.io/metadata.name": "team-b" },
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "tproxy-injector-"));
    ca = new TestCa(dir, "webhook");
    const issued = ca.issue("server", ["localhost", "127.0.0.1"]);
    copyFileSync(issued.certPath, join(dir, "tls.crt"));
    copyFileSync(issued.keyPath, join(dir, "tls.key"));
    writeFileSync(join(dir, "injection.json"), JSON.stringify(CONFIG));
    // The API's GET of a Namespace, the one call the injector makes (a cluster-less stand-in of it).
    namespaceApi = createServer((req, res) => {
      const m = /^\/api\/v1\/namespaces\/([^/?]+)$/.exec(req.url ?? "");
      if (namespaceApiFails) return void res.writeHead(500, { "content-type": "application/json" }).end('{"kind":"Status","message":"etcd is down"}');
      if (m === null || NAMESPACES[m[1]!] === undefined) return void res.writeHead(404, { "content-type": "application/json" }).end('{"kind":"Status","reason":"NotFound"}');
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ apiVersion: "v1", kind: "Namespace", metadata: { name: m[1], labels: NAMESPACES[m[1]!] } }));
    });
    namespaceApi.listen(0, "127.0.0.1");
    await once(namespaceApi, "listening");
    const apiUrl = `http://127.0.0.1:${(namespaceApi.address() as AddressInfo).port}`;
    writeFileSync(
      join(dir, "kubeconfig"),
      JSON.stringify({
        apiVersion: "v1", kind: "Config", "current-context": "t",
        clusters: [{ name: "t", cluster: { server: apiUrl, "insecure-skip-tls-verify": true } }],
        users: [{ name: "t", user: { token: "t" } }],
        contexts: [{ name: "t", context: { cluster: "t", user: "t" } }],
      }),
    );
    await start();
  });

  async function start(): Promise<void> {
    logs = [];
    child = spawn(process.execPath, [CLI, "serve", "--port", "0", "--address", "127.0.0.1", "--tls-cert", join(dir, "tls.crt"), "--tls-key", join(dir, "tls.key"), "--config", join(dir, "injection.json")], {
      env: { PATH: process.env.PATH, KUBECONFIG: join(dir, "kubeconfig"), TPROXY_LOG_LEVEL: "debug" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stderr!.on("data", (d: Buffer) => logs.push(d.toString()));
    const lines = createInterface({ input: child.stdout! });
    port = await new Promise<number>((resolve, reject) => {
      child.once("exit", (code) => reject(new Error(`tproxy-injector exited ${code}: ${logs.join("")}`)));
      child.once("exit", (code, signal) => { if (signal !== "SIGKILL" && code !== 0) process.stderr.write(`tproxy-injector exited ${code}:\n${logs.join("\n")}\n`); });
      lines.on("line", (line) => {
        logs.push(line);
        const rec = JSON.parse(line) as { msg: string; port?: number };
        if (rec.msg === "listening") resolve(rec.port!);
      });
    });
  }

  after(async () => {
    if (child.exitCode === null) {
      child.kill("SIGKILL");
      await once(child, "exit");
    }
    namespaceApi.closeAllConnections();
    namespaceApi.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function call(method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<Reply & { socketClosed: Promise<void> }> {
    return new Promise((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port, method, path, ca: readFileSync(ca.certPath), servername: "localhost", headers: { "content-type": "application/json", ...headers }, agent: false }, (res) => {
        const socketClosed = once(res.socket, "close").then(() => undefined);
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          const json = res.headers["content-type"] === "application/json" ? (JSON.parse(text) as Reply["json"]) : undefined;
          resolve({ status: res.statusCode!, headers: res.headers, text, json, socketClosed });
        });
      });
      req.on("error", reject);
      if (body !== undefined) req.end(body);
      else req.end();
    });
  }

  const review = (pod: unknown, opts: { uid?: string; namespace?: string; operation?: string; kind?: Record<string, string>; oldObject?: unknown; subResource?: string } = {}) => ({
    apiVersion: "admission.k8s.io/v1",
    kind: "AdmissionReview",
    request: {
      uid: opts.uid ?? "c0ffee-1", kind: opts.kind ?? { group: "", version: "v1", kind: "Pod" }, operation: opts.operation ?? "CREATE", namespace: opts.namespace ?? "team-a", object: pod,
      ...(opts.oldObject !== undefined ? { oldObject: opts.oldObject } : {}), ...(opts.subResource !== undefined ? { subResource: opts.subResource } : {}),
    },
  });
  const post = (path: string, body: unknown) => call("POST", path, typeof body === "string" ? body : JSON.stringify(body));

  /** The pod as the API server would store it: the webhook's base64 JSONPatch applied with fast-json-patch. */
  function patched(pod: Pod, r: Reply): Pod {
    const ops = JSON.parse(Buffer.from(r.json!.response.patch!, "base64").toString()) as Operation[];
    return jsonPatch.applyPatch(structuredClone(pod), ops, true, false).newDocument;
  }

  /** The control: a well-formed review of a pod to lock is answered with a patch. */
  async function control(): Promise<void> {
    const r = await post("/mutate", review(appPod(), { uid: "control" }));
    expect(r.status).to.equal(200);
    expect(r.json!.response).to.include({ uid: "control", allowed: true, patchType: "JSONPatch" });
  }

  it("answers a pod of a locked namespace with a JSONPatch that, applied, locks it", async () => {
    const pod = appPod();
    const r = await post("/mutate", review(pod));
    expect(r.status).to.equal(200);
    expect(r.json!.apiVersion).to.equal("admission.k8s.io/v1");
    expect(r.json!.kind).to.equal("AdmissionReview");
    expect(r.json!.response).to.include({ uid: "c0ffee-1", allowed: true, patchType: "JSONPatch" });
    const out = patched(pod, r);
    expect(out.metadata!.annotations).to.deep.equal({ "initializer.kubernetes.io/tproxy": "true" });
    expect(out.spec!.initContainers).to.deep.equal([CONFIG.initContainer]);
    expect(out.spec!.volumes!.at(-1)).to.deep.equal(CONFIG.volume);
    for (const c of out.spec!.containers!) {
      expect(c.volumeMounts!.slice(-2), c.name).to.deep.equal(CONFIG.volumeMounts);
      expect(c.securityContext!.capabilities!.drop, c.name).to.include("NET_RAW");
    }
    expect(out.spec!.containers![0]!.securityContext).to.deep.equal({ runAsUser: 1000, capabilities: { drop: ["MKNOD", "NET_RAW"] } });
    // The locked pod goes through /validate, and again through /mutate without a patch (reinvocation).
    expect((await post("/validate", review(out))).json!.response).to.deep.equal({ uid: "c0ffee-1", allowed: true });
    expect((await post("/mutate", review(out))).json!.response).to.deep.equal({ uid: "c0ffee-1", allowed: true });
  });

  it("locks a labelled pod of an unlocked namespace, and lets an unlabelled one through unchanged", async () => {
    const pod = appPod({ labels: { "tproxy.io/lock": "enabled" } });
    const r = await post("/mutate", review(pod, { namespace: "team-b" }));
    expect(patched(pod, r).spec!.initContainers![0]!.name).to.equal("tproxy");
    expect((await post("/mutate", review(appPod(), { namespace: "team-b" }))).json!.response).to.deep.equal({ uid: "c0ffee-1", allowed: true });
  });

  it("refuses a tampered init container with 403 and a message naming what differs; /validate refuses a pod a later webhook unlocked", async () => {
    const pod = appPod();
    pod.spec!.initContainers = [{ ...structuredClone(CONFIG.initContainer), image: "evil/init:1" }];
    const r = await post("/mutate", review(pod));
    expect(r.json!.response.allowed).to.equal(false);
    expect(r.json!.response.status!.code).to.equal(403);
    expect(r.json!.response.status!.message).to.include('init container "tproxy" differs from tproxy\'s: image: "evil/init:1" instead of "registry.test/sidecar-init:1"');
    expect(r.json!.response.patch).to.equal(undefined);

    const out = patched(appPod(), await post("/mutate", review(appPod())));
    out.spec!.initContainers = [];
    const v = await post("/validate", review(out));
    expect(v.json!.response.allowed).to.equal(false);
    expect(v.json!.response.status!.message).to.include("is not locked as tproxy's injection makes it").and.include("add /spec/initContainers/0");
  });

  it("on update of a pod locked at creation, /validate refuses a changed init container image and an ephemeral container that keeps NET_RAW or adds NET_ADMIN, even with the label and annotation gone", async () => {
    const locked = patched(appPod(), await post("/mutate", review(appPod())));
    locked.metadata = { ...locked.metadata, name: "web-5d8f-abcde" };
    // Control: an update that keeps the lock (a label added) is allowed.
    const relabelled = structuredClone(locked);
    relabelled.metadata!.labels = { extra: "1" };
    expect((await post("/validate", review(relabelled, { operation: "UPDATE", oldObject: locked }))).json!.response.allowed).to.equal(true);
    // The init container's image swapped: it would run again, with NET_ADMIN, when the sandbox is recreated.
    const swapped = structuredClone(locked);
    swapped.spec!.initContainers![0]!["image"] = "evil/init:1";
    delete swapped.metadata!.annotations;
    const s = await post("/validate", review(swapped, { operation: "UPDATE", oldObject: locked, namespace: "team-b" }));
    expect(s.json!.response.allowed).to.equal(false);
    expect(s.json!.response.status!.message).to.include("locked since its creation").and.include('image: "evil/init:1"');
    // kubectl debug without a restricted profile: the ephemeral container keeps the runtime's NET_RAW.
    const debugged = structuredClone(locked);
    debugged.spec!.ephemeralContainers = [{ name: "debugger", image: "busybox" }];
    const d = await post("/validate", review(debugged, { operation: "UPDATE", oldObject: locked, subResource: "ephemeralcontainers" }));
    expect(d.json!.response.allowed).to.equal(false);
    expect(d.json!.response.status!.message).to.include('ephemeral container "debugger" keeps NET_RAW');
    debugged.spec!.ephemeralContainers = [{ name: "debugger", image: "busybox", securityContext: { capabilities: { add: ["NET_ADMIN"], drop: ["ALL"] } } }];
    const a = await post("/validate", review(debugged, { operation: "UPDATE", oldObject: locked, subResource: "ephemeralcontainers" }));
    expect(a.json!.response.status!.message).to.include('ephemeral container "debugger" adds capabilities NET_ADMIN');
    // Control: a restricted debug container (drop ALL) is allowed.
    debugged.spec!.ephemeralContainers = [{ name: "debugger", image: "busybox", securityContext: { capabilities: { drop: ["ALL"] } } }];
    expect((await post("/validate", review(debugged, { operation: "UPDATE", oldObject: locked, subResource: "ephemeralcontainers" }))).json!.response.allowed).to.equal(true);
    // /mutate leaves updates alone (it is registered for creation only).
    expect((await post("/mutate", review(swapped, { operation: "UPDATE", oldObject: locked }))).json!.response).to.deep.equal({ uid: "c0ffee-1", allowed: true });
  });

  it("refuses, failing closed, a pod whose namespace's labels cannot be read", async () => {
    namespaceApiFails = true;
    try {
      const r = await post("/mutate", review(appPod(), { namespace: "team-c" }));
      expect(r.json!.response.allowed).to.equal(false);
      expect(r.json!.response.status!.message).to.include("cannot tell whether pod web-5d8f-* is to be locked: cannot read the labels of namespace team-c");
    } finally {
      namespaceApiFails = false;
    }
    // A labelled pod needs no namespace: locked whatever the API says.
    const pod = appPod({ labels: { "tproxy.io/lock": "enabled" } });
    namespaceApiFails = true;
    try {
      expect((await post("/mutate", review(pod, { namespace: "team-c" }))).json!.response.allowed).to.equal(true);
    } finally {
      namespaceApiFails = false;
    }
  });

  describe("bad input: a clear refusal or a no-op, and the server answers the next request", () => {
    it("malformed JSON → 400 naming the parse error", async () => {
      const r = await post("/mutate", '{"apiVersion": "admission.k8s.io/v1", "kind": ');
      expect(r.status).to.equal(400);
      expect(r.text).to.match(/^tproxy-injector: the body is not JSON: /);
      await control();
    });

    it("not an AdmissionReview v1 (wrong apiVersion, an array), no request, no uid, no object → 400 naming what is missing", async () => {
      const cases: Array<[unknown, string]> = [
        [{ ...review(appPod()), apiVersion: "admission.k8s.io/v1beta1" }, 'expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got "admission.k8s.io/v1beta1", "AdmissionReview"'],
        [[1, 2], "the body is not an AdmissionReview object"],
        [{ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview" }, "the AdmissionReview has no request"],
        [{ ...review(appPod()), request: { ...review(appPod()).request, uid: undefined } }, "the AdmissionReview's request has no uid"],
        [{ ...review(appPod()), request: { ...review(appPod()).request, object: null } }, "the AdmissionReview's request has no Pod object"],
      ];
      for (const [body, message] of cases) {
        const r = await post("/mutate", body);
        expect(r.status, message).to.equal(400);
        expect(r.text).to.equal(`tproxy-injector: ${message}\n`);
      }
      await control();
    });

    it("a non-pod object or an operation other than CREATE → allowed unchanged (no patch), the kind named in a warning", async () => {
      const deployment = { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "web" }, spec: {} };
      const r = await post("/mutate", review(deployment, { kind: { group: "apps", version: "v1", kind: "Deployment" } }));
      expect(r.json!.response).to.deep.equal({ uid: "c0ffee-1", allowed: true, warnings: ["tproxy-injector handles pods only; this apps/Deployment was let through unchanged"] });
      const u = await post("/mutate", review(appPod(), { operation: "UPDATE" }));
      expect(u.json!.response).to.deep.equal({ uid: "c0ffee-1", allowed: true });
      await control();
    });

    it("a 4 MiB body → 413 and the connection closed, announced or streamed", async () => {
      // A raw TLS connection: the server answers and closes while the body is still being sent, which
      // node's http client reports as EPIPE instead of the answer.
      const huge = Buffer.alloc(4 * 1024 * 1024, 0x20);
      for (const framing of ["content-length: 4194304", "transfer-encoding: chunked"]) {
        const socket = connect({ host: "127.0.0.1", port, ca: readFileSync(ca.certPath), servername: "localhost" });
        await once(socket, "secureConnect");
        const received: Buffer[] = [];
        socket.on("data", (d: Buffer) => received.push(d));
        socket.on("error", () => {}); // EPIPE/ECONNRESET on our side of the write: expected
        // Closed by the server, else a timeout (events.once would reject on the EPIPE).
        const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
        socket.write(`POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n${framing}\r\n\r\n`);
        // Sent piece by piece, stopping once the server has answered (as curl does): a socket that fails
        // a write (EPIPE) drops what it had received but not yet handed over.
        const body = framing.startsWith("transfer") ? Buffer.concat([Buffer.from(`${huge.length.toString(16)}\r\n`), huge, Buffer.from("\r\n0\r\n\r\n")]) : huge;
        for (let at = 0; at < body.length && received.length === 0 && !socket.destroyed; at += 65536) {
          if (!socket.write(body.subarray(at, at + 65536))) await Promise.race([once(socket, "drain").catch(() => {}), closed]);
        }
        await closed;
        const text = Buffer.concat(received).toString();
        expect(text, framing).to.match(/^HTTP\/1\.1 413 /);
        expect(text).to.include("connection: close").and.include("tproxy-injector: request body over 3145728 bytes\n");
      }
      await control();
    });

    it("GET on /mutate → 405, an unknown path → 404; /healthz and /readyz answer 200", async () => {
      const g = await call("GET", "/mutate");
      expect(g.status).to.equal(405);
      expect(g.headers["allow"]).to.equal("POST");
      expect((await call("POST", "/nope", "{}")).status).to.equal(404);
      expect((await call("GET", "/healthz")).status).to.equal(200);
      expect((await call("GET", "/readyz")).text).to.equal("ok\n");
      await control();
    });
  });

  // Last: these change the running server (its certificate, then its life).
  describe("lifecycle", () => {
    it("serves a renewed certificate once its files change, without a restart", async () => {
      const served = () =>
        new Promise<string>((resolve, reject) => {
          const req = request({ host: "127.0.0.1", port, path: "/healthz", ca: readFileSync(ca.certPath), servername: "localhost", agent: false }, (res) => {
            resolve(new X509Certificate(res.socket && "getPeerX509Certificate" in res.socket ? (res.socket as import("node:tls").TLSSocket).getPeerX509Certificate()!.raw : Buffer.alloc(0)).fingerprint256);
            res.resume();
          });
          req.on("error", reject);
          req.end();
        });
      const before = await served();
      const renewed = ca.issue("renewed", ["localhost", "127.0.0.1"]);
      copyFileSync(renewed.keyPath, join(dir, "tls.key"));
      copyFileSync(renewed.certPath, join(dir, "tls.crt"));
      const want = new X509Certificate(readFileSync(renewed.certPath)).fingerprint256;
      expect(want).to.not.equal(before);
      const deadline = Date.now() + 10_000;
      let now = before;
      while (now !== want && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        now = await served();
      }
      expect(now).to.equal(want);
      expect(logs.join("\n")).to.include("TLS certificate reloaded");
      await control();
    });

    it("drains on SIGTERM: readyz turns 503 while reviews are still answered, then it exits 0", async () => {
      child.kill("SIGTERM");
      await new Promise((r) => setTimeout(r, 300));
      expect((await call("GET", "/readyz")).status).to.equal(503);
      await control();
      const [code] = (await once(child, "exit")) as [number];
      expect(code).to.equal(0);
    });
  });
});
