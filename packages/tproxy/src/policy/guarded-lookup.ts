// A `lookup` for net.connect / http.request / https.request / tls.connect (`options.lookup`) that resolves a name
// once, judges every address with an AddressPolicy and hands the socket only addresses that passed. The socket
// connects to exactly what was judged: there is no second resolution a DNS answer could change in between.
//
// Node does not call `lookup` when the host is already an IP address; judge those with assertAddressAllowed()
// before connecting.
import { promises as dnsPromises, type LookupAddress, type LookupAllOptions, type LookupOptions } from "node:dns";
import { TproxyError } from "../errors.ts";
import type { DenyReason, Verdict } from "./address-policy.ts";

/** The part of AddressPolicy this module needs. */
export interface AddressJudge {
  classify(address: string, port: number): Verdict;
}

/** What Node's `options.lookup` must look like (net.LookupFunction, which @types/node does not export). */
export type LookupFunction = (
  hostname: string,
  options: LookupOptions,
  callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
) => void;

/** Resolves every address of a name; dns.promises.lookup by default. */
export type Resolver = (hostname: string, options: LookupAllOptions) => Promise<LookupAddress[]>;

export interface DeniedAddress {
  address: string;
  family: number;
  reason: DenyReason;
  message: string;
}

/** Every address a destination resolved to was refused by the address policy. Expected; answer the client, do not log a fault. */
export class DestinationDeniedError extends TproxyError {
  readonly hostname: string;
  readonly port: number;
  /** Reason and address of the first refused address. */
  readonly reason: DenyReason;
  readonly address: string;
  readonly denied: readonly DeniedAddress[];
  constructor(hostname: string, port: number, denied: readonly [DeniedAddress, ...DeniedAddress[]]) {
    const [first] = denied;
    const more = denied.length > 1 ? ` (and ${denied.length - 1} more address${denied.length > 2 ? "es" : ""} refused)` : "";
    const message = hostname === first.address ? first.message : `${hostname} resolves to a refused address: ${first.message}${more}`;
    super("EDESTINATIONDENIED", message);
    this.hostname = hostname;
    this.port = port;
    this.reason = first.reason;
    this.address = first.address;
    this.denied = denied;
  }
}

function familyNumber(family: LookupOptions["family"]): 0 | 4 | 6 {
  if (family === 4 || family === "IPv4") return 4;
  if (family === 6 || family === "IPv6") return 6;
  return 0;
}

/** Throws DestinationDeniedError if the policy refuses `address`:`port` (for IP-literal destinations, which skip lookup). */
export function assertAddressAllowed(policy: AddressJudge, address: string, port: number, hostname = address): void {
  const v = policy.classify(address, port);
  if (!v.allowed) throw new DestinationDeniedError(hostname, port, [{ address, family: address.includes(":") ? 6 : 4, reason: v.reason, message: v.message }]);
}

/**
 * Returns a lookup for one destination port (the policy judges address and port together, and Node does not pass
 * the port to lookup). Resolver errors (ENOTFOUND, …) are passed on unchanged.
 */
export function createGuardedLookup(opts: { policy: AddressJudge; port: number; resolver?: Resolver }): LookupFunction {
  const resolver = opts.resolver ?? ((hostname, options) => dnsPromises.lookup(hostname, options));
  return (hostname, options, callback) => {
    const family = familyNumber(options.family);
    const query: LookupAllOptions = { ...options, family, all: true };
    // The callback runs outside the promise chain, as dns.lookup's would: what it throws is not swallowed.
    const done = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], fam?: number) => process.nextTick(callback, err, address, fam);
    resolver(hostname, query).then(
      (results) => {
        const allowed: LookupAddress[] = [];
        const denied: DeniedAddress[] = [];
        for (const r of results) {
          if (family !== 0 && r.family !== family) continue;
          const v = opts.policy.classify(r.address, opts.port);
          if (v.allowed) allowed.push({ address: r.address, family: r.family });
          else denied.push({ address: r.address, family: r.family, reason: v.reason, message: v.message });
        }
        const [first] = allowed;
        if (first === undefined) {
          const [d, ...rest] = denied;
          if (d !== undefined) return done(new DestinationDeniedError(hostname, opts.port, [d, ...rest]), options.all ? [] : "");
          const err: NodeJS.ErrnoException = Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND", hostname });
          return done(err, options.all ? [] : "");
        }
        if (options.all) return done(null, allowed);
        return done(null, first.address, first.family);
      },
      (err: unknown) => done(err instanceof Error ? err : new Error(String(err)), options.all ? [] : ""),
    );
  };
}
