// MQTT.js in Chromium over /mqtt (MQTT over WebSocket): a browser dashboard subscribes with a
// wildcard, a TCP terminal and an HTTP backend publish into the same rooms, and what the
// browser publishes reaches the terminal.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { ROOT, SHOTS, serverAndBrowser, tcpClient } from "./support.js";

const env = serverAndBrowser();
const MQTT_JS = path.join(ROOT, "tests", "e2e", "node_modules", "mqtt", "dist", "mqtt.min.js");

test("MQTT.js over /mqtt shares rooms with TCP and HTTP, both ways, in 3.1.1 and 5.0", async () => {
  // The page's CSP allows no inline script; the test injects the library as a browser
  // extension would, which needs the CSP bypassed for this context only.
  const context = await env.browser.newContext({ bypassCSP: true });
  const page = await context.newPage();
  await page.goto(`http://${env.server.http}/`);
  await page.addScriptTag({ path: MQTT_JS });
  const terminal = tcpClient(env.server.tcp);
  terminal.say("/join plant/line1");
  await terminal.waitFor("joined plant/line1");

  for (const protocolVersion of [4, 5]) {
    await page.evaluate(async ({ version }) => {
      window.got = [];
      const client = window.mqtt.connect(`ws://${location.host}/mqtt`, {
        protocolVersion: version, clientId: `dash-v${version}`, reconnectPeriod: 0,
      });
      window.client = client;
      await new Promise((resolve, reject) => {
        client.on("connect", resolve);
        client.on("error", reject);
      });
      client.on("message", (topic, payload, packet) => {
        const id = packet.properties?.userProperties?.id;
        window.got.push({ topic, text: payload.toString(), id });
      });
      await client.subscribeAsync("plant/#", { qos: 1 });
    }, { version: protocolVersion });

    terminal.say(`from the terminal ${protocolVersion}`);
    const res = await fetch(`http://${env.server.http}/rooms/plant%2Fline2/messages`, {
      method: "POST", body: `from a backend ${protocolVersion}`,
    });
    assert.equal(res.status, 201);
    await page.waitForFunction(() => window.got.length >= 2, null, { timeout: 10_000 });
    const got = await page.evaluate(() => window.got);
    assert.deepEqual(got.map((m) => [m.topic, m.text]).sort(), [
      ["plant/line1", `from the terminal ${protocolVersion}`],
      ["plant/line2", `from a backend ${protocolVersion}`],
    ]);
    if (protocolVersion === 5) {
      // 5.0 carries the room's message id as the user property `id`.
      const { id } = await res.json();
      assert.ok(got.some((m) => m.id === id), JSON.stringify(got));
    }
    await page.evaluate(() => window.client.publishAsync("plant/line1", "from the browser", { qos: 1 }));
    await terminal.waitFor(`dash-v${protocolVersion}: from the browser`);
    await page.evaluate(() => window.client.endAsync());
  }
  await page.screenshot({ path: path.join(SHOTS, "mqtt-page.png") });
  terminal.close();
  await context.close();
});
