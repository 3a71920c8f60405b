// The pod's own resolvers: the `nameserver` lines of its resolv.conf, which the kubelet writes for every
// container of the pod (kube-dns, NodeLocal DNS, or what dnsConfig names), so the init container sees the
// same file as the app containers and no cluster lookup is needed.
import { readFile } from "node:fs/promises";
import { ConfigError } from "./errors.ts";
import { parseResolver, type Resolver } from "./config.ts";

/**
 * The nameservers of a resolv.conf, in order, without duplicates. Lines are read as the C library reads
 * them: the keyword `nameserver` at the start of a line, then the address (anything after it is ignored);
 * `#` and `;` start comments. An address that is not one fails, naming the file and line, instead of
 * being skipped: the lock must not silently differ from what the pod resolves through.
 */
export function parseResolvConf(text: string, path: string): Resolver[] {
  const out: Resolver[] = [];
  text.split("\n").forEach((line, i) => {
    const [keyword, address] = line.replace(/[#;].*$/, "").trim().split(/\s+/);
    if (keyword !== "nameserver") return;
    const from = `${path} line ${i + 1} (--resolv-conf)`;
    if (address === undefined) throw new ConfigError(`${from}: "nameserver" without an address`);
    const r = parseResolver(address, from);
    if (!out.some((o) => o.ip === r.ip && o.iface === r.iface)) out.push(r);
  });
  return out;
}

export type ReadText = (path: string) => Promise<string>;

const readText: ReadText = (path) => readFile(path, "utf8");

/** Reads the file and returns its nameservers; no file, or no nameserver in it, is a configuration error. */
export async function podResolvers(path: string, read: ReadText = readText): Promise<Resolver[]> {
  let text: string;
  try {
    text = await read(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ConfigError(`cannot read ${path} (--resolv-conf, RESOLV_CONF): ${code}; without --allow-dns the lock allows DNS only to the pod's own nameservers, listed there`, { cause: err });
  }
  const resolvers = parseResolvConf(text, path);
  if (resolvers.length === 0) {
    throw new ConfigError(`${path} (--resolv-conf, RESOLV_CONF) lists no nameserver, so the lock would allow DNS to none; name the resolvers with --allow-dns IP (or ALLOW_DNS), or --allow-dns any to allow every address`);
  }
  return resolvers;
}
