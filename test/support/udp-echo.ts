// A UDP echo server for escape tests: answers every datagram with "echo: <datagram>".
//   node test/support/udp-echo.ts ADDRESS PORT [PORT...]
import dgram from "node:dgram";

const [address, ...ports] = process.argv.slice(2);
let ready = 0;
for (const port of ports) {
  const socket = dgram.createSocket(address!.includes(":") ? "udp6" : "udp4");
  socket.on("message", (msg, rinfo) => socket.send(Buffer.concat([Buffer.from("echo: "), msg]), rinfo.port, rinfo.address));
  socket.bind(Number(port), address, () => {
    ready += 1;
    if (ready === ports.length) process.stdout.write("listening\n");
  });
}
