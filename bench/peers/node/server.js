// Comparison peer: every text message on /ws goes to every client, sender included (Node `ws`).
import { WebSocketServer } from "ws";
const [host, port] = (process.argv[2] || "127.0.0.1:8000").split(":");
const wss = new WebSocketServer({ host, port: Number(port), path: "/ws", perMessageDeflate: false });
wss.on("connection", (socket) => {
  socket.on("message", (data, isBinary) => {
    if (isBinary) return;
    const text = data.toString();
    for (const client of wss.clients) if (client.readyState === 1) client.send(text);
  });
});
