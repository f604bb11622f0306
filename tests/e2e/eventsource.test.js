// A browser's EventSource on /events reconnects after the server ends its stream and shows
// every message exactly once, resuming with Last-Event-ID.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { SHOTS, serverAndBrowser } from "./support.js";

// Streams end every second, so the page goes through several reconnects.
const env = serverAndBrowser(["--sse-max-lifetime", "1"]);

test("EventSource resumes across server-side drops with every message exactly once", async () => {
  const page = await env.browser.newPage();
  await page.goto(`http://${env.server.http}/`);
  await page.evaluate(() => {
    window.received = [];
    window.opens = 0;
    const source = new EventSource("/events?room=sse-e2e");
    source.onopen = () => { window.opens += 1; };
    source.onmessage = (e) => window.received.push(JSON.parse(e.data).text);
  });
  await page.waitForFunction(() => window.opens >= 1);
  const total = 40;
  for (let i = 0; i < total; i++) {
    const res = await fetch(`http://${env.server.http}/rooms/sse-e2e/messages`, { method: "POST", body: `m${i}` });
    assert.equal(res.status, 201);
    await new Promise((r) => setTimeout(r, 100)); // ~4 s of publishing, through several drops
  }
  await page.waitForFunction((n) => window.received.length >= n, total, { timeout: 20_000 });
  await new Promise((r) => setTimeout(r, 500));
  const { received, opens } = await page.evaluate(() => ({ received: window.received, opens: window.opens }));
  assert.deepEqual(received, Array.from({ length: total }, (_, i) => `m${i}`));
  assert.ok(opens >= 3, `reconnected several times (opened ${opens} times)`);
  await page.close();
});
