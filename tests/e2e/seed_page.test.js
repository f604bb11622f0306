// The seed's own chat page, unchanged but for its port, chats through /ws in a real browser;
// so does our embedded page at /, with a TCP client in the same room.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import net from "node:net";
import path from "node:path";
import { ROOT, SHOTS, startServer, launch } from "./support.js";

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A line-mode TCP chat client. */
function tcpClient(addr) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];
  const socket = net.connect(port, host);
  let buffer = "";
  const waiters = [];
  socket.setEncoding("utf8");
  socket.on("data", (chunk) => {
    buffer += chunk;
    for (const w of [...waiters]) if (buffer.includes(w.text)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(); }
  });
  return {
    say: (line) => socket.write(line + "\n"),
    waitFor: (text) => new Promise((resolve, reject) => {
      if (buffer.includes(text)) return resolve();
      const timer = setTimeout(() => reject(new Error(`tcp client never saw ${text}; got ${buffer}`)), 10_000);
      waiters.push({ text, resolve: () => { clearTimeout(timer); resolve(); } });
    }),
    close: () => socket.destroy(),
  };
}

async function items(page) {
  return page.locator("#messages li").allTextContents();
}

test("the seed's chat page, opened from disk, chats through /ws", async () => {
  const port = server.http.split(":").pop();
  const seed = readFileSync(path.join(ROOT, "tests/seed/chat.html"), "utf8");
  assert.ok(seed.includes("ws://localhost:8000/ws"));
  const dir = mkdtempSync(path.join(tmpdir(), "sb-seed-"));
  const file = path.join(dir, "chat.html");
  writeFileSync(file, seed.replace("ws://localhost:8000/ws", `ws://localhost:${port}/ws`));

  const tcp = tcpClient(server.tcp);
  const a = await browser.newPage();
  const b = await browser.newPage();
  await a.goto("file://" + file);
  await a.locator("#messages li").first().waitFor(); // its own join notice: the socket is open
  await b.goto("file://" + file);
  await b.locator("#messages li").first().waitFor();

  await a.fill("#messageInput", "hello from the seed page");
  await a.click("button");
  await b.locator("#messages li", { hasText: "hello from the seed page" }).waitFor();
  await a.locator("#messages li", { hasText: "hello from the seed page" }).waitFor();
  await tcp.waitFor("hello from the seed page");

  tcp.say("hello from tcp");
  await a.locator("#messages li", { hasText: "hello from tcp" }).waitFor();
  const seen = await items(b);
  assert.equal(seen.filter((t) => t.endsWith(": hello from the seed page")).length, 1, seen.join("\n"));
  await b.screenshot({ path: path.join(SHOTS, "seed-page.png") });
  tcp.close();
  await a.close();
  await b.close();
});

test("the embedded page at / chats", async () => {
  const page = await browser.newPage();
  await page.goto(`http://${server.http}/?nick=pagetester`);
  await page.locator("#status", { hasText: "connected" }).waitFor();
  await page.fill("#messageInput", "<img src=x onerror=alert(1)>");
  await page.keyboard.press("Enter");
  const li = page.locator("#messages li", { hasText: "pagetester: <img" });
  await li.waitFor();
  assert.equal(await page.locator("#messages img").count(), 0, "user text is shown as text");
  await page.screenshot({ path: path.join(SHOTS, "index-page.png") });
  await page.close();
});
