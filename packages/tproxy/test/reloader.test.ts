// The filter reloader against a ConfigMap directory updated the kubelet's way (..data swaps).
import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { writeConfigMap } from "../../../test/support/configmap.ts";
import { waitFor } from "../../../test/support/netns.ts";
import type { CompiledFilter } from "../src/filter/compile.ts";
import { FilterHost, type FilterVersion } from "../src/filter/host.ts";
import { FilterReloader } from "../src/filter/reloader.ts";
import { sourceHash } from "./helpers.ts";

const V1 = `export default { request(flow) { flow.respond(418, "v1"); } };\n`;
const V2 = `export default { request(flow) { flow.respond(418, "v2"); } };\n`;

describe("filter reloader", function () {
  this.timeout(20_000);
  let dir: string;
  let host: FilterHost;
  let reloader: FilterReloader | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "tproxy-reloader-"));
    host = new FilterHost({ timeoutMs: 1000 });
  });
  afterEach(async () => {
    await reloader?.close();
    reloader = undefined;
    await host.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("loads a version swapped in while it was starting (before its watch was ready), without waiting for the poll", async () => {
    writeConfigMap(dir, { "filter.ts": V1 });
    // The swap happens inside the first load, i.e. before the directory watch exists: no event will tell of it.
    const load = host.load.bind(host);
    let swapped = false;
    host.load = async (compiled: CompiledFilter): Promise<FilterVersion> => {
      if (!swapped) {
        swapped = true;
        writeConfigMap(dir, { "filter.ts": V2 });
      }
      return load(compiled);
    };
    reloader = new FilterReloader(join(dir, "filter.ts"), host, pino({ level: "silent" }));
    await reloader.start({ pollMs: 3_600_000 });
    await waitFor("the version swapped in during start-up", () => host.current?.hash === sourceHash(V2), 5000, 20);
    expect(swapped).to.equal(true);
  });

  it("loads each later ..data swap, and keeps the version in force when a swap brings a broken one", async () => {
    writeConfigMap(dir, { "filter.ts": V1 });
    let errors = 0;
    reloader = new FilterReloader(join(dir, "filter.ts"), host, pino({ level: "silent" }), { onError: () => { errors += 1; } });
    await reloader.start({ pollMs: 3_600_000 });
    expect(host.current?.hash).to.equal(sourceHash(V1));
    writeConfigMap(dir, { "filter.ts": V2 });
    await waitFor("v2 after the swap", () => host.current?.hash === sourceHash(V2), 5000, 20);
    writeConfigMap(dir, { "filter.ts": "export default { request(flow) { const x = ; } };\n" });
    await waitFor("the broken version refused", () => errors === 1, 5000, 20);
    expect(host.current?.hash).to.equal(sourceHash(V2));
  });
});
