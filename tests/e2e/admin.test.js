// The dashboard at /admin in a real browser: nothing without the key, live figures while
// `switchboard bench` loads the server, the rooms table, kick and close-room, screenshots.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT, SHOTS, serverAndBrowser, tcpClient } from "./support.js";

const KEY = "dashboard-key-0123456789abcdef";
// An API key turns authentication on; this server still lets anyone into every room, as the
// bench's clients and the terminal users here are anonymous.
const config = path.join(mkdtempSync(path.join(tmpdir(), "sb-admin-")), "switchboard.toml");
writeFileSync(config, '[[rooms]]\npattern = "*"\nanonymous = ["subscribe", "publish", "presence", "history"]\n');
const env = serverAndBrowser(["--api-key", KEY, "--connection-rate", "0", "--config", config]);
const BIN = process.env.SWITCHBOARD_BIN || path.join(ROOT, "target", "debug", "switchboard");

async function dashboard(hash = `#key=${KEY}`) {
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 1000 } });
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
  await page.goto(`http://${env.server.http}/admin${hash}`);
  return { page, problems };
}

/** `switchboard bench` against the server for `secs`, as a user would run it. */
function bench(secs) {
  const child = spawn(BIN, ["bench", `ws://${env.server.http}/ws?room=bench`, "-c", "60", "-p", "6", "--rate", "600",
    "--duration", String(secs), "--warmup", "1"], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => { out += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error("bench did not finish")); }, (secs + 20) * 1000);
    child.on("exit", (code) => { clearTimeout(timer); code === 0 ? resolve(out) : reject(new Error(`bench exited ${code}: ${out}`)); });
  });
}

const number = (text) => Number(text.replace(/[^\d.]/g, "")) * (/ k$/.test(text) ? 1e3 : / M$/.test(text) ? 1e6 : 1);

test("without the key the dashboard shows nothing; a wrong key is refused", async () => {
  const { page } = await dashboard("");
  await page.locator("#status", { hasText: "no API key" }).waitFor();
  assert.equal(await page.locator("#rooms tr").count(), 0);
  await page.fill("#key", "not-the-key");
  await page.click("#keyform button[type=submit]");
  await page.locator("#status", { hasText: /refused/ }).waitFor({ timeout: 10_000 });
  assert.equal(await page.textContent("#c-conn"), "–");
  await page.context().close();
});

test("under a live load from switchboard bench the charts move; kick and close-room work", async () => {
  const { page, problems } = await dashboard();
  await page.locator("#status", { hasText: "live" }).waitFor({ timeout: 10_000 });
  assert.equal(new URL(page.url()).hash, "", "the key leaves the address bar");
  const victim = tcpClient(env.server.tcp);
  victim.say("/nick victim");
  await victim.waitFor("you are now victim");
  victim.say("/join ops");
  await victim.waitFor("you joined ops");

  const load = bench(6);
  // Deliveries per second climb into the thousands while the bench runs.
  await page.waitForFunction(() => {
    const t = document.getElementById("c-out").textContent;
    const n = Number(t.replace(/[^\d.]/g, "")) * (/ k$/.test(t) ? 1e3 : / M$/.test(t) ? 1e6 : 1);
    return n > 1000;
  }, null, { timeout: 20_000 });
  await page.waitForTimeout(2_500);
  const conns = number(await page.textContent("#c-conn"));
  assert.ok(conns >= 60, `connections card shows the bench's 60: ${conns}`);
  assert.match(await page.textContent("#c-conn-sub"), /ws \d+/);
  assert.match(await page.textContent("#c-lat"), /^[\d.]+ \/ [\d.]+$/);
  assert.match(await page.textContent("#lg-rate"), /out [\d.]+/);
  // The rooms table lists both rooms (it refreshes every 3 s).
  await page.locator("#rooms td", { hasText: /^ops$/ }).waitFor({ timeout: 10_000 });
  await page.locator("#rooms td", { hasText: /^bench$/ }).waitFor({ timeout: 10_000 });
  await page.screenshot({ path: path.join(SHOTS, "admin-live.png"), fullPage: true });
  const report = await load;
  assert.match(report, /deliveries\/s/);

  // ops's members can be kicked.
  const opsRow = page.locator("#rooms tr", { has: page.locator("td", { hasText: /^ops$/ }) });
  await opsRow.locator("button", { hasText: "Members" }).click();
  await page.locator(".member b", { hasText: "victim" }).waitFor({ timeout: 10_000 });
  await page.screenshot({ path: path.join(SHOTS, "admin-members.png"), fullPage: true });
  // Kick asks first: answered no, nothing happens; answered yes, the user is removed.
  const asked = [];
  page.once("dialog", (d) => { asked.push(d.message()); d.dismiss(); });
  await page.click("button[aria-label='Kick victim']");
  assert.match(asked[0] ?? "", /^Kick victim\?/);
  await page.locator(".member b", { hasText: "victim" }).waitFor();
  page.once("dialog", (d) => { asked.push(d.message()); d.accept(); });
  await page.click("button[aria-label='Kick victim']");
  await page.locator("#notice", { hasText: "kicked victim: 1 connection(s)" }).waitFor({ timeout: 10_000 });
  await victim.waitFor("removed by an operator");

  // Closing a room disconnects its members.
  const second = tcpClient(env.server.tcp);
  second.say("/join doomed");
  await second.waitFor("you joined doomed");
  await page.locator("#rooms td", { hasText: /^doomed$/ }).waitFor({ timeout: 10_000 });
  page.once("dialog", (d) => { asked.push(d.message()); d.accept(); });
  await page.click("button[aria-label='Close room doomed']");
  assert.match(asked[2] ?? "", /^Close room doomed\?/);
  await page.locator("#notice", { hasText: "closed doomed: 1 disconnected" }).waitFor({ timeout: 10_000 });
  await second.waitFor("removed by an operator");
  assert.deepEqual(problems, [], "no console errors (a CSP violation would be one)");
  victim.close();
  second.close();
  await page.context().close();
});
