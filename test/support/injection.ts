// The tutorial's third act on one machine: pods locked without a pasted snippet, through the chart's
// injection webhook (packages/injector), for the demo and the tests.
//
//   installInjector(world, values)      what `helm install` adds for injection: the chart is rendered
//                                       (helm template, so the webhook configurations, the injection
//                                       config and the webhook's certificate are the chart's own), the
//                                       real `tproxy-injector serve` runs with them (one replica, on this
//                                       machine), and the API stand-in's admission calls it.
//   applyUnmodified(world, ...)         `kubectl apply -f examples/debian-app.yaml` into a namespace:
//                                       the Deployment's pod goes through admission as a ReplicaSet's pod
//                                       does (generateName, no name yet); the kubelet stand-in then runs
//                                       the admitted pod: the root-certs volume when it has one, each init
//                                       container from its spec (command, args, env, user and capabilities
//                                       as the runtime would apply its securityContext, with setpriv).
//
// What is not real: the API server (admission-stand-in.ts, kube-api-stand-in.ts), the kubelet and the
// runtime (these functions), the cluster network to the webhook's Service (it is reached on 127.0.0.1).
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { bundlePlugin } from "../../packages/sidecar-init/src/cni/bundle.ts";
import { install } from "../../packages/sidecar-init/src/cni/install.ts";
import { AdmissionStandIn, type PodObject, type WebhookConfiguration } from "./admission-stand-in.ts";
import { bridgeConflist, CniRuntime, type Conflist } from "./cni-runtime.ts";
import { CNI_PATH } from "./datapath.ts";
import { freePort, template, type K8sObject } from "./helm.ts";
import type { Pod } from "./kube-api-stand-in.ts";
import { waitFor } from "./netns.ts";
import { DNS_IP, NODE_NAME, SERVICE_CIDR, SIDECAR_CLI, type PodNs, type TutorialWorld } from "./tutorial-world.ts";
import { Proc, REPO } from "./world.ts";

export const INJECTOR_CLI = join(REPO, "packages/injector/dist/cli.js");
/** The label that locks a namespace's pods. */
export const LOCK_LABEL = "tproxy.io/lock";

export interface InjectorRun {
  proc: Proc;
  port: number;
  /** The rendered objects, for tests that look at them. */
  objects: K8sObject[];
  admission: AdmissionStandIn;
}

/** What the chart renders for injection, found by what it is (names are the chart's business). */
function injectionParts(objects: readonly K8sObject[]): { config: string; cert: string; key: string; webhooks: WebhookConfiguration[] } {
  const cm = objects.find((o) => o.kind === "ConfigMap" && typeof (o as { data?: Record<string, string> }).data?.["injection.json"] === "string");
  const secret = objects.find((o) => o.kind === "Secret" && o.metadata.name.includes("injector") && (o as { type?: string }).type === "kubernetes.io/tls");
  const webhooks = objects.filter((o) => o.kind === "MutatingWebhookConfiguration" || o.kind === "ValidatingWebhookConfiguration") as unknown as WebhookConfiguration[];
  if (!cm || !secret || webhooks.length === 0) {
    throw new Error(`the chart rendered no injector (ConfigMap with injection.json, TLS Secret, webhook configurations) among ${objects.map((o) => `${o.kind}/${o.metadata.name}`).join(", ")}`);
  }
  const data = (secret as { data?: Record<string, string> }).data ?? {};
  return {
    config: (cm as unknown as { data: Record<string, string> }).data["injection.json"]!,
    cert: Buffer.from(data["tls.crt"] ?? "", "base64").toString(),
    key: Buffer.from(data["tls.key"] ?? "", "base64").toString(),
    webhooks,
  };
}

