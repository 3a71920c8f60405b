import { expect } from "chai";
import type { LookupAddress, LookupAllOptions, LookupOptions } from "node:dns";
import net from "node:net";
import { AddressPolicy } from "../src/policy/address-policy.ts";
import { assertAddressAllowed, createGuardedLookup, DestinationDeniedError, type LookupFunction, type Resolver } from "../src/policy/guarded-lookup.ts";

const ZONE: Record<string, LookupAddress[]> = {
  "public.example": [
    { address: "93.184.215.14", family: 4 },
    { address: "2606:2800:21f:cb07:6820:80da:af6b:8b2c", family: 6 },
  ],
  "metadata.example": [{ address: "169.254.169.254", family: 4 }],
  "rebind.example": [
    { address: "127.0.0.1", family: 4 },
    { address: "::ffff:127.0.0.1", family: 6 },
    { address: "::1", family: 6 },
  ],
  "mixed.example": [
    { address: "10.96.0.1", family: 4 },
    { address: "93.184.215.14", family: 4 },
    { address: "fe80::1", family: 6 },
    { address: "2606:2800:21f:cb07:6820:80da:af6b:8b2c", family: 6 },
  ],
  "v6only-denied.example": [{ address: "fd00:ec2::254", family: 6 }],
};

function fakeResolver(calls: { hostname: string; options: LookupAllOptions }[] = []): Resolver {
  return async (hostname, options) => {
    calls.push({ hostname, options });
    const records = ZONE[hostname];
    if (records === undefined) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
    const fam = options.family;
    return records.filter((r) => fam === undefined || fam === 0 || r.family === fam);
  };
}

const policy = new AddressPolicy({ blockedCidrs: ["10.96.0.0/12"], nodeAddresses: () => ["10.0.0.5"], listenerPorts: [8080] });

type Result = { err: NodeJS.ErrnoException | null; address: string | LookupAddress[]; family: number | undefined };
function run(lookup: LookupFunction, hostname: string, options: LookupOptions): Promise<Result> {
  return new Promise((resolve) => lookup(hostname, options, (err, address, family) => resolve({ err, address, family })));
}

