// The original destination of a connection redirected by iptables REDIRECT, read with the native
// addon (getsockopt SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST; Node has no getsockopt).
import { createRequire } from "node:module";
import type { Socket } from "node:net";

interface Addon {
  originalDst(fd: number, family: 4 | 6): { address: string; port: number };
}

const require = createRequire(import.meta.url);
let addon: Addon | undefined;
function load(): Addon {
  // Built by `node-gyp rebuild` at install, into the package's build/ folder (one level above src/ and dist/).
  addon ??= require("../../build/Release/original_dst.node") as Addon;
  return addon;
}

export interface Destination {
  address: string;
  port: number;
}

/**
 * Returns where the client meant to connect, or undefined when the connection was not redirected
 * (a direct connection to the proxy's port).
 */
export function originalDestination(socket: Socket): Destination | undefined {
  const handle = (socket as unknown as { _handle?: { fd?: number } })._handle;
  const fd = handle?.fd;
  if (typeof fd !== "number" || fd < 0) return undefined;
  const family = socket.remoteFamily === "IPv6" && !socket.remoteAddress?.startsWith("::ffff:") ? 6 : 4;
  try {
    const dst = load().originalDst(fd, family);
    // A non-redirected socket reports its own local address; treat that as "not redirected".
    if (dst.address === socket.localAddress?.replace(/^::ffff:/, "") && dst.port === socket.localPort) return undefined;
    return dst;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}