/** Renders the chart with the tutorial's lock values (and `values`), starts the webhook, wires admission. */
export async function installInjector(world: TutorialWorld, values: Record<string, unknown> = {}): Promise<InjectorRun> {
  // The node's CA, as `helm install` is given it (ca.cert/ca.key): the chart then renders without a cluster.
  const ca = { "ca.cert": readFileSync(world.ca.cert, "utf8"), "ca.key": readFileSync(world.ca.key, "utf8") };
  const objects = await template({ set: { ...ca, "lock.blockCidrs": [SERVICE_CIDR], "lock.allowDns": [DNS_IP], ...values } });
  const parts = injectionParts(objects);
  const dir = join(world.dir, `injector-${Date.now()}`);
  mkdirSync(dir, { recursive: true });
  for (const [name, text] of [["injection.json", parts.config], ["tls.crt", parts.cert], ["tls.key", parts.key]] as const) writeFileSync(join(dir, name), text);
  const port = await freePort();
  const proc = new Proc(
    spawn(process.execPath, [INJECTOR_CLI, "serve", "--port", String(port), "--tls-cert", join(dir, "tls.crt"), "--tls-key", join(dir, "tls.key"), "--config", join(dir, "injection.json")], {
      env: { ...process.env, KUBECONFIG: world.api.kubeconfigPath },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  world.adopt(proc);
  await waitFor("the injector to listen", async () => {
    if (proc.child.exitCode !== null) throw new Error(`tproxy-injector exited ${proc.child.exitCode}:\n${proc.output}`);
    return proc.lines.some((l) => /listening/i.test(l));
  }, 15_000, 100);
  const admission = new AdmissionStandIn(() => ({ host: "127.0.0.1", port }));
  for (const w of parts.webhooks) admission.apply(w);
  world.api.admission = admission;
  return { proc, port, objects, admission };
}

/** The pod template of a Deployment manifest, as its ReplicaSet would create the pod. */
export function podOfDeployment(manifestPath: string): PodObject {
  const d = parse(readFileSync(manifestPath, "utf8")) as { metadata: { name: string }; spec: { template: { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: Record<string, unknown> } } };
  const t = d.spec.template;
  return {
    metadata: { generateName: `${d.metadata.name}-`, ...(t.metadata?.labels ? { labels: t.metadata.labels } : {}), ...(t.metadata?.annotations ? { annotations: t.metadata.annotations } : {}) },
    spec: t.spec,
  };
}

interface Container {
  name: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }>;
  securityContext?: {
    runAsUser?: number;
    runAsGroup?: number;
    runAsNonRoot?: boolean;
    allowPrivilegeEscalation?: boolean;
    privileged?: boolean;
    capabilities?: { add?: string[]; drop?: string[] };
  };
}

/** The images' entry points, as this repository builds them (docker/*.Dockerfile put these bins on PATH). */
const BINS: Record<string, string> = { "tproxy-sidecar-init": SIDECAR_CLI };

/**
 * The container's process as the runtime would start it: setpriv applies the securityContext's user,
 * no_new_privs and capability bounding set (drop ALL then add, or the runtime's defaults), and nothing
 * is inherited; the command maps to this repository's build of the image's bin.
 */
export function containerProcess(c: Container, pod: Pod): { cmd: string; args: string[]; env: Record<string, string> } {
  const [bin, ...rest] = c.command ?? [];
  const script = bin === undefined ? undefined : BINS[bin];
  if (script === undefined) throw new Error(`the kubelet stand-in cannot run container ${c.name}: command ${JSON.stringify(c.command)} is not one of this repository's bins (${Object.keys(BINS).join(", ")})`);
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef?.fieldPath === "spec.nodeName") env[e.name] = pod.spec.nodeName ?? NODE_NAME;
    else throw new Error(`the kubelet stand-in cannot fill env ${e.name} of ${c.name}`);
  }
  const sc = c.securityContext ?? {};
  if (sc.privileged) throw new Error(`container ${c.name} asks to be privileged: the demo does not run privileged containers`);
  // The runtime's default set (containerd, CRI-O) unless the container drops ALL; then only what it adds.
  const defaults = ["chown", "dac_override", "fsetid", "fowner", "mknod", "net_raw", "setgid", "setuid", "setfcap", "setpcap", "net_bind_service", "sys_chroot", "kill", "audit_write"];
  const drop = (sc.capabilities?.drop ?? []).map((x) => x.toLowerCase());
  const add = (sc.capabilities?.add ?? []).map((x) => x.toLowerCase());
  const kept = drop.includes("all") ? add : [...new Set([...defaults.filter((x) => !drop.includes(x)), ...add])];
  const priv = ["--inh-caps=-all", `--bounding-set=-all${kept.map((x) => `,+${x}`).join("")}`];
  if (sc.runAsUser !== undefined && sc.runAsUser !== 0) priv.push(`--reuid=${sc.runAsUser}`, `--regid=${sc.runAsGroup ?? sc.runAsUser}`, "--clear-groups");
  if (sc.allowPrivilegeEscalation === false) priv.push("--no-new-privs");
  return { cmd: "setpriv", args: [...priv, process.execPath, script, ...rest, ...(c.args ?? [])], env };
}

export interface Applied {
  pod: Pod;
  /** Each init container's process, in order, run to its end (a failed one ends the list). */
  inits: Array<{ name: string; proc: Proc }>;
}

/** Where a pod's sandbox comes from: a namespace the world wired already, or one the CNI chain wires. */
export type Sandbox = PodNs | ((pod: Pod) => Promise<PodNs>);

/**
 * `kubectl apply -n NAMESPACE -f MANIFEST` of an unmodified Deployment, the pod scheduled on the node:
 * admission, then the kubelet stand-in brings up the sandbox (`sandbox`: wired already, or made now by the
 * CNI chain, which runs before any container) and runs what admission made of the pod.
 */
