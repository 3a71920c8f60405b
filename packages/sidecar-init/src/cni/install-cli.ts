// tproxy-cni-install: puts tproxy-cni on the node (the DaemonSet's install-cni container in lock.mode cni).
//   install    binaries and conflist entry once
//   uninstall  entry and binaries out
//   run        install, keep the entry there while the cluster's CNI rewrites its config (watch the
//              folder), and on SIGTERM uninstall only if podwatch left its uninstall marker (helm
//              uninstall); a restart or rolling update keeps the plugin in place.
import { existsSync, watch, type FSWatcher } from "node:fs";
import { CNI_UNINSTALL_MARKER_SUFFIX } from "@tproxy/iptables";
import { Command, Option } from "commander";
import { pino } from "pino";
import { DEFAULT_BUNDLE } from "./bundle.ts";
import { install, uninstall, type InstallOptions } from "./install.ts";

const log = pino({ name: "tproxy-cni-install", level: process.env["LOG_LEVEL"] ?? "info" }, pino.destination({ fd: 2, sync: true }));

interface Raw {
  binDir: string;
  confDir: string;
  bundle: string;
  nodeBinary: string;
  settings: string;
  stopWait: string;
}

function options(raw: Raw): InstallOptions {
  let settings: Record<string, unknown>;
  try {
    settings = JSON.parse(raw.settings) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`--settings is not JSON: ${(err as Error).message}`);
  }
  if (typeof settings !== "object" || settings === null || Array.isArray(settings)) throw new Error("--settings must be a JSON object");
  return { binDir: raw.binDir, confDir: raw.confDir, bundle: raw.bundle, nodeBinary: raw.nodeBinary, settings };
}

const common = (c: Command): Command =>
  c
    .addOption(new Option("--bin-dir <dir>", "the host's CNI bin folder, as mounted").env("CNI_BIN_DIR").default("/host/opt/cni/bin"))
    .addOption(new Option("--conf-dir <dir>", "the host's CNI config folder, as mounted").env("CNI_CONF_DIR").default("/host/etc/cni/net.d"))
    .addOption(new Option("--bundle <file>", "the plugin bundled into one CommonJS file").env("CNI_BUNDLE").default(DEFAULT_BUNDLE))
    .addOption(new Option("--node-binary <file>", "the node binary copied beside it").env("CNI_NODE_BINARY").default(process.execPath))
    .addOption(new Option("--settings <json>", "the plugin's keys in its conflist entry (socket, allowDns, blockCidrs, excludeNamespaces, ports, …)").env("CNI_SETTINGS").default("{}"))
    .addOption(new Option("--stop-wait <ms>", "run: how long after SIGTERM to wait for podwatch's uninstall marker").env("CNI_STOP_WAIT_MS").default("20000"));

const program = new Command("tproxy-cni-install").description("Installs the tproxy-cni chained plugin on a node (lock.mode cni)");
common(program.command("install").description("copy the plugin and put its entry last in the node's primary conflist, once")).action((raw: Raw) => {
  const r = install(options(raw));
  log.info({ file: r.file, written: r.written }, "tproxy-cni installed");
});
common(program.command("uninstall").description("take the plugin's entry and files off the node")).action((raw: Raw) => {
  log.info({ files: uninstall(options(raw)) }, "tproxy-cni uninstalled");
});
common(program.command("run").description("install, keep installed while the folder changes; on SIGTERM uninstall only on podwatch's uninstall marker"))
  .addOption(new Option("--socket <path>", "podwatch's --cni-socket (its uninstall marker sits beside it)").env("TPROXY_CNI_SOCKET").default("/var/run/tproxy/cni.sock"))
  .action((raw: Raw & { socket: string }) => {
    const opts = options(raw);
    const ensure = (why: string): void => {
      try {
        const r = install(opts);
        if (r.written) log.info({ file: r.file, why }, "tproxy-cni entry put in place");
      } catch (err) {
        log.warn({ err: (err as Error).message, why }, "cannot put tproxy-cni in place yet; retrying on the next change");
      }
    };
    let timer: NodeJS.Timeout | undefined;
    let watcher: FSWatcher | undefined;
    let resync: NodeJS.Timeout | undefined;
    // The handler first: a SIGTERM that comes right after the entry appeared must still be handled.
    process.once("SIGTERM", () => {
      watcher?.close();
      clearInterval(resync);
      clearTimeout(timer);
      const marker = `${raw.socket}${CNI_UNINSTALL_MARKER_SUFFIX}`;
      const deadline = Date.now() + Number(raw.stopWait);
      const poll = (): void => {
        if (existsSync(marker)) {
          log.info({ files: uninstall(opts), marker }, "podwatch says tproxy is being uninstalled: tproxy-cni taken off the node");
          process.exit(0);
        }
        if (Date.now() >= deadline) {
          log.info("stopping without podwatch's uninstall marker (a restart or rolling update): tproxy-cni stays on the node");
          process.exit(0);
        }
        setTimeout(poll, 200);
      };
      poll();
    });
    ensure("start");
    // The cluster's CNI (re)writes its conflist on its own schedule: after any change of the folder, check again.
    watcher = watch(opts.confDir, () => {
      clearTimeout(timer);
      timer = setTimeout(() => ensure("the CNI config folder changed"), 200);
    });
    resync = setInterval(() => ensure("periodic check"), 30_000);
  });

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`tproxy-cni-install: ${(err as Error).message}\n`);
  process.exit(1);
});
