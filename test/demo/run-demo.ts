// `npm start`: the tutorial "Transparent Proxy and Filtering on Kubernetes", on one machine.
//
// Builds a node, two pods and an "internet" in network namespaces, runs the real tproxy parts the way
// the Helm chart runs them (podwatch and the proxy on the node, sidecar-init in the locked pod), and
// prints what the tutorial shows. A Kubernetes API stand-in replaces the cluster's API server; this
// script plays the kubelet (pod IPs, init container before app, ConfigMap volume updates).
// Ctrl-C, an error, or the end: everything it made is removed. A crashed run's leftovers are removed
// at the next start.
import { existsSync, readFileSync } from "node:fs";
import { aptLine, missingPrerequisites, packagesOf, readPrerequisites } from "../support/prerequisites.ts";
import { BUCKET_URL, CHART_FILTER, LOCKED_IP, TutorialWorld } from "../support/tutorial-world.ts";

const PREFIX = "tpdemo";
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s = "") => process.stdout.write(`${s}\n`);
const step = (s: string) => say(`\n${bold(`== ${s}`)}`);

/** sidecar-init logs JSON (pino); show its message and fields as a person would read them. */
function readable(line: string): string {
  try {
    const { level: _l, time: _t, pid: _p, hostname: _h, name: _n, msg, ...rest } = JSON.parse(line) as Record<string, unknown>;
    return [msg, ...Object.entries(rest).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)].join(" ");
  } catch {
    return line;
  }
}

function preflight(): void {
  if (process.getuid?.() !== 0) {
    process.stderr.write("tproxy demo: needs root (it creates network namespaces and iptables rules): run it with sudo or as root.\n");
    process.exit(1);
  }
  // `npm start` ran test/support/preflight.ts already; this covers `node test/demo/run-demo.ts` run by hand.
  const missing = missingPrerequisites(readPrerequisites());
  if (missing.length > 0) {
    process.stderr.write(`tproxy demo: missing ${missing.map((p) => p.what).join(", ")}: ${aptLine(packagesOf(missing))}\n`);
    process.exit(1);
  }
  for (const dist of ["packages/tproxy/dist/cli.js", "packages/podwatch/dist/cli.js", "packages/sidecar-init/dist/cli.js"]) {
    if (!existsSync(new URL(`../../${dist}`, import.meta.url))) {
      process.stderr.write(`tproxy demo: ${dist} is missing: run "npm ci" (or "npm run build") first.\n`);
      process.exit(1);
    }
  }
}

async function main(): Promise<void> {
  preflight();
  await TutorialWorld.removeLeftovers(PREFIX);
  say(bold("tproxy: the tutorial on one machine"));
  say("A node, two pods and an internet in network namespaces; the Kubernetes API is a local stand-in.");

  const world = await TutorialWorld.create(PREFIX);
  let closing = false;
  const cleanup = async (code: number) => {
    if (closing) return;
    closing = true;
    await world.close();
    say(`\nremoved the demo's namespaces, rules and processes`);
    process.exit(code);
  };
  process.on("SIGINT", () => void cleanup(130));
  process.on("SIGTERM", () => void cleanup(143));

  try {
    step("helm install tproxy charts/tproxy");
    await world.installTproxy();
    say("tproxy CA created (tproxy ca create); filter ConfigMap from charts/tproxy/files/filter.ts");
    say("DaemonSet pod on the node: tproxy-podwatch (watching this node's pods) and tproxy run (transparent port 15170)");

    step("kubectl apply -f examples/debian-app.yaml   (no annotation, no init container)");
    world.schedulePod(world.app, false);
    for (const line of await world.appRound(world.app)) say(`debian-app | ${line}`);

    step("kubectl apply -f examples/debian-app-locked-manual.yaml   (annotation + init container + root certs)");
    const init = await world.deployLocked();
    for (const line of init.lines) say(`debian-app-locked (init: sidecar-init) | ${readable(line)}`);
    if (init.child.exitCode !== 0) throw new Error(`sidecar-init exited ${init.child.exitCode}`);
    for (let round = 0; round < 2; round += 1) {
      for (const line of await world.appRound(world.locked)) say(`debian-app-locked | ${line}`);
    }

    step("edit charts/tproxy/files/filter.ts (418 -> 500) and helm upgrade tproxy charts/tproxy");
    const logStart = world.proxy!.lines.length;
    world.updateFilter(readFileSync(CHART_FILTER, "utf8").replace("418", "500"));
    await world.proxy!.waitForLine(/filter loaded .*hash=/, 5000).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 1500));
    say("the kubelet swapped the ConfigMap volume's ..data link; nothing was restarted");
    for (const line of await world.appRound(world.locked)) say(`debian-app-locked | ${line}`);

    step(`kubectl logs ds/tproxy -c tproxy   (since the upgrade)`);
    for (const line of world.proxy!.lines.slice(logStart)) {
      if (line.includes(LOCKED_IP) || /filter loaded/.test(line)) say(`tproxy | ${line}`);
    }
    say(`\nThe locked pod reached ${BUCKET_URL} and nothing else; the unlocked pod was not affected.`);
  } catch (err) {
    process.stderr.write(`tproxy demo failed: ${(err as Error).message}\n`);
    await cleanup(1);
  }
  await cleanup(0);
}

await main();
