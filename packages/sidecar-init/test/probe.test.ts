import { expect } from "chai";
import { pino } from "pino";
import { waitForInterception, WaitTimeoutError } from "../src/index.ts";

describe("sidecar-init wait loop", () => {
  const log = pino({ level: "silent" });

  it("returns at the first successful probe", async () => {
    let calls = 0;
    const r = await waitForInterception({ address: "192.0.2.1", timeoutMs: 5_000, intervalMs: 10, probe: async () => (++calls < 3 ? { ok: false, seen: "EHOSTUNREACH" } : { ok: true }) }, log);
    expect(r.attempts).to.equal(3);
  });

  it("gives up after the timeout with what it expected, what it saw and what to check", async () => {
    const started = Date.now();
    const err = await waitForInterception({ address: "192.0.2.1", timeoutMs: 300, intervalMs: 20, probe: async () => ({ ok: false, seen: "HTTP 200 without x-tproxy-probe (not the node's proxy)" }) }, log).then(
      () => undefined,
      (e: unknown) => e,
    );
    const elapsed = Date.now() - started;
    expect(err).to.be.instanceOf(WaitTimeoutError);
    expect((err as WaitTimeoutError).exitCode).to.equal(4);
    expect((err as Error).message).to.equal(
      'interception not live after 300ms: expected HTTP 200 with "x-tproxy-probe: ok" from http://192.0.2.1/, which only the node\'s tproxy answers once it redirects this pod, but the last attempt saw HTTP 200 without x-tproxy-probe (not the node\'s proxy); ' +
        'check that the tproxy DaemonSet has a running pod on this node and that this pod carries the opt-in annotation (default initializer.kubernetes.io/tproxy: "true")',
    );
    expect(elapsed).to.be.within(280, 1_000);
  });
});
