// UDP for escape tests, both ends.
//   node test/support/udp-echo.ts ADDRESS PORT [PORT...]
//     an echo server: answers every datagram with "echo: <datagram>", and prints
//     "got <from-address> <port> <datagram>" for each one, so a test can tell what arrived.
//   node test/support/udp-echo.ts send HOST PORT [TEXT]
//     sends one datagram and prints one JSON line: {"error":"EPERM"} when the send itself fails (the
//     error the sending process sees), else {"error":null,"reply":"echo: ..."} or, after 3 s without an
//     answer, {"error":null,"reply":null}.
import dgram from "node:dgram";
import { isIPv6 } from "node:net";

const args = process.argv.slice(2);

if (args[0] === "send") {
  const [, host = "", port = "", text = "hello"] = args;
  const socket = dgram.createSocket(isIPv6(host) ? "udp6" : "udp4");
  const result = await new Promise<{ error: string | null; reply?: string | null }>((resolve) => {
    const timer = setTimeout(() => resolve({ error: null, reply: null }), 3_000);
    socket.once("message", (msg) => {
      clearTimeout(timer);
      resolve({ error: null, reply: msg.toString() });
    });
    socket.send(text, Number(port), host, (err) => {
      if (err) {
        clearTimeout(timer);
        resolve({ error: (err as NodeJS.ErrnoException).code ?? err.message });
      }
    });
  });
  socket.close();
  process.stdout.write(JSON.stringify(result) + "\n");
} else {
  const [address, ...ports] = args;
  let ready = 0;
  for (const port of ports) {
    const socket = dgram.createSocket(address!.includes(":") ? "udp6" : "udp4");
    socket.on("message", (msg, rinfo) => {
      process.stdout.write(`got ${rinfo.address} ${port} ${msg.toString()}\n`);
      socket.send(Buffer.concat([Buffer.from("echo: "), msg]), rinfo.port, rinfo.address);
    });
    socket.bind(Number(port), address, () => {
      ready += 1;
      if (ready === ports.length) process.stdout.write("listening\n");
    });
  }
}
