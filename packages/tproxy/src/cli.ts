#!/usr/bin/env node
// tproxy command line: `tproxy run` (the proxy), `tproxy ca create` (make a CA), `tproxy filter check|init|test` (filter/commands.ts).
import { DEFAULT_TRANSPARENT_PORT, PROBE_ADDRESS } from "@tproxy/iptables";
import { Command, Option } from "commander";
import { parseRunConfig, type RawRunOptions } from "./config.ts";
import { TproxyError } from "./errors.ts";
import { filterCommands } from "./filter/commands.ts";
import { createLogging } from "./observe/log.ts";
import { connectionCapacity, cpuLimit, cpusAvailable, memoryLimit, planWorkers, type WorkerPlan } from "./resources.ts";
import type { Supervisor } from "./supervisor.ts";

function fail(err: unknown): never {
  const message = err instanceof TproxyError ? err.message : err instanceof Error ? err.message : String(err);
  process.stderr.write(`tproxy: ${message}\n`);
  process.exit(err instanceof TproxyError && err.code === "ERR_CONFIG" ? 2 : 1);
}

/** Collects a repeatable flag's values. */
function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

const program = new Command("tproxy")
  .description("Transparent HTTP/HTTPS proxy that runs a TypeScript filter on every request.")
  .showHelpAfterError();