export async function applyUnmodified(world: TutorialWorld, namespace: string, sandbox: Sandbox, manifestPath: string): Promise<Applied & { podNs: PodNs }> {
  const pod = await world.api.createPodObject(namespace, podOfDeployment(manifestPath), { nodeName: NODE_NAME });
  const podNs = typeof sandbox === "function" ? await sandbox(pod) : sandbox;
  podNs.name = pod.metadata.name;
  world.kubelet.adopt(namespace, pod.metadata.name, podNs.ip);
  const volumes = (pod.spec.volumes ?? []) as Array<{ name: string; configMap?: { name: string } }>;
  // The root-certs volume over /etc/ssl/certs, or the image's own bundle (the web's roots).
  if (volumes.some((v) => v.configMap?.name?.endsWith("root-certs"))) world.mountRootCerts(podNs);
  else world.trustPublicCa(podNs);
  const inits: Applied["inits"] = [];
  for (const c of (pod.spec.initContainers ?? []) as Container[]) {
    const p = containerProcess(c, pod);
    const proc = world.spawn(podNs.ns, p.cmd, p.args, p.env);
    world.kubelet.follow(namespace, pod.metadata.name, c.name, proc.child);
    if (proc.child.exitCode === null) await new Promise((r) => proc.child.once("exit", r));
    inits.push({ name: c.name, proc });
    if (proc.child.exitCode !== 0) break;
  }
  return { pod: world.api.getPod(namespace, pod.metadata.name)!, inits, podNs };
}

export interface CniNode {
  runtime: CniRuntime;
  conflist: Conflist;
  /** A sandbox for `applyUnmodified`: a fresh namespace wired by the node's conflist (bridge, host-local, tproxy-cni). */
  sandbox: (pod: Pod) => Promise<PodNs>;
}

/**
 * The node in lock.mode cni: podwatch answers on its socket, the installer put tproxy-cni (node binary,
 * bundle, wrapper) in a "host" CNI bin folder and last in the node's conflist (the reference bridge with
 * host-local on `subnet`), and a runtime stand-in runs that conflist for each sandbox.
 */
export async function cniNode(world: TutorialWorld, subnet = "10.90.10.0/24"): Promise<CniNode> {
  const host = join(world.dir, `cni-host-${Date.now()}`);
  const socket = join(host, "run-tproxy", "cni.sock");
  await world.podwatch?.stop();
  await world.startPodwatch(["--cni-socket", socket]);
  await waitFor("podwatch's CNI socket", () => existsSync(socket), 15_000);
  const binDir = join(host, "opt-cni-bin");
  const confDir = join(host, "etc-cni-net.d");
  mkdirSync(binDir, { recursive: true });
  mkdirSync(confDir, { recursive: true });
  const gateway = subnet.replace(/\.0\/\d+$/, ".1");
  writeFileSync(join(confDir, "10-bridge.conflist"), JSON.stringify(bridgeConflist({ name: "tutorial", bridge: "cnitut0", subnet, gateway, dataDir: join(host, "host-local") })));
  install({ binDir, confDir, nodeBinary: process.execPath, bundle: await bundlePlugin(join(host, "tproxy-cni.cjs")), settings: { socket, allowDns: [DNS_IP], blockCidrs: [SERVICE_CIDR], excludeNamespaces: ["kube-system"] } });
  const conflist = JSON.parse(readFileSync(join(confDir, "10-bridge.conflist"), "utf8")) as Conflist;
  const runtime = new CniRuntime(world.node, [binDir, CNI_PATH]);
  const sandbox = async (pod: Pod): Promise<PodNs> => {
    const ns = await world.sandboxNs();
    const added = await runtime.add(conflist, pod.metadata.uid, `/var/run/netns/${ns.name}`, { namespace: pod.metadata.namespace, name: pod.metadata.name, uid: pod.metadata.uid });
    if (!added.ok) throw new Error(`the CNI chain failed the sandbox of ${pod.metadata.name} (${added.failed?.type}): ${added.failed?.stdout}${added.failed?.stderr}`);
    const ip = ((added.result?.["ips"] as Array<{ address: string }>)[0]?.address ?? "").split("/")[0]!;
    return { name: pod.metadata.name, ns, ip };
  };
  return { runtime, conflist, sandbox };
}

/** True when the admitted pod's app containers all drop NET_RAW (what the webhook adds). */
export function dropsNetRaw(pod: Pod): boolean {
  return ((pod.spec.containers ?? []) as Container[]).every((c) => (c.securityContext?.capabilities?.drop ?? []).includes("NET_RAW"));
}

