#!/usr/bin/env node
import { Command, Option } from "commander";
import { pino } from "pino";
import { DEFAULT_ANNOTATION, DEFAULT_INIT_CONTAINER, DEFAULT_IPTABLES_BACKEND, DEFAULT_METRICS_ADDRESS, DEFAULT_METRICS_PORT, DEFAULT_PROXY_PORT, DEFAULT_RESYNC, parseConfig, type RawOptions } from "./config.ts";
import { startPodwatch } from "./controller.ts";
import { PodwatchError } from "./errors.ts";
import { lockedPods } from "./lifecycle.ts";
import { KubeConfig } from "@kubernetes/client-node";

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

const program = new Command("tproxy-podwatch")
  .description(
    "Keeps two chains of this node exactly right for each IP of its locked, live (pending, running or " +
      "terminating) pods: nat TPROXY-REDIRECT (80/443 to the transparent proxy) and filter TPROXY-ENFORCE " +
      "(from INPUT and FORWARD: drop what is neither redirected, nor allowed DNS, nor the standard port, nor a " +
      "reply). A pod is locked when annotated \"true\" or when its spec has the lock's init container." +
      "\n\nKubernetes access: KUBECONFIG, ~/.kube/config " +
      "or the in-cluster service account. Log level: env TPROXY_LOG_LEVEL (default info).",
  )
  .addOption(new Option("--node-name <name>", "this node's name (required)").env("NODE_NAME"))
  .addOption(new Option("--annotation <key>", 'opt-in pod annotation (value must be "true")').env("TPROXY_ANNOTATION").default(DEFAULT_ANNOTATION))
  .addOption(new Option("--init-container <name>", "init container whose presence in a pod's spec locks the pod, whatever its annotations").env("TPROXY_INIT_CONTAINER").default(DEFAULT_INIT_CONTAINER))
  .addOption(new Option("--allow-dns <ip>", "resolver locked pods may query (udp/tcp 53); repeat for more (env: comma-separated); default: port 53 to any address").env("TPROXY_ALLOW_DNS").argParser(collect))
  .addOption(new Option("--standard-port <port>", "standard-mode proxy port on this node that locked pods may reach; default none").env("TPROXY_STANDARD_PORT"))
  .addOption(new Option("--namespace <ns>", "watch only this namespace; repeat for more (env: comma-separated); default all").env("TPROXY_NAMESPACES").argParser(collect))
  .addOption(new Option("--proxy-port <port>", "transparent proxy port to redirect to").env("TPROXY_PROXY_PORT").default(String(DEFAULT_PROXY_PORT)))
  .addOption(new Option("--redirect-to-address <ip>", "node address to DNAT locked pods' 80/443 to (ip:proxy-port) instead of REDIRECT, for datapaths whose host-side interface has no address (Calico); one per family, repeat for the other (env: comma-separated); a family without one keeps REDIRECT").env("TPROXY_REDIRECT_TO_ADDRESS").argParser(collect))
  .addOption(new Option("--resync <duration>", "period of the full resync that repairs drift").env("TPROXY_RESYNC").default(DEFAULT_RESYNC))
  .addOption(new Option("--metrics-port <port>", "port of /healthz and /metrics").env("TPROXY_METRICS_PORT").default(String(DEFAULT_METRICS_PORT)))
  .addOption(new Option("--daemonset <namespace/name>", "the DaemonSet running this podwatch: on SIGTERM, when it is gone or being deleted (an uninstall), the node's chains are removed, but for locked pods still running; otherwise (a restart, a rolling update) they stay").env("TPROXY_DAEMONSET"))
  .addOption(new Option("--metrics-address <ip>", "address /healthz and /metrics listen on (the node's loopback by default: probes use host 127.0.0.1; 0.0.0.0 for a Prometheus scraping the node)").env("TPROXY_METRICS_ADDRESS").default(DEFAULT_METRICS_ADDRESS))
  .addOption(new Option("--iptables-backend <mode>", "iptables backend of the node's rules: auto (the one kube-proxy uses, detected as its image does), nft or legacy").env("TPROXY_IPTABLES_BACKEND").default(DEFAULT_IPTABLES_BACKEND))
  .addOption(new Option("--pod-identity-file <path>", "write this node's pods by IP (namespace, name, labels, annotations, service account) to this file, for the proxy's flow.client.pod; rewritten on every change and every 5 s, deleted on stop; default: not written").env("TPROXY_POD_IDENTITY_FILE"))
  .addOption(new Option("--cni-socket <path>", "unix socket where the tproxy-cni plugin (lock.mode cni) asks whether a pod is locked (GET /v1/pods/<namespace>/<name>); default: not served").env("TPROXY_CNI_SOCKET"))
  .action(async (raw: RawOptions) => {
    const config = parseConfig(raw);
    const log = pino({ name: "tproxy-podwatch", level: process.env.TPROXY_LOG_LEVEL ?? "info" });
    // The handlers come first: a SIGTERM while podwatch starts (an uninstall right after a restart) must
    // still get its final stop once the start is done, not the default action, which would end the
    // process with neither the uninstall's clean-up nor the CNI uninstall marker.
    let stopping: string | undefined;
    let started: Awaited<ReturnType<typeof startPodwatch>> | undefined;
    const finish = (signal: string, podwatch: NonNullable<typeof started>) => {
      // SIGTERM is the kubelet's: a restart or an uninstall, which shutdown() tells apart. SIGINT (a
      // terminal) just stops; the chains stay as they are.
      (signal === "SIGTERM" ? podwatch.shutdown() : podwatch.stop()).then(
        () => process.exit(0),
        (err: unknown) => {
          log.error({ err }, "stop failed");
          process.exit(1);
        },
      );
    };
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = signal;
      log.info({ signal }, started ? "stopping" : "stopping once started");
      if (started) finish(signal, started);
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
    started = await startPodwatch(config, { log });
    if (stopping) finish(stopping, started);
  });

