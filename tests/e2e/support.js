// Shared helpers for the browser tests: start the real switchboard binary on free ports and
// launch Debian's Chromium through playwright-core.
import { execFileSync, spawn } from "node:child_process";
import net from "node:net";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { before, after } from "node:test";
import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const SHOTS = path.join(ROOT, "target", "e2e");
mkdirSync(SHOTS, { recursive: true });

const BIN = process.env.SWITCHBOARD_BIN || path.join(ROOT, "target", "debug", "switchboard");

/** A free loopback port (for a server that must come back on the same port). */
export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/**
 * A TCP proxy in front of the server, so tests can cut the network for real: `cut(ms)` drops
 * every connection and refuses new ones for a while; `blockWebSocket` answers WebSocket
 * upgrades with 403, as a restrictive proxy does, while plain HTTP passes.
 */
export function startProxy(target, { blockWebSocket = false } = {}) {
  const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
  const sockets = new Set();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) return client.destroy();
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    client.on("error", () => {});
    client.once("data", (first) => {
      const head = first.toString("latin1");
      if (blockWebSocket && /^GET \/ws[ ?]/.test(head) && /^upgrade:\s*websocket/im.test(head)) {
        client.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
      }
      const upstream = net.connect(port, host);
      sockets.add(upstream);
      upstream.on("close", () => { sockets.delete(upstream); client.destroy(); });
      upstream.on("error", () => client.destroy());
      client.on("close", () => upstream.destroy());
      upstream.write(first);
      client.pipe(upstream).pipe(client);
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({
    addr: `127.0.0.1:${server.address().port}`,
    cut(ms) {
      refusing = true;
      for (const s of sockets) s.destroy();
      return new Promise((r) => setTimeout(() => { refusing = false; r(); }, ms));
    },
    close: () => { for (const s of sockets) s.destroy(); server.close(); },
  })));
}

/** A development token from `switchboard token` (the server's `--auth-secret` must match). */
export function mintToken(secret, args) {
  const out = execFileSync(BIN, ["token", "--auth-secret", secret, ...args]);
  return out.toString().trim();
}

/** Starts `switchboard serve` on port 0 and resolves with its addresses once it listens. */
export function startServer(extraArgs = []) {
  const store = extraArgs.includes("--data-dir") ? [] : ["--store", "memory"];
  const http = extraArgs.includes("--http") ? [] : ["--http", "127.0.0.1:0"];
  const mqtt = extraArgs.includes("--mqtt") ? [] : ["--mqtt", "127.0.0.1:0"];
  const grpc = extraArgs.includes("--grpc") ? [] : ["--grpc", "off"];
  const args = ["serve", "--tcp", "127.0.0.1:0", "--udp", "off", ...http, ...mqtt, ...grpc,
    "--log-format", "json", "--publish-rate", "0", ...store, ...extraArgs];
  const child = spawn(BIN, args, { stdio: ["ignore", "ignore", "pipe"] });
  const addrs = {};
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start in 10 s")), 10_000);
    child.on("exit", (code) => reject(new Error(`server exited early (${code})`)));
    createInterface({ input: child.stderr }).on("line", (line) => {
      let v;
      try { v = JSON.parse(line); } catch { return; }
      const { message, addr } = v.fields || {};
      if (addr && /listening$/.test(message || "")) {
        addrs[message.split(" ")[0]] = addr;
        const http = addrs.http || addrs.https;
        const mqttAddr = addrs.mqtt || addrs.mqtts;
        if (addrs.tcp && http && (mqttAddr || mqtt.length === 0)) {
          clearTimeout(timer);
          resolve({ child, tcp: addrs.tcp, http, mqtt: mqttAddr, stop: () => stop(child) });
        }
      }
    });
  });
}

function stop(child) {
  return new Promise((resolve) => {
    // A child killed by a signal has a null exitCode but a signalCode.
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
    setTimeout(() => child.kill("SIGKILL"), 8_000).unref();
  });
}

/** A line-mode TCP chat client that can wait for text to arrive. */
export function tcpClient(addr) {
  const port = Number(addr.slice(addr.lastIndexOf(":") + 1));
  const socket = net.connect(port, "127.0.0.1");
  let buffer = "";
  const waiters = [];
  socket.setEncoding("utf8");
  socket.on("error", () => {});
  socket.on("data", (chunk) => {
    buffer += chunk;
    for (const w of [...waiters]) if (buffer.includes(w.text)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(); }
  });
  return {
    say: (line) => socket.write(line + "\n"),
    waitFor: (text) => new Promise((resolve, reject) => {
      if (buffer.includes(text)) return resolve();
      const timer = setTimeout(() => reject(new Error(`tcp client never saw ${text}; got ${buffer}`)), 15_000);
      waiters.push({ text, resolve: () => { clearTimeout(timer); resolve(); } });
    }),
    close: () => socket.destroy(),
  };
}

/** Launches headless Chromium with the flags this machine needs. */
export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/**
 * One server and one browser for a test file: started before its tests, stopped after them.
 * The returned object's `server` and `browser` are set once the tests run.
 */
export function serverAndBrowser(extraArgs = []) {
  const env = {};
  before(async () => {
    env.server = await startServer(extraArgs);
    env.browser = await launch();
  });
  after(async () => {
    await env.browser?.close();
    await env.server?.stop();
  });
  return env;
}
