// The client library, /switchboard.js, in Node (npm `ws` as its WebSocket) and in Chromium,
// against real servers: publish and ack, a TCP client in the same room, resume exactly once
// across a cut, the outbox across a cut, direct messages, refusals for good, token refresh
// and sign-out, the types against tsc, and the docs/CLIENT.md example run as written.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { promisify } from "node:util";
import WebSocket from "ws";
import { ROOT, launch, mintToken, startProxy, startServer, tcpClient } from "./support.js";
import { Switchboard, SwitchboardError, memoryStorage } from "../../web/switchboard.js";

const run = promisify(execFile);
const SECRET = "client-secret-0123456789abcdef012345";
const servers = [];
after(async () => { for (const s of servers) await s.stop(); });

async function server(args = []) {
  const s = await startServer(args);
  servers.push(s);
  return s;
}

/** Resolves with the first event of `type` that `pred` accepts, or fails after 15 s. */
function next(sb, type, pred = () => true, ms = 15_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`no ${type} event in ${ms} ms (state ${sb.state})`)); }, ms);
    const off = sb.on(type, (e) => { if (pred(e)) { clearTimeout(timer); off(); resolve(e); } });
  });
}

function client(http, options = {}) {
  return new Switchboard({ url: `http://${http}`, WebSocket, backoff: { initial: 100, max: 1_000 }, ...options });
}

async function live(sb) {
  const up = next(sb, "state", (e) => e.state === "live");
  sb.connect();
  await up;
  return sb;
}

test("publish resolves with the stored id; a TCP client and the client see each other", async () => {
  const s = await server();
  const tcp = tcpClient(s.tcp);
  tcp.say("/nick terminal");
  await tcp.waitFor("you are now terminal");
  const sb = await live(client(s.http, { nick: "nodey" }));
  const echoed = next(sb, "message", (m) => m.text === "from node");
  const ack = await sb.publish("lobby", "from node");
  assert.match(ack.id, /^[0-9a-f]{8}-\d+$/);
  assert.equal(ack.duplicate, false);
  assert.equal((await echoed).id, ack.id);
  await tcp.waitFor("nodey: from node");
  const heard = next(sb, "message", (m) => m.text === "from the terminal");
  tcp.say("from the terminal");
  assert.equal((await heard).nick, "terminal");
  const { members } = await sb.presence("lobby");
  assert.deepEqual(members.map((m) => m.nick).sort(), ["nodey", "terminal"]);
  assert.equal(sb.outbox.length, 0);
  sb.close();
  tcp.close();
});

test("a cut connection resumes each room after its last id: missed messages once, the outbox sent once", async () => {
  const s = await server();
  const proxy = await startProxy(s.http);
  const storage = memoryStorage();
  const sb = await live(client(proxy.addr, { nick: "cutter", rooms: ["lobby", "dev"], storage }));
  await next(sb, "joined", (j) => j.room === "dev").catch(() => {}); // dev's join may already be in
  const seen = [];
  sb.on("message", (m) => seen.push(`${m.room}/${m.text}`));
  await sb.publish("dev", "before");
  const down = next(sb, "state", (e) => e.state === "down");
  const cut = proxy.cut(1_500);
  await down;
  // While it is away: others publish in both rooms, and it publishes itself.
  const post = (room, text) => fetch(`http://${s.http}/rooms/${room}/messages`, { method: "POST", body: text });
  for (const [room, text] of [["lobby", "missed 1"], ["dev", "missed 2"], ["lobby", "missed 3"]]) {
    assert.equal((await post(room, text)).status, 201);
  }
  const queued = sb.publish("lobby", "written offline");
  assert.equal(sb.outbox.length, 1);
  await cut;
  const ack = await queued;
  await next(sb, "message", (m) => m.text === "written offline").catch(() => {});
  await new Promise((r) => setTimeout(r, 300));
  for (const text of ["lobby/missed 1", "dev/missed 2", "lobby/missed 3", "lobby/written offline"]) {
    assert.equal(seen.filter((x) => x === text).length, 1, `${text} once in ${JSON.stringify(seen)}`);
  }
  assert.equal(seen.filter((x) => x === "dev/before").length, 1, "nothing seen before the cut comes again");
  const page = await (await fetch(`http://${s.http}/rooms/lobby/messages`)).json();
  assert.equal(page.messages.filter((m) => m.text === "written offline").length, 1);
  assert.equal(page.messages.find((m) => m.text === "written offline").id, ack.id);
  assert.equal(storage.get("lastId").lobby, ack.id, "the cursor is kept in storage");
  assert.deepEqual(storage.get("outbox"), []);
  sb.close();
  proxy.close();
});

test("direct messages reach another client; a nick nobody holds is refused", async () => {
  const s = await server();
  const a = await live(client(s.http, { nick: "ann" }));
  const b = await live(client(s.http, { nick: "ben" }));
  const got = next(b, "direct");
  assert.deepEqual(await a.direct("ben", "psst"), { to: "ben" });
  const d = await got;
  assert.equal(d.from, "ann");
  assert.equal(d.text, "psst");
  await assert.rejects(a.direct("nobody", "hello?"), (e) => e instanceof SwitchboardError && e.code === "no_such_user");
  a.close();
  b.close();
});

