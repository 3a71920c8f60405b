// `npm start`: the tutorial "Transparent Proxy and Filtering on Kubernetes", on one machine, and a third
// act: the same app locked without a pasted snippet, by the chart's injection webhook, in both lock modes
// (an init container with NET_ADMIN, or the chained CNI plugin and an init container with no capability).
//
// Builds a node, two pods and an "internet" in network namespaces, runs the real tproxy parts the way
// the Helm chart runs them (podwatch and the proxy on the node, sidecar-init in the locked pod), and
// prints what the tutorial shows. A Kubernetes API stand-in replaces the cluster's API server; this
// script plays the kubelet (pod IPs, init container before app, ConfigMap volume updates).
// Ctrl-C, an error, or the end: everything it made is removed. A crashed run's leftovers are removed
// at the next start.
import { existsSync, readFileSync } from "node:fs";
import { aptLine, missingPrerequisites, packagesOf, readPrerequisites } from "../support/prerequisites.ts";
import { applyUnmodified, cniNode, dropsNetRaw, installInjector, LOCK_LABEL, type Applied } from "../support/injection.ts";
import { BUCKET_URL, CHART_FILTER, LOCKED_IP, TutorialWorld, type PodNs } from "../support/tutorial-world.ts";

const EXAMPLE_APP = new URL("../../examples/debian-app.yaml", import.meta.url).pathname;

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
  for (const dist of ["packages/tproxy/dist/cli.js", "packages/podwatch/dist/cli.js", "packages/sidecar-init/dist/cli.js", "packages/injector/dist/cli.js"]) {
    if (!existsSync(new URL(`../../${dist}`, import.meta.url))) {
      process.stderr.write(`tproxy demo: ${dist} is missing: run "npm ci" (or "npm run build") first.\n`);
      process.exit(1);
    }
  }
}

/** Act 3: no pasted snippet. A labelled namespace, the unmodified example, the chart's webhook locks the pod, in both lock modes. */
async function injectionAct(world: TutorialWorld): Promise<void> {
  step("kubectl label namespace team-a tproxy.io/lock=enabled   (injection: nothing pasted into the app's manifest)");
  const injector = await installInjector(world);
  world.api.createNamespace("team-a", { [LOCK_LABEL]: "enabled" });
  say("the chart's webhook (tproxy-injector, Deployment of 2) answers the API server's admission of pods in labelled namespaces");
  step("kubectl apply -n team-a -f examples/debian-app.yaml   (unmodified: no annotation, no init container, no capabilities)");
  await showInjected(world, await applyUnmodified(world, "team-a", await world.addPod("debian-app"), EXAMPLE_APP));

  step("helm upgrade tproxy charts/tproxy --reuse-values --set lock.mode=cni   (the lock written at sandbox creation; pods need no NET_ADMIN)");
  const node = await cniNode(world);
  await injector.proc.stop();
  await installInjector(world, { "lock.mode": "cni" });
  world.api.createNamespace("team-b", { [LOCK_LABEL]: "enabled" });
  say(`install-cni put tproxy-cni last in the node's conflist (${node.conflist.plugins.map((p) => p.type).join(", ")}); podwatch tells it which pods to lock, on its socket`);
  step("kubectl label namespace team-b tproxy.io/lock=enabled && kubectl apply -n team-b -f examples/debian-app.yaml");
  await showInjected(world, await applyUnmodified(world, "team-b", node.sandbox, EXAMPLE_APP));
}

/** What admission made of the pod, its init container's lines, and one round of the app. */
async function showInjected(world: TutorialWorld, applied: Applied & { podNs: PodNs }): Promise<void> {
  const name = applied.pod.metadata.name;
  const spec = applied.pod.spec as { initContainers?: Array<{ name: string; args?: string[]; securityContext?: { capabilities?: { add?: string[] } } }>; volumes?: Array<{ name: string }> };
  const init = spec.initContainers?.[0];
  const caps = init?.securityContext?.capabilities?.add?.join(", ");
  say(`admitted as ${name}: the webhook added the annotation, init container "${init?.name}" (${caps ? `adds ${caps}` : "no capabilities"}${init?.args?.length ? `, ${init.args.join(" ")}` : ""}), volume ${spec.volumes?.map((v) => v.name).join(", ")}, NET_RAW dropped in every app container: ${dropsNetRaw(applied.pod)}`);
  for (const i of applied.inits) for (const line of i.proc.lines) say(`${name} (init: ${i.name}) | ${readable(line)}`);
  const failed = applied.inits.find((i) => i.proc.child.exitCode !== 0);
  if (failed) throw new Error(`init container ${failed.name} exited ${failed.proc.child.exitCode}`);
  for (const line of await world.appRound(applied.podNs)) say(`${name} | ${line}`);
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

    step("helm upgrade tproxy charts/tproxy --reuse-values --set-file filter.script=charts/tproxy/files/filter.ts   (the 418 again)");
    world.updateFilter(readFileSync(CHART_FILTER, "utf8"));
    await new Promise((r) => setTimeout(r, 1500));
    say("the filter is the chart's again: www.google.com gets 418");
    await injectionAct(world);
  } catch (err) {
    process.stderr.write(`tproxy demo failed: ${(err as Error).message}\n`);
    await cleanup(1);
  }
  await cleanup(0);
}

await main();
