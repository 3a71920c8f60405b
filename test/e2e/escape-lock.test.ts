// Ways around the lock itself, tried from the locked pod of the tutorial world, each next to its control
// (the same attempt from the unlocked pod gets out), so a test cannot pass merely because the target is
// missing:
//   - DNS as a tunnel: port 53 of a host that is not one of the pod's nameservers;
//   - raw sockets (the pod runs as root, so it holds NET_RAW, as an app container does unless the snippet's
//     `drop: [NET_RAW]` is kept): TCP segments with data that conntrack calls INVALID (SYN+FIN) or that
//     start no connection (a stray ACK), which the node neither tracks nor redirects, and segments with a
//     forged source, which the node's `-s <pod IP>` REDIRECT does not match.
// The locked pod is locked as the chart's default values lock it: no ALLOW_DNS, so only the nameserver of
// its own /etc/resolv.conf gets DNS.
import { expect } from "chai";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO, type Proc } from "../support/world.ts";
import { APP_IP, DNS_IP, GOOGLE_IP, INTERNET_IP6, LOCKED_IP, SERVICE_CIDR, TutorialWorld, type PodNs } from "../support/tutorial-world.ts";
import { wiringTitle } from "../support/datapath.ts";

const UDP_ECHO = join(REPO, "test/support/udp-echo.ts");
const DNS_ANSWER = "203.0.113.7";

/**
 * The raw-socket and DNS ends, in Python's standard library (`python3 -c SCRIPT MODE ...`):
 *   dns ADDRESS          a resolver on udp and tcp 53: every A query gets DNS_ANSWER; prints "dns udp|tcp <from>"
 *   stream ADDRESS...    a TCP echo on port 53 of each address; prints "got <from> <data>"
 *   raw                  a raw TCP receiver: prints "raw <src> <dst> <dport> <flags> <payload>" for each
 *                        segment whose payload starts with "tpx3 " (what the kernel delivered, before TCP looks at it)
 *   send SRC DST DPORT FLAGS PAYLOAD   one hand-built IPv4/TCP segment (FLAGS letters of FSRPA) through a raw
 *                        socket; prints {"error": null} or {"error": "EPERM"} (what the sending process sees)
 *   query SERVER PROTO NAME   one A query over udp or tcp; prints the answer's addresses or the error
 */
const PY = String.raw`
import errno, json, socket, struct, sys, threading
mode, args = sys.argv[1], sys.argv[2:]
def out(*words):
    print(*words, flush=True)
def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def answer(q):
    end = q.index(b"\0", 12) + 5
    return q[:2] + b"\x81\x80\0\x01\0\x01\0\0\0\0" + q[12:end] + b"\xc0\x0c\0\x01\0\x01\0\0\0\x3c\0\x04" + socket.inet_aton("${DNS_ANSWER}")
def query(name):
    return b"\x12\x34\x01\0\0\x01\0\0\0\0\0\0" + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0\0\x01\0\x01"
def recv_exact(c, n):
    b = b""
    while len(b) < n:
        chunk = c.recv(n - len(b))
        if not chunk:
            raise ConnectionError("closed")
        b += chunk
    return b
if mode == "dns":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((args[0], 53))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind((args[0], 53)); t.listen(16)
    def serve_udp():
        while True:
            q, peer = u.recvfrom(512); out("dns udp", peer[0]); u.sendto(answer(q), peer)
    def serve_tcp():
        while True:
            c, peer = t.accept()
            with c:
                n = struct.unpack("!H", recv_exact(c, 2))[0]; a = answer(recv_exact(c, n))
                out("dns tcp", peer[0]); c.sendall(struct.pack("!H", len(a)) + a)
    threading.Thread(target=serve_udp, daemon=True).start(); out("listening"); serve_tcp()
elif mode == "stream":
    def serve(s):
        while True:
            c, peer = s.accept()
            with c:
                data = c.recv(1024)
                out("got", peer[0], data.decode().strip()); c.sendall(b"echo: " + data)
    for a in args:
        s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM); s.bind((a, 53)); s.listen(16)
        threading.Thread(target=serve, args=(s,), daemon=True).start()
    out("listening"); threading.Event().wait()
elif mode == "raw":
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP); out("listening")
    while True:
        p = s.recv(65535); ihl = (p[0] & 15) * 4; tcp = p[ihl:]; data = tcp[(tcp[12] >> 4) * 4:]
        if data.startswith(b"tpx3 "):
            flags = "".join(c for i, c in enumerate("FSRPA") if tcp[13] & (1 << i))
            out("raw", socket.inet_ntoa(p[12:16]), socket.inet_ntoa(p[16:20]), struct.unpack("!H", tcp[2:4])[0], flags, data.decode())
elif mode == "send":
    src, dst, dport, flags, payload = args[0], args[1], int(args[2]), args[3], args[4].encode()
    bits = sum(1 << i for i, c in enumerate("FSRPA") if c in flags)
    tcp = struct.pack("!HHIIBBHHH", 40000 + len(payload), dport, 1000, 5000 if "A" in flags else 0, 5 << 4, bits, 65535, 0, 0) + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, socket.IPPROTO_TCP, 0, socket.inet_aton(src), socket.inet_aton(dst))
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        s.sendto(ip + tcp, (dst, 0)); print(json.dumps({"error": None}))
    except OSError as e:
        print(json.dumps({"error": errno.errorcode[e.errno]}))
elif mode == "query":
    server, proto, name = args
    try:
        if proto == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.sendto(query(name), (server, 53)); a = s.recv(512)
        else:
            s = socket.create_connection((server, 53), timeout=2); q = query(name); s.sendall(struct.pack("!H", len(q)) + q)
            a = recv_exact(s, struct.unpack("!H", recv_exact(s, 2))[0])
        print(json.dumps({"addresses": [socket.inet_ntoa(a[-4:])]}))
    except OSError as e:
        print(json.dumps({"error": errno.errorcode.get(e.errno, str(e)) if e.errno else str(e)}))
`;