test("with tokens: a publish without the grant is refused for good; refreshToken keeps it signed in; without it, expiry signs out", async () => {
  const s = await server(["--auth-secret", SECRET, "--auth-leeway", "0"]);
  const mint = (ttl) => mintToken(SECRET, ["--sub", "u-nod", "--name", "nod", "--grant", "lobby=subscribe,publish,presence",
    "--grant", "news=subscribe", "--ttl", ttl]);
  let refreshed = 0;
  const sb = client(s.http, { token: mint("3s"), rooms: ["lobby", "news"], refreshToken: () => { refreshed += 1; return mint("1h"); } });
  await live(sb);
  assert.equal(sb.user, "u-nod");
  assert.equal(sb.nick, "nod");
  await assert.rejects(sb.publish("news", "no"), (e) => e instanceof SwitchboardError && e.code === "forbidden" && e.final);
  assert.equal(sb.outbox.length, 0, "a refusal for good leaves the outbox");
  // The 3 s token is refreshed in-band (1 s is the shortest wait), before the server's cut.
  await next(sb, "authenticated", () => true, 10_000);
  assert.equal(refreshed, 1);
  await new Promise((r) => setTimeout(r, 3_000));
  assert.equal(sb.state, "live", "still connected after the first token ran out");
  assert.ok((await sb.publish("lobby", "still here")).id);
  sb.close();

  const short = client(s.http, { token: mint("2s") });
  await live(short);
  const out = await next(short, "signedout", () => true, 10_000);
  assert.equal(out.reason, "token expired");
  assert.equal(short.token, null);
  short.close();
});

test("in Chromium: a page of the server imports /switchboard.js and chats with a Node client", async () => {
  const s = await server();
  const browser = await launch();
  try {
    const page = await browser.newPage();
    await page.goto(`http://${s.http}/`);
    const node = await live(client(s.http, { nick: "node-side" }));
    const heard = next(node, "message", (m) => m.text === "from chromium");
    // The browser publishes, then waits for Node's answer, sent once the browser's arrived.
    const result = page.evaluate(async () => {
      const { Switchboard } = await import("/switchboard.js");
      const sb = new Switchboard({ nick: "in-browser", rooms: ["lobby"] });
      const got = new Promise((resolve) => sb.on("message", (m) => m.text === "from node" && resolve(m.nick)));
      sb.connect();
      const ack = await sb.publish("lobby", "from chromium");
      return { id: ack.id, transport: sb.transport, from: await got };
    });
    assert.equal((await heard).nick, "in-browser");
    await node.publish("lobby", "from node");
    const r = await result;
    assert.equal(r.transport, "ws");
    assert.equal(r.from, "node-side");
    assert.match(r.id, /-\d+$/);
    node.close();
  } finally {
    await browser.close();
  }
});

test("in Chromium: a page of another origin imports the module by URL and uses every call, over WebSocket and over the SSE + POST fallback", async () => {
  const s = await server();
  const blocked = await startProxy(s.http, { blockWebSocket: true });
  // The app's own site: another port is another origin.
  const site = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>app</title><p>an app on its own origin</p>");
  });
  await new Promise((r) => site.listen(0, "127.0.0.1", r));
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    await page.goto(`http://127.0.0.1:${site.address().port}/`);
    const before = await fetch(`http://${s.http}/rooms/team/messages`, { method: "POST", body: "said before the page came" });
    assert.equal(before.status, 201);
    const node = await live(client(s.http, { nick: "backend-bot", rooms: ["team"] }));
    const result = page.evaluate(async ({ direct, viaProxy }) => {
      const { Switchboard } = await import(`http://${direct}/switchboard.js`);
      const state = (sb, want) => new Promise((resolve) => { const off = sb.on("state", (e) => e.state === want && (off(), resolve())); });
      const sb = new Switchboard({ url: `http://${direct}`, nick: "cross", rooms: ["team", "lobby"] });
      const seen = [];
      sb.on("message", (m) => seen.push(m.text));
      const dm = new Promise((resolve) => sb.on("direct", (d) => resolve(d.text)));
      await sb.backfill("team", 5);
      const up = state(sb, "live");
      sb.connect();
      await up;
      const ack = await sb.publish("team", "from the other origin");
      const members = (await sb.presence("team")).members.map((m) => m.nick).sort();
      const rooms = (await sb.listRooms()).rooms.map((r) => r.name);
      const direct_ = await dm;
      // Behind a proxy that refuses upgrades: Server-Sent Events and POST, cross-origin too.
      const fb = new Switchboard({ url: `http://${viaProxy}`, nick: "cross-fb", rooms: ["team"], fallbackAfter: 1, backoff: { initial: 100, max: 500 } });
      const down = state(fb, "fallback");
      fb.connect();
      await down;
      const fbAck = await fb.publish("team", "from the fallback");
      fb.close();
      sb.close();
      return { seen, id: ack.id, members, rooms, direct: direct_, fbId: fbAck.id };
    }, { direct: s.http, viaProxy: blocked.addr });
    // The backend answers the page once it is in the room.
    const heard = await next(node, "message", (m) => m.text === "from the other origin");
    assert.equal(heard.nick, "cross");
    await node.direct("cross", "welcome across origins");
    const r = await result;
    assert.ok(r.seen.includes("said before the page came"), JSON.stringify(r));
    assert.ok(r.seen.includes("from the other origin"), JSON.stringify(r));
    assert.deepEqual(r.members, ["backend-bot", "cross"]);
    assert.ok(r.rooms.includes("team"), JSON.stringify(r.rooms));
    assert.equal(r.direct, "welcome across origins");
    assert.match(r.fbId, /-\d+$/);
    // The one expected: the proxy refusing the fallback client's WebSocket.
    assert.deepEqual(errors.filter((e) => !e.includes(`ws://${blocked.addr}/`)), [], "no CORS or other console errors");
    node.close();
  } finally {
    await browser.close();
    site.close();
    blocked.close();
  }
});

