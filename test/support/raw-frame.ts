// Frames written below the pod's own iptables hooks, for escape tests of the node's enforcement.

/**
 * Writes one hand-built Ethernet + IPv4 + UDP (with payload) or TCP SYN frame on the pod's interface
 * with an AF_PACKET socket: argv ifname, gateway MAC, source IP, destination IP, udp|tcp, port, payload.
 */
export const RAW_FRAME = String.raw`
import socket, struct, sys
ifname, dst_mac, src, dst, proto, dport, payload = sys.argv[1:8]
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
src_mac = s.getsockname()[4]
sip, dip, dport, data = socket.inet_aton(src), socket.inet_aton(dst), int(dport), payload.encode()
sport = 40000 + (sum(data) % 20000)
if proto == "udp":
    l4 = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    number = 17
    c = csum(sip + dip + struct.pack("!BBH", 0, number, len(l4)) + l4) or 0xffff
    l4 = l4[:6] + struct.pack("!H", c) + l4[8:]
else:
    l4 = struct.pack("!HHIIBBHHH", sport, dport, 0x1000 + len(data), 0, 5 << 4, 0x02, 64240, 0, 0)
    number = 6
    l4 = l4[:16] + struct.pack("!H", csum(sip + dip + struct.pack("!BBH", 0, number, len(l4)) + l4)) + l4[18:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0x1234, 0, 64, number, 0, sip, dip)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
frame = bytes.fromhex(dst_mac.replace(":", "")) + src_mac + struct.pack("!H", 0x0800) + ip + l4
print("sent", s.send(frame))
`;