// The subcommand's flags are its own, even those named as the daemon's (--namespace, --annotation).
program.enablePositionalOptions();
program
  .command("uninstall-check")
  .description(
    "Exits 1, naming them, while locked pods exist (the chart's pre-delete hook runs this, so that an uninstall " +
      "does not leave them either unfiltered or with rules nothing removes any more); exits 0 when there are none.",
  )
  .addOption(new Option("--annotation <key>", 'opt-in pod annotation (value must be "true")').env("TPROXY_ANNOTATION").default(DEFAULT_ANNOTATION))
  .addOption(new Option("--init-container <name>", "init container whose presence in a pod's spec locks the pod").env("TPROXY_INIT_CONTAINER").default(DEFAULT_INIT_CONTAINER))
  .addOption(new Option("--namespace <ns>", "look only in this namespace; repeat for more (env: comma-separated); default all").env("TPROXY_NAMESPACES").argParser(collect))
  .action(async (raw: { annotation: string; initContainer: string; namespace?: string[] | string }) => {
    const namespaces = (typeof raw.namespace === "string" ? [raw.namespace] : (raw.namespace ?? [])).flatMap((n) => n.split(",")).map((n) => n.trim()).filter((n) => n !== "");
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromDefault();
    const locked = await lockedPods(kubeConfig, { annotation: raw.annotation, initContainer: raw.initContainer, namespaces });
    if (locked.length === 0) {
      process.stdout.write("tproxy-podwatch uninstall-check: no locked pods; the uninstall may go on\n");
      return;
    }
    process.stderr.write(
      `tproxy-podwatch uninstall-check: uninstall refused: ${locked.length} locked pod(s) still exist: ${locked.join(", ")}. ` +
        "Their lock lets tcp 80/443 out for the node to redirect to the proxy; once tproxy is gone that traffic would either leave unfiltered " +
        "or keep rules nothing removes any more. Delete these pods (or their Deployments) first and run the uninstall again, " +
        "or run `helm uninstall --no-hooks` to remove tproxy anyway (each node then keeps the rules of the locked pods still on it, fail closed).\n",
    );
    process.exitCode = 1;
  });

program.parseAsync().catch((err: unknown) => {
  const msg = err instanceof PodwatchError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`tproxy-podwatch: ${msg}\n`);
  process.exit(err instanceof PodwatchError && err.code === "ERR_CONFIG" ? 2 : 1);
});
