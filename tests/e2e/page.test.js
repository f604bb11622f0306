// The chat page at / in a real browser: chatting, TCP in the same room, a network cut while
// others publish, a server restart, a proxy that blocks WebSockets, escaping, screenshots.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { SHOTS, startProxy, tcpClient, freePort, serverAndBrowser, startServer } from "./support.js";

const env = serverAndBrowser();

/** A page in its own browser context (its own storage and cookies), as a separate user. */
async function open(addr, query, viewport = { width: 1100, height: 720 }) {
  const context = await env.browser.newContext({ viewport });
  const page = await context.newPage();
  await page.goto(`http://${addr}/${query}`);
  await page.locator("#status", { hasText: /^connected/ }).waitFor({ timeout: 15_000 });
  return page;
}

async function say(page, text) {
  await page.fill("#messageInput", text);
  await page.keyboard.press("Enter");
}

/** Waits until `text` is shown as a message body, and returns how many times it is shown. */
async function shown(page, text, timeout = 20_000) {
  await page.locator(".msg:not(.pending) .body", { hasText: text }).first().waitFor({ timeout });
  return page.locator(".msg:not(.pending) .body").evaluateAll(
    (els, t) => els.filter((e) => e.textContent === t).length, text);
}

test("two pages chat both ways, and a TCP client is in the same room", async () => {
  const alice = await open(env.server.http, "?nick=alice&room=lobby");
  const bob = await open(env.server.http, "?nick=bob&room=lobby");
  const tcp = tcpClient(env.server.tcp);
  await say(alice, "hi bob");
  assert.equal(await shown(bob, "hi bob"), 1);
  assert.equal(await shown(alice, "hi bob"), 1);
  assert.ok(await alice.locator(".msg.own .body", { hasText: "hi bob" }).count() === 1, "own messages are marked");
  await say(bob, "hello alice");
  assert.equal(await shown(alice, "hello alice"), 1);
  await tcp.waitFor("bob: hello alice");
  tcp.say("from a terminal");
  assert.equal(await shown(alice, "from a terminal"), 1);
  await alice.locator("#presence li", { hasText: "bob" }).waitFor();
  await alice.screenshot({ path: path.join(SHOTS, "page-desktop.png") });
  tcp.close();
  await alice.context().close();
  await bob.context().close();
});

test("rooms: create, switch, unread marker; user text is never HTML", async () => {
  const carol = await open(env.server.http, "?nick=carol&room=lobby");
  const dave = await open(env.server.http, "?nick=dave&room=lobby");
  await carol.fill("#newroom", "design");
  await carol.keyboard.press("Enter");
  await carol.locator("#roomtitle", { hasText: "# design" }).waitFor();
  await dave.fill("#newroom", "design");
  await dave.keyboard.press("Enter");
  await say(dave, "<img src=x onerror=\"document.title='pwned'\">");
  assert.equal(await shown(carol, "<img src=x onerror=\"document.title='pwned'\">"), 1);
  assert.equal(await carol.locator("#messages img").count(), 0);
  assert.notEqual(await carol.title(), "pwned");
  // A message in a room carol is not looking at marks that room unread.
  await carol.locator("#rooms button", { hasText: "lobby" }).click();
  await say(dave, "news in design");
  await carol.locator("#rooms button", { hasText: "design" }).locator(".badge", { hasText: "1" }).waitFor();
  await carol.screenshot({ path: path.join(SHOTS, "page-unread.png") });
  await carol.locator("#rooms button", { hasText: "design" }).click();
  assert.equal(await shown(carol, "news in design"), 1);
  assert.equal(await carol.locator("#rooms .badge").count(), 0);
  await carol.context().close();
  await dave.context().close();
});

test("a cut connection comes back by itself and shows what it missed exactly once", async () => {
  const proxy = await startProxy(env.server.http);
  const erin = await open(proxy.addr, "?nick=erin&room=cut");
  const tcp = tcpClient(env.server.tcp);
  tcp.say("/join cut");
  await tcp.waitFor("you joined cut");
  const cut = proxy.cut(4000);
  await erin.locator("#status", { hasText: /reconnect|cannot connect|offline/ }).waitFor({ timeout: 10_000 });
  for (let i = 0; i < 5; i++) tcp.say(`while away ${i}`);
  await say(erin, "typed while offline");
  await cut;
  for (let i = 0; i < 5; i++) assert.equal(await shown(erin, `while away ${i}`, 30_000), 1);
  await tcp.waitFor("erin: typed while offline");
  await erin.locator(".pending").waitFor({ state: "detached", timeout: 30_000 });
  assert.equal(await shown(erin, "typed while offline"), 1, "the queued message was sent once");
  await new Promise((r) => setTimeout(r, 500));
  for (let i = 0; i < 5; i++) assert.equal(await shown(erin, `while away ${i}`), 1);
  tcp.close();
  proxy.close();
  await erin.context().close();
});

