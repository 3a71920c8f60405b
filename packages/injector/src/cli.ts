#!/usr/bin/env node
import { Command, Option } from "commander";
import { KubeConfig } from "@kubernetes/client-node";
import { pino } from "pino";
import { DEFAULT_ADDRESS, DEFAULT_PORT, parseServeConfig, type RawServeOptions } from "./config.ts";
import { InjectorError } from "./errors.ts";
import { ApiNamespaceLabels } from "./namespaces.ts";
import { startInjectorServer } from "./server.ts";

const program = new Command("tproxy-injector").description(
  "The admission webhook that locks pods: pods of namespaces labelled tproxy.io/lock=enabled, and pods labelled so, " +
    "get the lock's init container, the root-certs volume and mounts, the opt-in annotation and NET_RAW dropped; " +
    "pods that would undo the lock are refused.",
);

program
  .command("serve")
  .description(
    "Serves POST /mutate and /validate (AdmissionReview admission.k8s.io/v1) and GET /healthz, /readyz over HTTPS. " +
      "Kubernetes access (namespace labels): KUBECONFIG, ~/.kube/config or the in-cluster service account. " +
      "Log level: env TPROXY_LOG_LEVEL (default info).",
  )
  .addOption(new Option("--port <port>", "HTTPS port").env("TPROXY_INJECTOR_PORT").default(String(DEFAULT_PORT)))
  .addOption(new Option("--address <ip>", "address to listen on").env("TPROXY_INJECTOR_ADDRESS").default(DEFAULT_ADDRESS))
  .addOption(new Option("--tls-cert <file>", "PEM certificate (chain); reloaded when it changes (required)").env("TPROXY_INJECTOR_TLS_CERT"))
  .addOption(new Option("--tls-key <file>", "PEM private key; reloaded when it changes (required)").env("TPROXY_INJECTOR_TLS_KEY"))
  .addOption(new Option("--config <file>", "injection config, JSON { annotation, lockLabel, initContainer, volume, volumeMounts } (required; the chart's ConfigMap <fullname>-injector)").env("TPROXY_INJECTOR_CONFIG"))
  .action(async (raw: RawServeOptions) => {
    const config = parseServeConfig(raw);
    const log = pino({ name: "tproxy-injector", level: process.env.TPROXY_LOG_LEVEL ?? "info" });
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromDefault();
    const server = await startInjectorServer({
      port: config.port,
      address: config.address,
      tlsCert: config.tlsCert,
      tlsKey: config.tlsKey,
      injection: config.injection,
      namespaces: new ApiNamespaceLabels(kubeConfig),
      log,
    });
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, "draining");
      // SIGTERM (the kubelet): readyz fails at once, reviews are still answered while the Service drops
      // this pod, then the ones in flight finish. SIGINT (a terminal): no wait.
      server.drain({ settleMs: signal === "SIGTERM" ? 3000 : 0 }).then(
        () => process.exit(0),
        (err: unknown) => {
          log.error({ err }, "drain failed");
          process.exit(1);
        },
      );
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });

program.parseAsync().catch((err: unknown) => {
  const msg = err instanceof InjectorError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`tproxy-injector: ${msg}\n`);
  process.exit(err instanceof InjectorError && err.code === "ERR_CONFIG" ? 2 : 1);
});
