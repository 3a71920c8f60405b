// CNI mode's check that the lock is in place, made without any capability: send what the lock must
// refuse and see it refused. A UDP datagram to the probe address on a port no rule allows meets the
// lock's last rule (REJECT with ICMP port unreachable) in this namespace's own OUTPUT chain, which the
// kernel reports to the sender at once as EPERM. Only a local netfilter verdict gives EPERM: an unlocked
// pod's datagram is simply sent (no error), and nothing on the network can answer it with EPERM, so the
// check neither waits for a timeout nor can be fooled by a remote reset, as a TCP connect could.
import { createSocket } from "node:dgram";

/** A port no lock allows (the discard service): UDP is allowed only to resolvers, on 53. */
export const REFUSED_PORT = 9;

export type LockCheck = { readonly locked: true } | { readonly locked: false; readonly seen: string };

/** Sends one datagram to `address`:9 and reports whether this namespace's lock refused it. */
export function lockRefuses(address: string, port = REFUSED_PORT): Promise<LockCheck> {
  return new Promise((resolve) => {
    const socket = createSocket(address.includes(":") ? "udp6" : "udp4");
    const done = (r: LockCheck) => {
      socket.close();
      resolve(r);
    };
    socket.once("error", (err: NodeJS.ErrnoException) => done(err.code === "EPERM" ? { locked: true } : { locked: false, seen: `error ${err.code ?? err.message}` }));
    socket.send(Buffer.from("tproxy lock check"), port, address, (err) => {
      if (err) done((err as NodeJS.ErrnoException).code === "EPERM" ? { locked: true } : { locked: false, seen: `error ${(err as NodeJS.ErrnoException).code ?? err.message}` });
      else done({ locked: false, seen: "the datagram was sent" });
    });
  });
}