test("the page reconnects by itself when the server is stopped and started again", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "sb-restart-"));
  const port = await freePort();
  const args = ["--http", `127.0.0.1:${port}`, "--data-dir", dir];
  let own = await startServer(args);
  const frank = await open(own.http, "?nick=frank&room=restart");
  await say(frank, "before the restart");
  assert.equal(await shown(frank, "before the restart"), 1);
  await own.stop();
  await frank.locator("#status", { hasText: /reconnect|cannot connect/ }).waitFor({ timeout: 10_000 });
  own = await startServer(args);
  await frank.locator("#status", { hasText: /^connected/ }).waitFor({ timeout: 30_000 });
  const tcp = tcpClient(own.tcp);
  tcp.say("/join restart");
  await tcp.waitFor("you joined restart");
  tcp.say("after the restart");
  assert.equal(await shown(frank, "after the restart"), 1);
  assert.equal(await shown(frank, "before the restart"), 1, "nothing shown twice");
  tcp.close();
  await frank.context().close();
  await own.stop();
});

test("with WebSockets blocked the page falls back to SSE + POST and still chats", async () => {
  const proxy = await startProxy(env.server.http, { blockWebSocket: true });
  const context = await env.browser.newContext();
  const gina = await context.newPage();
  await gina.goto(`http://${proxy.addr}/?nick=gina&room=fallback`);
  await gina.locator("#status", { hasText: "fallback" }).waitFor({ timeout: 20_000 });
  const hank = await open(env.server.http, "?nick=hank&room=fallback");
  await say(hank, "can you hear me");
  assert.equal(await shown(gina, "can you hear me"), 1);
  await say(gina, "yes, over SSE");
  assert.equal(await shown(hank, "yes, over SSE"), 1);
  assert.equal(await shown(gina, "yes, over SSE"), 1);
  await gina.screenshot({ path: path.join(SHOTS, "page-fallback.png") });
  proxy.close();
  await context.close();
  await hank.context().close();
});

test("phone width", async () => {
  const page = await open(env.server.http, "?nick=ivy&room=lobby", { width: 390, height: 780 });
  await say(page, "hello from a phone");
  await shown(page, "hello from a phone");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  assert.equal(overflow, false, "no horizontal scrolling at phone width");
  // The message list is most of the screen; nick and sign-in fold behind Account.
  const share = await page.evaluate(() => document.getElementById("messages").clientHeight / window.innerHeight);
  assert.ok(share >= 0.7, `the messages get ${Math.round(share * 100)} % of the height`);
  await page.screenshot({ path: path.join(SHOTS, "page-phone.png") });
  await page.click("#account");
  await page.locator("#token").waitFor({ state: "visible" });
  await page.screenshot({ path: path.join(SHOTS, "page-phone-account.png") });
  await page.context().close();
});

test("two windows of one browser are two users; a reload keeps the nick and resumes", async () => {
  const context = await env.browser.newContext();
  const one = await context.newPage();
  await one.goto(`http://${env.server.http}/?room=windows`);
  await one.locator("#status", { hasText: /^connected/ }).waitFor();
  const two = await context.newPage();
  await two.goto(`http://${env.server.http}/?room=windows`);
  await two.locator("#status", { hasText: /^connected/ }).waitFor();
  const nickOne = await one.inputValue("#nick");
  const nickTwo = await two.inputValue("#nick");
  assert.notEqual(nickOne, nickTwo);
  await say(one, "from window one");
  assert.equal(await shown(two, "from window one"), 1);
  assert.equal(await two.locator(".msg.own").count(), 0, "not shown as two's own message");
  await one.reload();
  await one.locator("#status", { hasText: /^connected/ }).waitFor();
  assert.equal(await one.inputValue("#nick"), nickOne);
  assert.equal(await shown(one, "from window one"), 1, "history shown once after a reload");
  await context.close();
});

test("commands typed in the page are commands: /msg is private, // is text, direct messages are shown", async () => {
  const frank = await open(env.server.http, "?nick=frank&room=cmds");
  const gina = await open(env.server.http, "?nick=gina&room=cmds");
  const tcp = tcpClient(env.server.tcp);
  tcp.say("/nick udpguy");
  await tcp.waitFor("* you are now udpguy");
  await say(frank, "/msg udpguy psst");
  await tcp.waitFor("frank -> you: psst");
  await frank.locator(".notice.direct", { hasText: "you → udpguy (private): psst" }).waitFor();
  await say(frank, "/msg gina for you only");
  await gina.locator(".notice.direct", { hasText: "frank → you (private): for you only" }).waitFor();
  await say(frank, "/frob");
  await frank.locator(".notice", { hasText: "unknown command /frob" }).waitFor();
  await say(frank, "//shrug");
  assert.equal(await shown(gina, "/shrug"), 1);
  await say(frank, "/join sensors/kitchen/temp");
  await frank.locator("#roomtitle", { hasText: "# sensors/kitchen/temp" }).waitFor();
  // Nothing private reached the room, its history, or anyone else's screen.
  const res = await fetch(`http://${env.server.http}/rooms/cmds/messages?limit=100`);
  const texts = (await res.json()).messages.map((m) => m.text);
  assert.deepEqual(texts, ["/shrug"]);
  assert.equal(await gina.locator(".msg .body", { hasText: "psst" }).count(), 0);
  await gina.screenshot({ path: path.join(SHOTS, "page-direct.png") });
  tcp.close();
  await frank.context().close();
  await gina.context().close();
});
