// Binding a listener, the same way for every port the proxy opens.
import cluster from "node:cluster";
import type { AddressInfo, Server } from "node:net";

/** Listens on `host:port` (IPv4 and IPv6 when host is "::") and resolves with the port bound. */
export function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    // In a cluster worker, bind a socket of its own (SO_REUSEPORT): the kernel spreads connections
    // over the workers, instead of the primary accepting and handing them over.
    const shared = cluster.isWorker ? { reusePort: true, exclusive: true } : {};
    server.listen({ port, host, ipv6Only: false, ...shared }, () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}
