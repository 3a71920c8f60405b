// The injection config file and the command line (checked once at start, messages naming the field), and
// the namespace labels read from a real HTTP API with @kubernetes/client-node (cache, no cached failure,
// a time limit).
import { expect } from "chai";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { ApiNamespaceLabels, ConfigError, parseInjectionConfig, parseServeConfig } from "../src/index.ts";
import { CONFIG } from "./fixtures.ts";

describe("the injection config", () => {
  it("accepts the config's shape and freezes it", () => {
    const c = parseInjectionConfig(structuredClone(CONFIG), "test");
    expect(c).to.deep.equal(CONFIG);
    expect(Object.isFrozen(c.initContainer)).to.equal(true);
  });

  it("refuses a bad config, naming the source and the field", () => {
    const cases: Array<[unknown, string]> = [
      [[], "test: the file must be a JSON object"],
      [{ ...CONFIG, annotation: "" }, "test: annotation must be an annotation key"],
      [{ ...CONFIG, lockLabel: 3 }, "test: lockLabel must be a label key"],
      [{ ...CONFIG, initContainer: { name: "tproxy" } }, "test: initContainer must be a container with a name and an image"],
      [{ ...CONFIG, volume: {} }, "test: volume must be a volume with a name"],
      [{ ...CONFIG, volumeMounts: [] }, "test: volumeMounts must be a non-empty list of volume mounts"],
      [{ ...CONFIG, volumeMounts: [{ name: "other", mountPath: "/x" }] }, 'test: volumeMounts[0] must be a mount of volume "ca-certs" with a mountPath'],
    ];
    for (const [json, message] of cases) expect(() => parseInjectionConfig(json, "test"), message).to.throw(ConfigError, message);
  });

  it("reads the file the command line names; required flags and bad ports fail naming the flag", () => {
    const dir = mkdtempSync(join(tmpdir(), "tproxy-injector-config-"));
    try {
      const file = join(dir, "injection.json");
      writeFileSync(file, JSON.stringify(CONFIG));
      const ok = parseServeConfig({ tlsCert: "c", tlsKey: "k", config: file });
      expect(ok).to.include({ port: 15173, address: "0.0.0.0", tlsCert: "c", tlsKey: "k", configFile: file });
      expect(parseServeConfig({ tlsCert: "c", tlsKey: "k", config: file, port: "0" }).port, "port 0 is a port").to.equal(0);
      expect(() => parseServeConfig({ tlsKey: "k", config: file })).to.throw(ConfigError, "--tls-cert is required");
      expect(() => parseServeConfig({ tlsCert: "c", tlsKey: "k", config: file, port: "70000" })).to.throw(ConfigError, '--port "70000" is not a port');
      expect(() => parseServeConfig({ tlsCert: "c", tlsKey: "k", config: join(dir, "none.json") })).to.throw(ConfigError, `--config ${join(dir, "none.json")}: cannot read it`);
      writeFileSync(file, "{");
      expect(() => parseServeConfig({ tlsCert: "c", tlsKey: "k", config: file })).to.throw(ConfigError, `--config ${file}: not JSON`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("ApiNamespaceLabels", () => {
  let server: Server;
  let kubeConfig: KubeConfig;
  let requests: string[];
  let mode: "ok" | "fail" | "hang";
  let labels: Record<string, string>;

  before(async () => {
    server = createServer((req, res) => {
      requests.push(`${req.method} ${req.url}`);
      if (mode === "hang") return; // never answers
      if (mode === "fail") return void res.writeHead(503, { "content-type": "application/json" }).end('{"kind":"Status"}');
      const name = /\/namespaces\/([^/?]+)/.exec(req.url ?? "")![1];
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ apiVersion: "v1", kind: "Namespace", metadata: { name, labels } }));
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    kubeConfig = new KubeConfig();
    kubeConfig.loadFromOptions({
      clusters: [{ name: "t", server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
      users: [{ name: "t", token: "t" }],
      contexts: [{ name: "t", cluster: "t", user: "t" }],
      currentContext: "t",
    });
  });
  beforeEach(() => {
    requests = [];
    mode = "ok";
    labels = { "tproxy.io/lock": "enabled" };
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  it("reads a namespace's labels once per ttl, then again", async () => {
    let now = 1000;
    const source = new ApiNamespaceLabels(kubeConfig, { ttlMs: 5000, now: () => now });
    expect(await source.labels("team-a")).to.deep.equal({ "tproxy.io/lock": "enabled" });
    labels = {};
    expect(await source.labels("team-a"), "cached").to.deep.equal({ "tproxy.io/lock": "enabled" });
    now += 5000;
    expect(await source.labels("team-a"), "read again").to.deep.equal({});
    expect(requests).to.deep.equal(["GET /api/v1/namespaces/team-a", "GET /api/v1/namespaces/team-a"]);
  });

  it("does not keep a failure, and gives up on an API that does not answer", async () => {
    const source = new ApiNamespaceLabels(kubeConfig, { timeoutMs: 300 });
    mode = "fail";
    let err = await source.labels("team-b").then(() => undefined, (e: Error) => e);
    expect(err?.message).to.match(/^cannot read the labels of namespace team-b: /);
    mode = "ok";
    expect(await source.labels("team-b")).to.deep.equal({ "tproxy.io/lock": "enabled" });
    mode = "hang";
    err = await source.labels("team-c").then(() => undefined, (e: Error) => e);
    expect(err?.message).to.equal("cannot read the labels of namespace team-c: no answer from the API within 300 ms");
  });
});
