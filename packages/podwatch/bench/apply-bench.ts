// Benchmark (not a test): time of one apply for 1,000 and 5,000 pods with the real iptables binaries in a
// throw-away network namespace, and the event-to-rule latency through the real client and the API
// stand-in with that many pods present. Needs root. Run: npm run bench -w @tproxy/podwatch
import { KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { pino } from "pino";
import { KubeApiStandIn } from "../../../test/support/kube-api-stand-in.ts";
import { Netns, removeStale, uniqueName } from "../../../test/support/netns.ts";
import { systemClock } from "../src/clock.ts";
import { parseConfig } from "../src/config.ts";
import { startPodwatch } from "../src/controller.ts";
import type { Family } from "../src/desired.ts";
import { ExecIptables } from "../src/iptables.ts";
import { Reconciler } from "../src/reconciler.ts";

const A = "initializer.kubernetes.io/tproxy";
const log = pino({ level: "silent" });
const sizes = (process.env.BENCH_SIZES ?? "1000,5000").split(",").map(Number);
const ipOf = (i: number) => `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;

function pods(n: number): V1Pod[] {
  return Array.from({ length: n }, (_, i) => ({
    metadata: { name: `pod-${i}`, namespace: `ns-${i % 20}`, annotations: { [A]: "true" }, creationTimestamp: new Date(0) },
    spec: { nodeName: "node-a", containers: [] },
    status: { phase: "Running", podIP: ipOf(i) },
  }));
}

const ms = (t0: number) => (performance.now() - t0).toFixed(1);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

await removeStale("tpwb");
const node = await Netns.create(uniqueName("tpwb"));
try {
  for (const n of sizes) {
    const runner = new ExecIptables({ prefix: ["ip", "netns", "exec", node.name] });
    let current = pods(n);
    const r = new Reconciler({ pods: () => current, runner, clock: systemClock, log, annotation: A, proxyPort: 8080, resyncMs: 3_600_000, families: ["ipv4"] });
    await node.must("iptables", ["-t", "nat", "-F", "TPROXY-REDIRECT"]).catch(() => undefined);
    let t0 = performance.now();
    await r.reconcileOnce();
    const first = ms(t0);
    t0 = performance.now();
    await r.reconcileOnce();
    const noop = ms(t0);
    current = [...current, ...pods(n + 1).slice(n)];
    t0 = performance.now();
    await r.reconcileOnce();
    const one = ms(t0);
    const count = (await node.must("iptables-save", ["-t", "nat"])).split("\n").filter((l) => l.startsWith("-A TPROXY-REDIRECT")).length;
    console.log(`${n} pods: first apply ${first} ms, no-change resync ${noop} ms, one pod added ${one} ms (kernel has ${count} rules)`);
  }

  // Event-to-rule latency: pod IP set in the API → iptables-restore holding its rule has returned.
  for (const n of sizes) {
    const api = await KubeApiStandIn.start();
    for (let i = 0; i < n; i++) api.createPod({ name: `pod-${i}`, namespace: `ns-${i % 20}`, nodeName: "node-a", annotations: { [A]: "true" }, podIP: ipOf(i) });
    const kc = new KubeConfig();
    kc.loadFromFile(api.kubeconfigPath);
    const real = new ExecIptables({ prefix: ["ip", "netns", "exec", node.name] });
    const waiters = new Map<string, () => void>();
    const runner = {
      save: (f: Family) => real.save(f),
      async restore(f: Family, input: string) {
        await real.restore(f, input);
        for (const [ip, done] of waiters) if (input.includes(` ${ip}/32 `)) done();
      },
    };
    const pw = await startPodwatch(parseConfig({ nodeName: "node-a", metricsPort: 0 }), { kubeConfig: kc, runner, log, noStatusServer: true });
    await new Promise<void>((resolve) => {
      const t = setInterval(() => pw.reconciler.lastOk && (clearInterval(t), resolve()), 20);
    });
    const samples: number[] = [];
    for (let k = 0; k < 10; k++) {
      const name = `late-${k}`;
      const ip = `10.250.0.${k + 1}`;
      api.createPod({ name, nodeName: "node-a", annotations: { [A]: "true" } });
      await new Promise((r) => setTimeout(r, 150));
      const seen = new Promise<void>((resolve) => waiters.set(ip, resolve));
      const t0 = performance.now();
      api.setPodIP("default", name, ip);
      await seen;
      samples.push(performance.now() - t0);
      waiters.delete(ip);
    }
    console.log(
      `${n} pods present: event-to-rule latency median ${median(samples).toFixed(1)} ms, max ${Math.max(...samples).toFixed(1)} ms ` +
        `(10 samples; includes the 50 ms coalescing window)`,
    );
    await pw.stop();
    await api.close();
  }
} finally {
  await node.destroy();
}
