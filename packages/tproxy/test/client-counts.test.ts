import { expect } from "chai";
import { Worker } from "node:worker_threads";
import { ClientCounts } from "../src/net/client-counts.ts";

describe("client counts (one per-client cap for all serving threads)", () => {
  it("counts up to the cap, refuses past it without counting, and frees on release", () => {
    const c = new ClientCounts();
    for (let i = 1; i <= 3; i += 1) expect(c.acquire("10.0.0.2", 3)).to.equal(i);
    expect(c.acquire("10.0.0.2", 3)).to.equal(false);
    expect(c.open("10.0.0.2")).to.equal(3);
    c.release("10.0.0.2");
    expect(c.open("10.0.0.2")).to.equal(2);
    expect(c.acquire("10.0.0.2", 3)).to.equal(3);
  });

  it("keeps addresses apart, and 0 means no cap", () => {
    const c = new ClientCounts();
    for (let i = 0; i < 5; i += 1) c.acquire("10.0.0.2", 0);
    expect(c.acquire("10.0.0.3", 1)).to.equal(1);
    expect(c.acquire("10.0.0.3", 1)).to.equal(false);
    expect(c.open("10.0.0.2")).to.equal(5);
    // A thousand pod addresses (more than a node runs), each with one connection: none is taken for another.
    const d = new ClientCounts();
    const addresses = Array.from({ length: 1000 }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    expect(addresses.filter((a) => d.acquire(a, 1) === false)).to.deep.equal([]);
  });

  it("is one count for threads sharing its memory", async () => {
    const c = new ClientCounts();
    // Another thread acquires through the same buffer with the same module.
    const url = new URL("../src/net/client-counts.ts", import.meta.url).href;
    const w = new Worker(`import(${JSON.stringify(url)}).then(({ ClientCounts }) => { const { workerData, parentPort } = require("node:worker_threads"); const c = new ClientCounts(workerData); const got = []; for (let i = 0; i < 4; i += 1) got.push(c.acquire("10.0.0.9", 6)); parentPort.postMessage(got); });`, { eval: true, workerData: c.buffer });
    const fromThread = await new Promise<unknown>((resolve, reject) => { w.once("message", resolve); w.once("error", reject); });
    await w.terminate();
    expect(fromThread).to.deep.equal([1, 2, 3, 4]);
    expect(c.acquire("10.0.0.9", 6)).to.equal(5);
    expect(c.acquire("10.0.0.9", 6)).to.equal(6);
    expect(c.acquire("10.0.0.9", 6)).to.equal(false);
  });
});
