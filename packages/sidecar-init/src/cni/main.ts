// tproxy-cni's entry: the runtime's environment and stdin in, the result or error object on stdout.
// Logs go to stderr (runtimes put a plugin's stderr into their own log). No top-level await: this file is
// bundled into one CommonJS file for the node (install.ts).
import { pino } from "pino";
import { runPlugin } from "./plugin.ts";

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

async function main(): Promise<void> {
  // Runtimes may hand plugins a bare environment: iptables, nsenter and ip live in the usual places.
  const path = process.env["PATH"] || "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  process.env["PATH"] = path;
  const log = pino({ name: "tproxy-cni", level: process.env["TPROXY_CNI_LOG_LEVEL"] ?? "info" }, pino.destination({ fd: 2, sync: true }));
  const stdin = process.env["CNI_COMMAND"] === "VERSION" ? "" : await readStdin();
  const outcome = await runPlugin(process.env, stdin, { log, path });
  if (outcome.stdout !== "") process.stdout.write(outcome.stdout + "\n");
  process.exitCode = outcome.code;
}

main().catch((err: unknown) => {
  process.stdout.write(JSON.stringify({ cniVersion: "1.0.0", code: 5, msg: `tproxy-cni failed: ${(err as Error).message ?? String(err)}` }) + "\n");
  process.exitCode = 1;
});