test("a platform without WebSocket gets a clear error, not endless retries", () => {
  const bare = { url: "http://127.0.0.1:1", WebSocket: undefined };
  if (globalThis.WebSocket) {
    assert.ok(new Switchboard(bare), "Node 22+ has its own WebSocket");
  } else {
    assert.throws(() => new Switchboard(bare), /no WebSocket here; pass one as `WebSocket`/);
  }
  assert.throws(() => new Switchboard({ WebSocket }), /`url` is required outside a browser/);
});

test("the served module and its types are the repository's, and the types match the exports", async () => {
  const s = await server();
  const js = await fetch(`http://${s.http}/switchboard.js`);
  assert.equal(js.headers.get("content-type"), "text/javascript; charset=utf-8");
  assert.equal(js.headers.get("access-control-allow-origin"), "*");
  assert.equal(js.headers.get("x-typescript-types"), "/switchboard.d.ts");
  assert.equal(await js.text(), readFileSync(path.join(ROOT, "web/switchboard.js"), "utf8"));
  const dts = await (await fetch(`http://${s.http}/switchboard.d.ts`)).text();
  assert.equal(dts, readFileSync(path.join(ROOT, "web/switchboard.d.ts"), "utf8"));
  const declared = [...dts.matchAll(/^export (?:class|function) (\w+)/gm)].map((m) => m[1]).sort();
  const exported = Object.keys(await import("../../web/switchboard.js")).sort();
  assert.deepEqual(declared, exported);
  // A strict TypeScript program against the declarations compiles.
  const dir = path.join(ROOT, "target", "client-types");
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "switchboard.d.ts"), dts);
  writeFileSync(path.join(dir, "app.ts"), `
import { Switchboard, webStorage, type Message } from "./switchboard.js";
const sb = new Switchboard({ url: "http://127.0.0.1:8000", rooms: ["lobby"], storage: webStorage({ getItem: () => null, setItem: () => {} }) });
const off: () => void = sb.on("message", (m: Message) => console.log(m.room, m.id, m.text.toUpperCase()));
sb.on("state", (e) => { if (e.state === "down") console.log(e.retryIn ?? 0); });
sb.on("error", (e) => console.log(e.code, e.final));
sb.connect();
async function go(): Promise<string> { const ack = await sb.publish("lobby", "hi"); off(); return ack.id; }
void go;
`);
  const tsc = path.join(ROOT, "tests/e2e/node_modules/typescript/bin/tsc");
  await run(process.execPath, [tsc, "--strict", "--noEmit", "--target", "es2022", "--module", "nodenext", "--lib", "es2022,dom",
    path.join(dir, "app.ts")]).catch((e) => assert.fail(`tsc: ${e.stdout}${e.stderr}`));
});

test("the Node example of docs/CLIENT.md runs as written", async () => {
  const s = await server();
  const doc = readFileSync(path.join(ROOT, "docs/CLIENT.md"), "utf8");
  const block = /<!-- client-example[^>]*-->\s*```js\n([\s\S]*?)```/.exec(doc);
  assert.ok(block, "docs/CLIENT.md has the marked example");
  // Beside this file, so that `ws` resolves from tests/e2e/node_modules, as in an npm project.
  const dir = path.join(ROOT, "tests/e2e/.example");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  // As the doc says: the module downloaded from the server.
  writeFileSync(path.join(dir, "switchboard.js"), await (await fetch(`http://${s.http}/switchboard.js`)).text());
  writeFileSync(path.join(dir, "chat.mjs"), block[1].replaceAll("http://127.0.0.1:8000", `http://${s.http}`));
  const { stdout, stderr } = await run(process.execPath, [path.join(dir, "chat.mjs")], { timeout: 20_000 });
  assert.match(stdout, /^bot: hello from node$/m);
  assert.match(stdout, /^stored as [0-9a-f]{8}-1$/m);
  assert.match(stdout, /^here: bot$/m);
  assert.match(stderr, /state: live/);
  rmSync(dir, { recursive: true, force: true });
});