program
  .command("run")
  .description("Run the proxy: transparent listener, optional standard (explicit) listener, metrics and health.")
  .addOption(new Option("--ca-cert <file>", "CA certificate (PEM) that signs the leaf certificates").env("TPROXY_CA_CERT"))
  .addOption(new Option("--ca-key <file>", "CA private key (PEM)").env("TPROXY_CA_KEY"))
  .addOption(new Option("--filter <path>", "filter script (TypeScript); reloaded live when it changes").env("TPROXY_FILTER"))
  .addOption(new Option("--transparent-port <port>", "port that REDIRECTed connections arrive on").env("TPROXY_TRANSPARENT_PORT").default(String(DEFAULT_TRANSPARENT_PORT)))
  .addOption(new Option("--standard-port <port>", "explicit-proxy port (CONNECT and absolute-form); off unless given").env("TPROXY_STANDARD_PORT"))
  .addOption(new Option("--metrics-port <port>", "port of /metrics, /healthz and /readyz").env("TPROXY_METRICS_PORT").default("15171"))
  .addOption(new Option("--listen-address <ip>", "address the proxy's listeners bind to").env("TPROXY_LISTEN_ADDRESS").default("::"))
  .addOption(new Option("--metrics-address <ip>", "address of /metrics, /healthz and /readyz (the node's loopback by default: probes use host 127.0.0.1; 0.0.0.0 for a Prometheus scraping the node)").env("TPROXY_METRICS_ADDRESS").default("127.0.0.1"))
  .addOption(new Option("--upstream-ca <file>", "extra CA bundle (PEM) trusted for upstream servers, besides the system roots").env("TPROXY_UPSTREAM_CA"))
  .addOption(new Option("--insecure-upstream", "do not verify upstream certificates (debugging only)").env("TPROXY_INSECURE_UPSTREAM"))
  .addOption(new Option("--on-filter-error <mode>", "what a hook that throws or times out means for its request").choices(["deny", "allow"]).env("TPROXY_ON_FILTER_ERROR").default("deny"))
  .addOption(new Option("--http2 [on|off]", "offer HTTP/2 (ALPN h2) to clients on TLS, each stream judged as one request and sent upstream over HTTP/2 where the server chooses it (off: HTTP/1.1 only)").env("TPROXY_HTTP2").default("on"))
  .addOption(new Option("--filter-audit", "audit mode: the filter's answers (flow.respond) are logged and counted as would-deny, and the requests go on").env("TPROXY_FILTER_AUDIT"))
  .addOption(new Option("--filter-timeout <ms>", "time budget of one hook call").env("TPROXY_FILTER_TIMEOUT").default("100"))
  .addOption(new Option("--max-body <bytes>", "most bytes of a body a hook may read whole (flow.request.body()); a larger body is refused (413 request, 502 response)").env("TPROXY_MAX_BODY").default("1048576"))
  .addOption(new Option("--handshake-timeout <ms>", "a client connection must show its first bytes and finish any TLS handshake within this (0: off)").env("TPROXY_HANDSHAKE_TIMEOUT").default("10000"))
  .addOption(new Option("--header-timeout <ms>", "a request head must arrive within this of its first byte (0: off)").env("TPROXY_HEADER_TIMEOUT").default("10000"))
  .addOption(new Option("--idle-timeout <ms>", "a client connection may wait this long for its next request (0: off)").env("TPROXY_IDLE_TIMEOUT").default("30000"))
  .addOption(new Option("--request-timeout <ms>", "a whole request, head and body, must arrive within this of its first byte (0: off)").env("TPROXY_REQUEST_TIMEOUT").default("300000"))
  .addOption(new Option("--send-timeout <ms>", "an answer whose client takes none of it for this long is cut off: the connection reset, or the HTTP/2 stream alone (0: off)").env("TPROXY_SEND_TIMEOUT").default("60000"))
  .addOption(new Option("--max-connections <n>", 'connections the proxy holds open at once from all sources; more are reset at once (0: no cap; "auto": what the container\'s memory limit holds at the measured cost per connection, none without a limit)').env("TPROXY_MAX_CONNECTIONS").default("auto"))
  .addOption(new Option("--max-client-connections <n>", "connections one source address may hold open at once; more are reset at once (0: no cap)").env("TPROXY_MAX_CLIENT_CONNECTIONS").default("512"))
  .addOption(new Option("--log-format <format>", "log lines as text (for people) or json").choices(["text", "json"]).env("TPROXY_LOG_FORMAT").default("text"))
  .addOption(new Option("--probe-address <ip>", "plain-HTTP requests redirected from this address:80 are answered by the proxy (sidecar-init's readiness probe)").env("TPROXY_PROBE_ADDRESS").default(PROBE_ADDRESS))
  .addOption(new Option("--drain-timeout <ms>", "longest wait for requests in flight on SIGTERM").env("TPROXY_DRAIN_TIMEOUT").default("25000"))
  .addOption(new Option("--block-cidr <cidr>", "range no upstream connection may reach, e.g. the Service CIDR (repeatable; env: comma-separated)").env("TPROXY_BLOCK_CIDR").argParser(collect))
  .addOption(new Option("--allow-upstream-cidr <cidr>", "range upstream connections may reach even if node-local, link-local or blocked (repeatable; env: comma-separated)").env("TPROXY_ALLOW_UPSTREAM_CIDR").argParser(collect))
  .addOption(new Option("--allow-port <port>", "port a standard-mode request or CONNECT may reach; default 80 and 443 (repeatable; env: comma-separated)").env("TPROXY_ALLOW_PORT").argParser(collect))
  .addOption(new Option("--pod-identity-file <path>", "podwatch's map of this node's pods by IP (its --pod-identity-file, in a volume both share): filters see flow.client.pod; missing or older than 30 s, no pod is named").env("TPROXY_POD_IDENTITY_FILE"))
  .addOption(new Option("--workers <n>", 'serving threads (one process) sharing the ports; "auto": one per CPU the container may use (its CPU limit, else its cores), no more than its memory limit holds').env("TPROXY_WORKERS").default("auto"))
  .addHelpText(
    "after",
    `
The filter is a TypeScript module whose default export has a request(flow) hook, a response(flow) hook,
or both (types: import type { Filter } from "@tproxy/tproxy/filter"). It is reloaded within about a second
when any file of its directory (the ConfigMap volume) changes; a version that does not compile or
type-check against the contract is logged, each error with file:line:col, and the previous one stays in
force (tproxy filter check does the same before you ship one). Without any loaded filter every request is denied.

Example:
  tproxy run --ca-cert ca.pem --ca-key ca.key --filter /etc/tproxy/filter/filter.ts --standard-port 1080`,
  )
  .action(async (raw: RawRunOptions) => {
    let supervisor: Supervisor;
    try {
      // The container's memory limit, read once for both "auto"s below.
      const limit = memoryLimit();
      // "auto": one serving thread per CPU the container may use, no more than its memory limit holds.
      let plan: WorkerPlan | undefined;
      // "auto": no more connections than the memory limit holds once the threads are paid for.
      let capacity: string | undefined;
      const config = parseRunConfig(
        raw,
        () => {
          plan = planWorkers({ cpus: cpusAvailable(), cpuLimit: cpuLimit(), memoryBytes: limit });
          return plan.workers;
        },
        (workers) => {
          const n = connectionCapacity(limit, workers);
          capacity = limit === undefined ? "no memory limit, no cap" : `${n} connections: what the memory limit ${Math.round(limit / 2 ** 20)} MiB holds with ${workers} serving threads`;
          return n;
        },
      );
      const logging = createLogging(config.logFormat);
      if (plan) logging.log[plan.belowMinimum ? "warn" : "info"]({ workers: plan.workers }, `--workers auto: ${plan.reason}`);
      if (capacity) logging.log.info({ maxConnections: config.maxConnections }, `--max-connections auto: ${capacity}`);
      const { Supervisor } = await import("./supervisor.ts");
      supervisor = new Supervisor(config, logging);
      await supervisor.start();
    } catch (err) {
      fail(err);
    }
    process.on("SIGTERM", () => supervisor.stop("SIGTERM"));
    process.on("SIGINT", () => supervisor.stop("SIGINT"));
  });

const ca = program.command("ca").description("Certificate authority tools.");
ca.command("create")
  .description("Write a new CA certificate and key (PEM). Refuses to overwrite existing files without --force.")
  .addOption(new Option("--cert <file>", "where to write the CA certificate").env("TPROXY_CA_CERT").makeOptionMandatory())
  .addOption(new Option("--key <file>", "where to write the CA private key (mode 0600)").env("TPROXY_CA_KEY").makeOptionMandatory())
  .addOption(new Option("--common-name <name>", "subject common name").default("tproxy CA"))
  .addOption(new Option("--days <days>", "validity in days").default("3650"))
  .option("--force", "overwrite existing files")
  .action(async (opts: { cert: string; key: string; commonName: string; days: string; force?: boolean }) => {
    const days = Number(opts.days);
    if (!Number.isInteger(days) || days < 1) fail(new Error(`--days "${opts.days}" must be a positive whole number`));
    try {
      const { writeCa } = await import("./certs/ca.ts");
      await writeCa(opts.cert, opts.key, { commonName: opts.commonName, days, force: opts.force ?? false });
      process.stdout.write(`wrote CA certificate ${opts.cert} and key ${opts.key}\n`);
    } catch (err) {
      fail(err);
    }
  });

filterCommands(program);

await program.parseAsync();