describe("policy: guarded lookup", () => {
  const lookup = createGuardedLookup({ policy, port: 443, resolver: fakeResolver() });

  it("returns every allowed address when asked for all", async () => {
    const r = await run(lookup, "public.example", { all: true });
    expect(r.err).to.equal(null);
    expect(r.address).to.deep.equal(ZONE["public.example"]);
  });

  it("returns one address and its family when not asked for all", async () => {
    expect(await run(lookup, "public.example", {})).to.deep.equal({ err: null, address: "93.184.215.14", family: 4 });
    expect(await run(lookup, "public.example", { family: 6 })).to.deep.equal({ err: null, address: "2606:2800:21f:cb07:6820:80da:af6b:8b2c", family: 6 });
    expect(await run(lookup, "public.example", { family: "IPv6" })).to.include({ family: 6 });
  });

  it("drops refused addresses and keeps the allowed ones, in the resolver's order", async () => {
    const r = await run(lookup, "mixed.example", { all: true });
    expect(r.address).to.deep.equal([
      { address: "93.184.215.14", family: 4 },
      { address: "2606:2800:21f:cb07:6820:80da:af6b:8b2c", family: 6 },
    ]);
    expect(await run(lookup, "mixed.example", {})).to.deep.include({ address: "93.184.215.14", family: 4 });
    expect((await run(lookup, "mixed.example", { family: 6, all: true })).address).to.deep.equal([{ address: "2606:2800:21f:cb07:6820:80da:af6b:8b2c", family: 6 }]);
  });

  describe("fails with EDESTINATIONDENIED when nothing is allowed", () => {
    for (const [hostname, options, reason, address, count] of [
      ["metadata.example", { all: true }, "metadata", "169.254.169.254", 1],
      ["metadata.example", {}, "metadata", "169.254.169.254", 1],
      ["rebind.example", { all: true }, "loopback", "127.0.0.1", 3],
      ["rebind.example", { family: 6 }, "loopback", "::ffff:127.0.0.1", 2],
      ["v6only-denied.example", { all: true, family: 0 }, "metadata", "fd00:ec2::254", 1],
    ] as const) {
      it(`${hostname} ${JSON.stringify(options)} → ${reason}`, async () => {
        const r = await run(lookup, hostname, options);
        expect(r.err).to.be.instanceOf(DestinationDeniedError);
        const e = r.err as DestinationDeniedError;
        expect(e).to.include({ code: "EDESTINATIONDENIED", reason, address, hostname, port: 443 });
        expect(e.denied).to.have.length(count);
        expect(e.message).to.match(new RegExp(`^${hostname.replace(/\./g, "\\.")} resolves to a refused address: destination `));
      });
    }
  });

  it("hands the socket only addresses of the family it asked for, even from a resolver that ignores family", async () => {
    const sloppy: Resolver = async () => ZONE["public.example"] ?? [];
    const l = createGuardedLookup({ policy, port: 443, resolver: sloppy });
    expect((await run(l, "public.example", { family: 6, all: true })).address).to.deep.equal([{ address: "2606:2800:21f:cb07:6820:80da:af6b:8b2c", family: 6 }]);
    expect(await run(l, "public.example", { family: 6 })).to.deep.include({ address: "2606:2800:21f:cb07:6820:80da:af6b:8b2c", family: 6 });
  });

  it("judges the port too (a name for the proxy's own listener)", async () => {
    const lo = new AddressPolicy({ allowedCidrs: ["127.0.0.0/8"], nodeAddresses: () => [], listenerPorts: [8080] });
    const r = await run(createGuardedLookup({ policy: lo, port: 8080, resolver: fakeResolver() }), "rebind.example", { all: true });
    expect(r.err).to.include({ code: "EDESTINATIONDENIED", reason: "proxy-listener" });
    expect(await run(createGuardedLookup({ policy: lo, port: 80, resolver: fakeResolver() }), "rebind.example", { family: 4 })).to.deep.include({ address: "127.0.0.1" });
  });

  it("passes resolver errors on unchanged and resolves only once", async () => {
    const calls: { hostname: string; options: LookupAllOptions }[] = [];
    const l = createGuardedLookup({ policy, port: 443, resolver: fakeResolver(calls) });
    const r = await run(l, "nx.example", { all: true });
    expect(r.err).to.include({ code: "ENOTFOUND" });
    await run(l, "public.example", { family: 4, hints: 32 });
    expect(calls).to.have.length(2);
    expect(calls[1]).to.deep.equal({ hostname: "public.example", options: { family: 4, hints: 32, all: true } });
  });

  it("refuses IP literals through assertAddressAllowed (Node skips lookup for them)", () => {
    expect(() => assertAddressAllowed(policy, "169.254.169.254", 80)).to.throw(DestinationDeniedError, "destination 169.254.169.254 is a cloud metadata service").with.property("reason", "metadata");
    expect(() => assertAddressAllowed(policy, "10.96.0.1", 443, "kubernetes.default")).to.throw(DestinationDeniedError, /^kubernetes\.default resolves to a refused address/);
    expect(() => assertAddressAllowed(policy, "93.184.215.14", 443)).not.to.throw();
  });

  describe("with a real socket", () => {
    let server: net.Server;
    let port: number;
    const accepted: net.Socket[] = [];
    before(async () => {
      server = net.createServer((s) => {
        accepted.push(s);
        s.end("hello");
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      port = (server.address() as net.AddressInfo).port;
    });
    after(async () => {
      for (const s of accepted) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    });

    function connect(lookup: LookupFunction, host: string): Promise<{ data: string; err: NodeJS.ErrnoException | undefined }> {
      return new Promise((resolve) => {
        let data = "";
        const socket = net.connect({ host, port, lookup });
        socket.setEncoding("utf8");
        socket.on("data", (d: string) => (data += d));
        socket.on("error", (err: NodeJS.ErrnoException) => {
          socket.destroy();
          resolve({ data, err });
        });
        socket.on("close", () => resolve({ data, err: undefined }));
      });
    }

    it("connects only to the address that passed the policy", async () => {
      // rebind.example: 127.0.0.1 is allowed here (an allowed CIDR), ::1 and the mapped form are not.
      const p = new AddressPolicy({ allowedCidrs: ["127.0.0.1/32"], nodeAddresses: () => [] });
      const before = accepted.length;
      const r = await connect(createGuardedLookup({ policy: p, port, resolver: fakeResolver() }), "rebind.example");
      expect(r).to.deep.equal({ data: "hello", err: undefined });
      expect(accepted.length).to.equal(before + 1);
    });

    it("never opens a connection to a refused address", async () => {
      const p = new AddressPolicy({ nodeAddresses: () => [] });
      const before = accepted.length;
      const r = await connect(createGuardedLookup({ policy: p, port, resolver: fakeResolver() }), "rebind.example");
      expect(r.data).to.equal("");
      expect(r.err).to.be.instanceOf(DestinationDeniedError).and.include({ code: "EDESTINATIONDENIED", reason: "loopback" });
      expect(accepted.length).to.equal(before);
    });
  });
});
