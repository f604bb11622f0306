// Signing in on the page: a token in the URL fragment, verified names shown with a mark, a
// token pasted in the field refreshing the connection in place, and expiry signing out.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { SHOTS, mintToken, serverAndBrowser } from "./support.js";

const SECRET = "e2e-secret-0123456789abcdef0123456789";
const env = serverAndBrowser(["--auth-secret", SECRET, "--auth-leeway", "0"]);
const ALL = "lobby=subscribe,publish,history,presence";

async function signedInPage(token) {
  const context = await env.browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  await page.goto(`http://${env.server.http}/#token=${token}`);
  await page.locator("#status", { hasText: /signed in as/ }).waitFor({ timeout: 15_000 });
  return page;
}

test("a token in the fragment signs in; verified names carry a mark; the token leaves the URL", async () => {
  const alice = await signedInPage(mintToken(SECRET, ["--sub", "u-alice", "--name", "alice", "--grant", ALL]));
  const bob = await signedInPage(mintToken(SECRET, ["--sub", "u-bob", "--name", "bob", "--grant", ALL]));
  assert.equal(new URL(alice.url()).hash, "", "the token is not left in the address bar");
  assert.equal(await alice.inputValue("#nick"), "alice");
  assert.ok(await alice.locator("#nick").isDisabled(), "a verified name comes from the token");
  await alice.fill("#messageInput", "signed hello");
  await alice.keyboard.press("Enter");
  const msg = bob.locator(".msg", { hasText: "signed hello" });
  await msg.waitFor({ timeout: 15_000 });
  assert.equal(await msg.locator(".verified").getAttribute("title"), "verified: u-alice");
  await bob.screenshot({ path: path.join(SHOTS, "page-signed-in.png") });
  await alice.context().close();
  await bob.context().close();
});

test("a fresh token pasted before expiry refreshes in place; an unrefreshed one signs out", async () => {
  const page = await signedInPage(mintToken(SECRET, ["--sub", "u-cy", "--name", "cy", "--grant", ALL, "--ttl", "3s"]));
  await page.fill("#token", mintToken(SECRET, ["--sub", "u-cy", "--name", "cy", "--grant", ALL, "--ttl", "1h"]));
  await page.click("#signin");
  await page.waitForTimeout(4_500);
  assert.match(await page.textContent("#status"), /signed in as cy/);
  await page.context().close();

  const short = await signedInPage(mintToken(SECRET, ["--sub", "u-dee", "--name", "dee", "--grant", ALL, "--ttl", "2s"]));
  await short.locator("#status", { hasText: /token expired/ }).waitFor({ timeout: 15_000 });
  await short.context().close();
});

test("a room that needs a token says so, stops retrying, and opens on sign-in with its people shown", async () => {
  const context = await env.browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  await page.goto(`http://${env.server.http}/?nick=eve&room=lobby`);
  await page.locator("#status", { hasText: "sign in to use this room" }).waitFor({ timeout: 15_000 });
  // It stays put rather than cycling through red reconnects or blaming a proxy.
  await page.waitForTimeout(2_500);
  assert.equal(await page.textContent("#status"), "sign in to use this room");
  await page.screenshot({ path: path.join(SHOTS, "page-sign-in-needed.png") });
  await page.fill("#token", mintToken(SECRET, ["--sub", "u-eve", "--name", "eve", "--grant", ALL]));
  await page.click("#signin");
  await page.locator("#status", { hasText: /signed in as eve/ }).waitFor({ timeout: 15_000 });
  await page.locator("#presence li", { hasText: "eve" }).waitFor({ timeout: 10_000 });
  await context.close();
});
