// The seed's own chat page, unchanged but for its port, chats through /ws in a real browser,
// with a TCP client in the same room.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT, SHOTS, tcpClient, serverAndBrowser } from "./support.js";

const env = serverAndBrowser();

async function items(page) {
  return page.locator("#messages li").allTextContents();
}

test("the seed's chat page, opened from disk, chats through /ws", async () => {
  const port = env.server.http.split(":").pop();
  const seed = readFileSync(path.join(ROOT, "tests/seed/chat.html"), "utf8");
  assert.ok(seed.includes("ws://localhost:8000/ws"));
  const dir = mkdtempSync(path.join(tmpdir(), "sb-seed-"));
  const file = path.join(dir, "chat.html");
  writeFileSync(file, seed.replace("ws://localhost:8000/ws", `ws://localhost:${port}/ws`));

  const tcp = tcpClient(env.server.tcp);
  const a = await env.browser.newPage();
  const b = await env.browser.newPage();
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