describe(`escape attempts around the lock itself: DNS to any host, raw sockets (namespaces, ${wiringTitle()}; Kubernetes API stand-in)`, function () {
  this.timeout(60_000);
  let world: TutorialWorld;
  let resolver: Proc;
  let stream: Proc;
  let raw: Proc;
  let udp53: Proc;

  const py = (ns: PodNs["ns"], args: string[]) => ns.run("python3", ["-c", PY, ...args], { timeoutMs: 10_000 });
  const pyJson = async (pod: PodNs, args: string[]): Promise<{ error?: string | null; addresses?: string[] }> => {
    const r = await py(pod.ns, args);
    expect(r.code, r.stderr).to.equal(0);
    return JSON.parse(r.stdout) as { error?: string | null; addresses?: string[] };
  };
  const rawFrom = (src: string) => raw.lines.filter((l) => l.startsWith(`raw ${src} `));

  before(async function () {
    this.timeout(120_000);
    world = await TutorialWorld.installed("tpx3");
    // The pod's resolv.conf as the kubelet writes it, then the lock as the chart's default values run it
    // (no ALLOW_DNS): the nameserver listed there is the only resolver the pod may reach.
    writeFileSync(`/etc/netns/${world.locked.ns.name}/resolv.conf`, `search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver ${DNS_IP}\noptions ndots:5\n`);
    const init = world.sidecarInit(world.locked, ["--block-cidr", SERVICE_CIDR, "--wait-timeout", "30s"]);
    if (init.child.exitCode === null) await new Promise((r) => init.child.once("exit", r));
    expect(init.child.exitCode, init.output).to.equal(0);
    expect(init.output).to.include(`"resolvers":["${DNS_IP}"],"file":"/etc/resolv.conf","msg":"DNS allowed to the pod's own nameservers"`);

    resolver = world.spawn(world.internet, "python3", ["-u", "-c", PY, "dns", DNS_IP]);
    stream = world.spawn(world.internet, "python3", ["-u", "-c", PY, "stream", GOOGLE_IP, INTERNET_IP6]);
    raw = world.spawn(world.internet, "python3", ["-u", "-c", PY, "raw"]);
    udp53 = world.spawn(world.internet, process.execPath, [UDP_ECHO, GOOGLE_IP, "53"]);
    for (const p of [resolver, stream, raw, udp53]) await p.waitForLine(/listening/);
  });
  after(async () => {
    await world?.close();
  });

  describe("DNS is not a tunnel", () => {
    it("a tcp stream to port 53 of a host that is no nameserver of the pod is refused, IPv4 and IPv6; the unlocked pod gets it", async () => {
      for (const host of [GOOGLE_IP, INTERNET_IP6]) {
        const r = await world.locked.ns.run("nc", ["-v", "-w", "3", host, "53"], { input: "tpx3 out through 53\n", timeoutMs: 10_000 });
        expect(r.code, host).to.equal(1);
        expect(r.stdout, host).to.equal("");
        expect(r.stderr, host).to.include("Connection refused");
        // Control: the same stream from the unlocked pod, both ways.
        const c = await world.app.ns.run("nc", ["-w", "3", host, "53"], { input: "tpx3 out through 53\n", timeoutMs: 10_000 });
        expect(c.stdout, host).to.equal("echo: tpx3 out through 53\n");
      }
      expect(stream.lines.filter((l) => l.startsWith("got "))).to.deep.equal([`got ${APP_IP} tpx3 out through 53`, "got fd90:1::2 tpx3 out through 53"]);
    });

    it("udp to port 53 of a host that is no nameserver of the pod fails with EPERM; the unlocked pod's datagram arrives", async () => {
      const send = async (pod: PodNs) => JSON.parse(await pod.ns.must(process.execPath, [UDP_ECHO, "send", GOOGLE_IP, "53", `tpx3 from ${pod.name}`], { timeoutMs: 10_000 })) as { error: string | null; reply?: string | null };
      expect(await send(world.locked)).to.deep.equal({ error: "EPERM" });
      expect(await send(world.app)).to.deep.equal({ error: null, reply: "echo: tpx3 from debian-app" });
      expect(udp53.lines.filter((l) => l.startsWith("got "))).to.deep.equal([`got ${APP_IP} 53 tpx3 from debian-app`]);
    });

    it("the nameserver of the pod's resolv.conf still answers, over udp (the C library's lookup) and tcp", async () => {
      const lookup = await world.locked.ns.run("getent", ["ahostsv4", "name.example.test"], { timeoutMs: 10_000 });
      expect(lookup.code, lookup.stderr).to.equal(0);
      expect(lookup.stdout.split("\n")[0]).to.match(new RegExp(`^${DNS_ANSWER.replace(/\./g, "\\.")}\\s+STREAM `));
      expect(await pyJson(world.locked, ["query", DNS_IP, "tcp", "name.example.test"])).to.deep.equal({ addresses: [DNS_ANSWER] });
      expect(resolver.lines).to.include(`dns udp ${LOCKED_IP}`);
      expect(resolver.lines).to.include(`dns tcp ${LOCKED_IP}`);
    });
  });

  describe("raw sockets do not get around the lock (the pod holds NET_RAW)", () => {
    /**
     * Sends the same hand-built segment from the locked pod, then from the unlocked pod as the control; waits
     * until the control's segment has reached the internet host, so the locked pod's earlier one would have too.
     */
    async function sendBoth(what: string, flags: string, source: (pod: PodNs) => string): Promise<{ locked: string | null | undefined; lockedArrived: string[] }> {
      const payload = (pod: PodNs) => `tpx3 ${what} from ${pod.name}`;
      const locked = await pyJson(world.locked, ["send", source(world.locked), GOOGLE_IP, "443", flags, payload(world.locked)]);
      const control = await pyJson(world.app, ["send", source(world.app), GOOGLE_IP, "443", flags, payload(world.app)]);
      expect(control, `${what} from the unlocked pod`).to.deep.equal({ error: null });
      await raw.waitForLine(new RegExp(`^raw ${source(world.app).replace(/\./g, "\\.")} ${GOOGLE_IP.replace(/\./g, "\\.")} 443 ${flags} ${payload(world.app)}$`));
      return { locked: locked.error, lockedArrived: rawFrom(source(world.locked)).filter((l) => l.endsWith(payload(world.locked))) };
    }

    it("an INVALID segment (SYN+FIN) with data to 443 fails with EPERM and never arrives; the unlocked pod's arrives", async () => {
      const r = await sendBoth("syn-fin", "FS", (pod) => pod.ip);
      expect(r.lockedArrived).to.deep.equal([]);
      expect(r.locked).to.equal("EPERM");
    });

    it("a stray ACK with data to 443 (no connection) fails with EPERM and never arrives, on a node whose conntrack does not pick up mid-stream segments; the unlocked pod's arrives", async () => {
      // Such a node calls the segment INVALID, so neither tracks nor redirects it.
      await world.node.must("sysctl", ["-qw", "net.netfilter.nf_conntrack_tcp_loose=0"]);
      try {
        const r = await sendBoth("stray-ack", "PA", (pod) => pod.ip);
        expect(r.lockedArrived).to.deep.equal([]);
        expect(r.locked).to.equal("EPERM");
      } finally {
        await world.node.must("sysctl", ["-qw", "net.netfilter.nf_conntrack_tcp_loose=1"]);
      }
    });

    it("a SYN with data and a forged source (another address of the pod's subnet) fails with EPERM and never arrives; the unlocked pod's arrives", async () => {
      const forged = (pod: PodNs) => pod.ip.replace(/\.2$/, ".99");
      const r = await sendBoth("forged-source", "S", forged);
      expect(r.lockedArrived).to.deep.equal([]);
      expect(r.locked).to.equal("EPERM");
      // The pod's own address still gets out on 443 (through the node's proxy): the lock refused the source, not the port.
      const ok = await world.curlFrom(world.locked, ["-s", "-o", "/dev/null", "-w", "%{http_code}", "https://storage.googleapis.com/solutions-public-assets/"]);
      expect(ok.stdout).to.equal("200");
    });
  });
});
