// HTTP/2 streams in flight count against the connection limits: each stream beyond a session's first holds what a
// connection with one request holds (an upstream connection and its buffers: memory-limit.test.ts), so a pod cannot
// hold more requests in flight over HTTP/2 than over HTTP/1.1 (--max-client-connections, --max-connections).
// Real namespaces, the real proxy and Node's HTTP/2 client in the pod.
import { expect } from "chai";
import { join } from "node:path";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { ProxyWorld, type Proc } from "../../../test/support/world.ts";
import { metric, metricsOf } from "./helpers.ts";

const CLIENT = join(import.meta.dirname, "h2-client.ts");
const FILTER = `export default { request() {} };`;

interface StreamResult {
  status: number;
  body: string;
  error?: string;
}

describe("HTTP/2 streams in flight against the connection limits (network namespaces, iptables REDIRECT)", function () {
  this.timeout(60_000);
  let world: ProxyWorld;
  let proxy: Proc;
  let ca: { cert: string; key: string };

  before(async function () {
    world = await ProxyWorld.create("th2l");
    ca = await world.makeProxyCa();
    const filterDir = join(world.dir, "filter");
    writeConfigMap(filterDir, { "filter.ts": FILTER });
    proxy = await world.startProxy(["--ca-cert", ca.cert, "--ca-key", ca.key, "--filter", join(filterDir, "filter.ts"), "--upstream-ca", world.publicCa.certPath, "--workers", "1", "--max-client-connections", "3"]);
    await world.redirectPod();
  });
  after(async () => {
    await world?.close();
  });

  const streams = async (paths: string[]): Promise<StreamResult[]> => {
    const spec = { mode: "requests", host: "storage.googleapis.com", servername: "storage.googleapis.com", ca: ca.cert, requests: paths.map((path) => ({ path })) };
    const r = await world.pod.run(process.execPath, [CLIENT, JSON.stringify(spec)], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`h2 client failed (${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout) as StreamResult[];
  };

  it("refuses streams beyond --max-client-connections while they are in flight, and takes them again once answered", async () => {
    // Five slow streams at once on one session: the session and two more streams are three, the limit.
    const r = await streams(["/slow/1500?1", "/slow/1500?2", "/slow/1500?3", "/slow/1500?4", "/slow/1500?5"]);
    const answered = r.filter((s) => s.status === 200);
    const refused = r.filter((s) => s.error !== undefined);
    expect(answered, JSON.stringify(r)).to.have.length(3);
    expect(refused.map((s) => s.error)).to.deep.equal(["Stream closed with error code NGHTTP2_REFUSED_STREAM", "Stream closed with error code NGHTTP2_REFUSED_STREAM"]);
    expect(metric(await metricsOf(world), "tproxy_rejected_connections_total", { reason: "stream-client-limit" })).to.equal(2);
    expect(proxy.output).to.match(/HTTP\/2 stream refused: per-client connection limit/);
    // Control: the same streams one by one are all answered (the count went back down as each ended).
    const again = await streams(["/slow/100?a"]);
    expect(again.map((s) => s.status)).to.deep.equal([200]);
    const three = await streams(["/slow/500?x", "/slow/500?y", "/slow/500?z"]);
    expect(three.map((s) => s.status)).to.deep.equal([200, 200, 200]);
  });
});
