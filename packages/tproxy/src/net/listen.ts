// Binding a listener, the same way for every port the proxy opens.
import type { AddressInfo, Server } from "node:net";

/**
 * Listens on `host:port` (IPv4 and IPv6 when host is "::") and resolves with the port bound. With
 * `reusePort`, several serving threads bind the same port (SO_REUSEPORT) and the kernel spreads new
 * connections over them; a replacement proxy can also bind while the old one still listens.
 */
export function listen(server: Server, port: number, host: string, options: { reusePort?: boolean } = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port, host, ipv6Only: false, reusePort: options.reusePort ?? false }, () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}
