// The page over HTTPS in Chromium: WSS for the chat, HTTP/2 for its requests, and a TLS TCP
// client in the same room. The certificate is made for the test with openssl.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import tls from "node:tls";
import { readFileSync } from "node:fs";
import { SHOTS, launch, mintToken, startServer } from "./support.js";

const SECRET = "e2e-tls-secret-0123456789abcdef012345";
const dir = mkdtempSync(path.join(tmpdir(), "sb-tls-"));
const cert = path.join(dir, "cert.pem");
const key = path.join(dir, "key.pem");
execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
  "-nodes", "-days", "1", "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
  "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"],
  { stdio: "ignore" });

const env = {};
before(async () => {
  env.server = await startServer(["--tls-cert", cert, "--tls-key", key, "--auth-secret", SECRET]);
  env.browser = await launch();
});
after(async () => { await env.browser?.close(); await env.server?.stop(); });

test("the page chats over WSS, fetches over HTTP/2, and meets a TLS TCP client", async () => {
  const port = env.server.http.split(":").pop();
  const grant = ["--grant", "lobby=subscribe,publish,history,presence"];
  const context = await env.browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on("requestfailed", (r) => console.log("failed:", r.url(), r.failure()?.errorText));
  await page.goto(`https://localhost:${port}/#token=${mintToken(SECRET, ["--sub", "u-tess", "--name", "tess", ...grant])}`);
  await page.locator("#status", { hasText: /signed in as tess/ }).waitFor({ timeout: 15_000 })
    .catch(async (e) => { console.log("status:", await page.textContent("#status")); throw e; });
  const protocols = await page.evaluate(() => performance.getEntriesByType("resource").map((e) => e.nextHopProtocol));
  assert.ok(protocols.includes("h2"), `HTTP/2 used: ${protocols}`);

  const [host, tcpPort] = [env.server.tcp.split(":")[0], Number(env.server.tcp.split(":").pop())];
  const socket = tls.connect({ host, port: tcpPort, servername: "localhost", ca: readFileSync(cert) });
  const lines = [];
  socket.on("data", (d) => lines.push(...d.toString().split("\n")));
  await new Promise((resolve, reject) => { socket.once("secureConnect", resolve); socket.once("error", reject); });
  socket.write(`/auth ${mintToken(SECRET, ["--sub", "u-ty", "--name", "ty", ...grant])}\n`);
  await page.fill("#messageInput", "over wss");
  await page.keyboard.press("Enter");
  const deadline = Date.now() + 15_000;
  while (!lines.some((l) => l === "tess: over wss")) {
    assert.ok(Date.now() < deadline, `TLS TCP client saw: ${lines}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  socket.write("and over tls\n");
  await page.locator(".msg .body", { hasText: "and over tls" }).waitFor({ timeout: 15_000 });
  await page.screenshot({ path: path.join(SHOTS, "page-https.png") });
  socket.end();
  await context.close();
});
