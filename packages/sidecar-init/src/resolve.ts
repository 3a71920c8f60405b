// Turns the node's name into the addresses its standard-mode port is allowed on.
import { lookup } from "node:dns/promises";
import type { NodeTarget } from "./config.ts";
import { NodeResolveError } from "./errors.ts";

export type Lookup = (name: string) => Promise<readonly string[]>;

const systemLookup: Lookup = async (name) => (await lookup(name, { all: true, verbatim: true })).map((a) => a.address);

/** All addresses of the node (hosts file and DNS, as the C library resolves them); an IP is itself. */
export async function resolveNode(node: NodeTarget | undefined, look: Lookup = systemLookup): Promise<string[]> {
  if (node === undefined) return [];
  if (node.kind === "ip") return [node.ip];
  let addresses: readonly string[];
  try {
    addresses = await look(node.name);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new NodeResolveError(`cannot resolve node name "${node.name}" (--node-name / NODE_NAME): ${code}; pass the node's IP with --node-ip, or check the pod's DNS`, { cause: err });
  }
  if (addresses.length === 0) throw new NodeResolveError(`node name "${node.name}" (--node-name / NODE_NAME) resolves to no address`);
  return [...new Set(addresses)];
}
