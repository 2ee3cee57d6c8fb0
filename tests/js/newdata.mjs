// A client of the original backend, unchanged: the official socket.io-client 4.x listening to `newData`.
//
// Usage: node newdata.mjs <url> <transport: default|polling|websocket> <count> [timeout ms]
// Prints one JSON line {transport, received: [...]} and exits 0 once <count> events arrived,
// 1 on timeout, 2 when the connection is refused.
import { io } from "socket.io-client";

const [url, transport, count, timeout = "20000"] = process.argv.slice(2);
const options = { reconnection: false };
if (transport !== "default") options.transports = [transport];

const socket = io(url, options);
const received = [];

function finish(code, error) {
  const engine = socket.io.engine;
  console.log(JSON.stringify({ transport: engine && engine.transport ? engine.transport.name : null, received, error }));
  socket.close();
  process.exit(code);
}

socket.on("newData", (data) => {
  received.push(data);
  if (received.length >= Number(count)) finish(0);
});
socket.on("connect_error", (error) => finish(2, String(error.message)));
setTimeout(() => finish(1, "timeout"), Number(timeout));
