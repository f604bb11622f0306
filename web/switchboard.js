// switchboard.js: the client for a switchboard server, as one ES module with no dependencies
// and no build step. Served by every server at `/switchboard.js` (types: `/switchboard.d.ts`).
//
//   import { Switchboard } from "/switchboard.js";
//   const sb = new Switchboard({ nick: "alice", rooms: ["lobby"] });
//   sb.on("message", (m) => console.log(m.room, m.nick, m.text));
//   sb.connect();
//   await sb.publish("lobby", "hi");
//
// What it does for you: the structured WebSocket protocol (`switchboard.v1`), a fallback to
// Server-Sent Events + POST when WebSockets do not get through, resume by message id on every
// reconnect (each message reaches you once), an outbox whose idempotency keys make a resend
// harmless, backoff with jitter, and tokens with in-band refresh. docs/CLIENT.md has examples.

/** Close codes the server uses that mean "do not just reconnect". */
const CLOSE_TOKEN_EXPIRED = 4001;
const CLOSE_REMOVED = 4003;
/** Error codes after which a publish is given up (the rest are retried with the same key). */
const FINAL_ERRORS = new Set(["bad_frame", "bad_name", "not_joined", "forbidden", "unauthorized", "limit_reached", "no_such_user"]);
/** How many message ids per room are remembered to drop duplicates. */
const SEEN_PER_ROOM = 2048;
/** Refresh a token this long before it runs out. */
const REFRESH_EARLY_MS = 60_000;

const OPEN = 1;

/** A `storage` that keeps nothing across restarts (the default). */
export function memoryStorage() {
  const map = new Map();
  return { get: (k) => (map.has(k) ? map.get(k) : null), set: (k, v) => void map.set(k, v) };
}

/** A `storage` over a Web Storage object (`sessionStorage`, `localStorage`), JSON per key. */
export function webStorage(area, prefix = "sb.") {
  return {
    get(k) { try { const v = area.getItem(prefix + k); return v === null ? null : JSON.parse(v); } catch { return null; } },
    set(k, v) { try { area.setItem(prefix + k, JSON.stringify(v)); } catch { /* full or disabled: keep going */ } },
  };
}

/** The `exp` claim of a JWT, in seconds since the epoch (0 when it has none). */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part)).exp || 0;
  } catch {
    return 0;
  }
}

/** The pause a refusal asks for ("… retry in 0.4 s", "… retry in 250 ms"): 1 s when it names none. */
function retryAfter(message = "") {
  const m = /retry in ([\d.]+) ?(ms|s)\b/.exec(message);
  const ms = m ? Number(m[1]) * (m[2] === "s" ? 1000 : 1) : 1000;
  return Math.min(Math.max(ms, 50), 30_000);
}

function randomKey() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
}

/** An error the server answered with: `code` is its machine-readable code. */
export class SwitchboardError extends Error {
  constructor(code, message, status, retryAfterMs) {
    super(message);
    this.name = "SwitchboardError";
    this.code = code;
    /** The HTTP status, for errors of HTTP calls. */
    this.status = status;
    /** How long the server asked to wait before trying again (429's `Retry-After`). */
    this.retryAfterMs = retryAfterMs;
  }

  /** True when sending the same thing again cannot succeed (a 4xx other than 408 and 429, a final WebSocket error code). */
  get final() {
    if (this.status) return this.status >= 400 && this.status < 500 && this.status !== 408 && this.status !== 429;
    return FINAL_ERRORS.has(this.code);
  }
}

export class Switchboard {
  #handlers = new Map();
  #ws = null;
  #es = null;
  #timer = null;
  #refreshTimer = null;
  #attempts = 0;
  #wsFailures = 0;
  #seen = new Map();       // room -> Set of message ids, bounded
  #waiting = new Map();    // outbox key or ref -> {resolve, reject}
  #sent = new Set();       // outbox keys sent on the current connection
  #retryTimer = null;
  #refs = 0;
  #stopped = true;

  constructor(options = {}) {
    const g = globalThis;
    const base = options.url ?? g.location?.href;
    if (!base) throw new TypeError("Switchboard: `url` is required outside a browser (e.g. http://127.0.0.1:8000)");
    this.url = new URL(base);
    this.options = {
      fallback: options.fallback ?? true,
      fallbackAfter: options.fallbackAfter ?? 2,
      backoff: { initial: 500, max: 15_000, ...options.backoff },
    };
    this.WebSocket = options.WebSocket ?? g.WebSocket;
    this.EventSource = options.EventSource ?? g.EventSource;
    this.fetchImpl = options.fetch ?? g.fetch?.bind(g);
    if (!this.WebSocket && !(this.options.fallback && this.EventSource)) {
      throw new TypeError("Switchboard: no WebSocket here; pass one as `WebSocket` (in Node before 22: `import WebSocket from \"ws\"`)");
    }
    if (!this.fetchImpl) throw new TypeError("Switchboard: no fetch here; pass one as `fetch`");
    this.storage = options.storage ?? memoryStorage();
    this.refreshToken = options.refreshToken ?? null;
    /** The nick the server gave this client (it may add `-2` when the asked one is taken). */
    this.nick = options.nick ?? this.storage.get("nick") ?? `guest-${1000 + Math.floor(Math.random() * 9000)}`;
    this.token = options.token ?? this.storage.get("token") ?? null;
    this.rooms = [...new Set(options.rooms ?? ["lobby"])];
    this.focused = this.rooms[0];
    this.lastId = { ...(this.storage.get("lastId") ?? {}), ...(options.since ?? {}) };
    this.outbox = (this.storage.get("outbox") ?? []).map(({ room, text, key }) => ({ room, text, key }));
    /** "idle" | "connecting" | "live" | "fallback" | "down" | "closed" */
    this.state = "idle";
    /** "ws" | "sse" | null: what the live connection is. */
    this.transport = null;
    this.user = null;
    this.expires = 0;
    this.nickKey = null;
  }

  // ---- events ------------------------------------------------------------------------

  /** Calls `fn(event)` for each event of `type`; returns a function that stops it. */
  on(type, fn) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this.#handlers.get(type)?.delete(fn);
  }

  #emit(type, event) {
    for (const fn of [...(this.#handlers.get(type) ?? [])]) {
      try { fn(event); } catch (e) { queueMicrotask(() => { throw e; }); }
    }
  }

  #setState(state, detail = {}) {
    this.state = state;
    this.#emit("state", { state, ...detail });
  }

  #save() {
    this.storage.set("lastId", this.lastId);
    this.storage.set("outbox", this.outbox);
    this.storage.set("nick", this.nick);
    this.storage.set("token", this.token);
  }

  // ---- connection --------------------------------------------------------------------

  /** Opens the connection (WebSocket first) and keeps it open until `close()`. */
  connect() {
    this.#stopped = false;
    this.#attempts = 0;
    this.#open();
    return this;
  }

  /** Closes the connection and stops reconnecting. The outbox is kept. */
  close() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#refreshTimer);
    clearTimeout(this.#retryTimer);
    this.#dropWs();
    this.#dropEs();
    this.transport = null;
    this.#setState("closed");
  }

  #dropWs() {
    const ws = this.#ws;
    this.#ws = null;
    if (ws) { ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null; try { ws.close(); } catch { /* already closed */ } }
  }

  #dropEs() {
    if (this.#es) { this.#es.close(); this.#es = null; }
  }

  #endpoint(path, query) {
    const u = new URL(path, this.url);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== null) u.searchParams.set(k, v);
    return u;
  }

  #backoff() {
    const { initial, max } = this.options.backoff;
    const base = Math.min(max, initial * 2 ** Math.min(this.#attempts, 16));
    this.#attempts += 1;
    return base * (0.5 + Math.random());
  }

  #tokenUsable() {
    const exp = this.token && tokenExpiry(this.token);
    return !exp || exp * 1000 > Date.now();
  }

  async #open() {
    clearTimeout(this.#timer);
    if (this.#stopped) return;
    if (this.token && !this.#tokenUsable() && !(await this.#refresh())) {
      // A token that ran out while nothing was connected (a page reopened the next day):
      // carry on anonymously and say so, rather than be refused at the handshake.
      this.token = null;
      this.#save();
      this.#emit("signedout", { reason: "token expired" });
    }
    if (!this.WebSocket) return this.#wsFailed();
    const first = this.rooms[0] ?? "lobby";
    const u = this.#endpoint("/ws", { nick: this.nick, room: first, since: this.lastId[first], token: this.token });
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try { ws = new this.WebSocket(u.href, "switchboard.v1"); } catch { return this.#wsFailed(); }
    this.#dropWs();
    this.#ws = ws;
    let opened = false;
    if (this.state !== "fallback") this.#setState("connecting", { attempt: this.#attempts });
    ws.onopen = () => {
      opened = true;
      this.#wsFailures = 0;
      this.#sent.clear();
      for (const room of this.rooms.slice(1)) this.#send({ type: "join", room, since: this.lastId[room] });
    };
    ws.onmessage = (e) => {
      let m;
      try { m = JSON.parse(typeof e.data === "string" ? e.data : String(e.data)); } catch { return; }
      this.#frame(m);
    };
    ws.onclose = (e) => {
      if (this.#ws !== ws) return;
      this.#ws = null;
      this.transport = this.#es ? "sse" : null;
      if (this.#stopped) return;
      if (e.code === CLOSE_TOKEN_EXPIRED) {
        return void this.#refresh().then((ok) => (ok ? this.#open() : this.#signedOut("token expired")));
      }
      if (e.code === CLOSE_REMOVED) {
        this.#stopped = true;
        return this.#setState("closed", { reason: e.reason || "removed by an operator" });
      }
      if (!opened) return this.#wsFailed();
      const wait = this.#backoff();
      this.#setState("down", { reason: e.reason || `closed (${e.code})`, retryIn: wait });
      this.#timer = setTimeout(() => this.#open(), wait);
    };
    ws.onerror = () => {};
  }

  // A WebSocket that never opens (a proxy that blocks upgrades, say): after `fallbackAfter`
  // tries, receive over SSE and send with POST while WebSocket is retried in the background.
  // A browser is told nothing of why a handshake was refused, so the same admission is asked
  // over plain HTTP (the room's event stream): 401/403 means signing in is needed, and
  // retrying would only repeat the refusal; an answer means only the WebSocket is blocked.
  async #wsFailed() {
    if (this.#stopped) return;
    this.#wsFailures += 1;
    const room = this.rooms[0] ?? "lobby";
    const probe = await this.#probe(room);
    if (this.#stopped) return;
    if (probe.status === 401 || probe.status === 403) {
      // Until signIn() (or connect()) tries again with a token.
      this.#stopped = true;
      return this.#setState("down", { reason: "sign in to use this room", needsSignIn: true, room, code: probe.code, message: probe.message });
    }
    if (this.options.fallback && this.EventSource && this.state !== "fallback" && this.#wsFailures >= this.options.fallbackAfter) {
      // Only when plain HTTP works: if it does not, the server is simply down.
      if (probe.ok && !this.#stopped) this.#openEventSource();
    }
    const wait = this.state === "fallback" ? this.options.backoff.max : this.#backoff();
    if (this.state !== "fallback") this.#setState("down", { reason: "cannot connect", retryIn: wait });
    this.#timer = setTimeout(() => this.#open(), wait);
  }

  /** Asks for `room`'s event stream as this client would be admitted: its status and error. */
  async #probe(room) {
    const abort = new AbortController();
    try {
      const res = await this.fetchImpl(this.#endpoint("/events", { room, token: this.token }), { cache: "no-store", signal: abort.signal });
      let body = {};
      if (!res.ok) { try { body = await res.json(); } catch { /* not JSON */ } }
      return { ok: res.ok, status: res.status, code: body.code, message: body.error };
    } catch {
      return { ok: false, status: 0 };
    } finally {
      abort.abort();
    }
  }

  #openEventSource() {
    this.#dropEs();
    const room = this.focused ?? this.rooms[0] ?? "lobby";
    const es = new this.EventSource(this.#endpoint("/events", { room, nick: this.nick, since: this.lastId[room], token: this.token }).href);
    this.#es = es;
    this.state = "fallback";
    // A new stream holds the nick under a new key, which its `joined` event brings: the
    // outbox waits for it (a POST without it would be refused as nick_taken).
    this.nickKey = null;
    es.onopen = () => {
      this.transport = "sse";
      this.#sent.clear();
      this.#setState("fallback", { room });
    };
    es.onerror = () => {
      if (this.#es === es && this.state === "fallback") this.#emit("state", { state: "fallback", reconnecting: true });
    };
    const on = (e) => { try { this.#frame(JSON.parse(e.data)); } catch { /* not JSON: ignore */ } };
    for (const kind of ["message", "join", "leave", "nick", "crowd", "direct", "gap", "joined"]) es.addEventListener(kind, on);
    es.addEventListener("close", (e) => {
      let reason = "closed";
      try { reason = JSON.parse(e.data).reason; } catch { /* keep the default */ }
      es.close();
      if (this.#es !== es) return;
      this.#es = null;
      if (reason === "token expired") {
        return void this.#refresh().then((ok) => (ok ? this.#openEventSource() : this.#signedOut(reason)));
      }
      this.#setState("down", { reason });
      this.#timer = setTimeout(() => this.#open(), this.#backoff());
    });
  }

  // ---- what the server sends -----------------------------------------------------------

  #frame(m) {
    switch (m.type) {
      case "welcome":
        this.transport = "ws";
        this.#dropEs();
        this.#attempts = 0;
        this.#adopt(m.nick);
        this.#signedIn(m.user, m.expires);
        this.#setState("live", { transport: "ws" });
        this.#emit("welcome", m);
        this.#flush();
        return;
      case "authenticated":
        this.#adopt(m.nick);
        this.#signedIn(m.user, m.expires);
        this.#settle(m.ref, null, m);
        this.#emit("authenticated", m);
        return;
      case "joined":
        if (m.nick) this.#adopt(m.nick);
        if (m.nick_key) this.nickKey = m.nick_key;
        if (m.cursor && !this.lastId[m.room]) { this.lastId[m.room] = m.cursor; this.#save(); }
        this.#settle(m.ref, null, m);
        this.#emit("joined", m);
        if (this.transport === "sse") this.#flush();
        return;
      case "left":
        this.#settle(m.ref, null, m);
        this.#emit("left", m);
        return;
      case "message":
        if (!this.#accept(m)) return;
        this.#emit("message", m);
        return;
      case "ack":
        this.#acknowledged(m.ref, { id: m.id, room: m.room, duplicate: !!m.duplicate });
        return;
      case "sent":
        this.#settle(m.ref, null, { to: m.to });
        return;
      case "error":
        this.#refused(m);
        return;
      default:
        // join, leave, nick, crowd, gap, direct: as the server sent them.
        this.#emit(m.type, m);
    }
  }

  /** True the first time a message id is seen in its room; it becomes the room's cursor. */
  #accept(m) {
    if (!m.id || !m.room) return true;
    let seen = this.#seen.get(m.room);
    if (!seen) this.#seen.set(m.room, (seen = new Set()));
    if (seen.has(m.id)) return false;
    seen.add(m.id);
    if (seen.size > SEEN_PER_ROOM) seen.delete(seen.values().next().value);
    this.lastId[m.room] = m.id;
    this.#save();
    return true;
  }

  #adopt(nick) {
    if (!nick || nick === this.nick) return;
    const old = this.nick;
    this.nick = nick;
    this.#save();
    this.#emit("nick-assigned", { nick, asked: old });
  }

  #signedIn(user, expires) {
    this.user = user ?? null;
    this.expires = expires || (this.token ? tokenExpiry(this.token) : 0);
    clearTimeout(this.#refreshTimer);
    if (this.user && this.expires && this.refreshToken) {
      const wait = Math.max(1_000, this.expires * 1000 - Date.now() - REFRESH_EARLY_MS);
      this.#refreshTimer = setTimeout(() => this.#refresh().then((ok) => ok && this.signIn(this.token)).catch(() => {}), wait);
    }
  }

  async #refresh() {
    if (!this.refreshToken) return false;
    try {
      const token = await this.refreshToken();
      if (!token) return false;
      this.token = token;
      this.#save();
      return true;
    } catch {
      return false;
    }
  }

  #signedOut(reason) {
    this.token = null;
    this.user = null;
    this.#save();
    this.#stopped = true;
    this.#dropWs();
    this.#dropEs();
    this.transport = null;
    this.#emit("signedout", { reason });
    this.#setState("down", { reason: `signed out: ${reason}` });
  }

  // ---- sending ------------------------------------------------------------------------

  #send(frame) {
    if (this.#ws?.readyState !== OPEN) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  #ref() {
    this.#refs += 1;
    return `r${this.#refs}`;
  }

  #expect(ref) {
    return new Promise((resolve, reject) => this.#waiting.set(ref, { resolve, reject }));
  }

  #settle(ref, error, value) {
    const w = ref && this.#waiting.get(ref);
    if (!w) return;
    this.#waiting.delete(ref);
    if (error) w.reject(error); else w.resolve(value);
  }

  /**
   * Publishes `text` in `room` and resolves with `{id, room, duplicate}` once the server has
   * stored it. It waits in the outbox (kept in `storage`) while offline and is sent again,
   * under the same idempotency key, until acknowledged. Rejects with a SwitchboardError when
   * the server refuses it for good (no grant, a bad name, …).
   */
  publish(room, text, { key = randomKey() } = {}) {
    const item = { room, text, key };
    this.outbox.push(item);
    this.#save();
    this.#emit("outbox", { pending: this.outbox.length });
    const done = this.#expect(key);
    this.#flush();
    return done;
  }

  /** Sends what is queued, once per connection; the key makes a resend after a reconnect harmless. */
  #flush() {
    if (this.transport === "ws" && this.#ws?.readyState === OPEN) {
      for (const o of this.outbox) {
        if (this.#sent.has(o.key)) continue;
        this.#sent.add(o.key);
        this.#send({ type: "publish", room: o.room, text: o.text, key: o.key, ref: o.key });
      }
    } else if (this.transport === "sse" && this.nickKey) {
      for (const o of this.outbox) {
        if (this.#sent.has(o.key)) continue;
        this.#sent.add(o.key);
        this.#post(`/rooms/${encodeURIComponent(o.room)}/messages`, { text: o.text, nick: this.nick, nick_key: this.nickKey }, { "Idempotency-Key": o.key })
          .then((body) => this.#acknowledged(o.key, { id: body.id, room: body.room, duplicate: !!body.duplicate }))
          .catch((err) => this.#refused({ ref: o.key, code: err.code ?? "network", message: err.message, status: err.status, retryAfterMs: err.retryAfterMs }));
      }
    }
  }

  #acknowledged(key, ack) {
    const before = this.outbox.length;
    this.outbox = this.outbox.filter((o) => o.key !== key);
    if (this.outbox.length !== before) { this.#save(); this.#emit("outbox", { pending: this.outbox.length }); }
    this.#settle(key, null, ack);
    this.#emit("ack", { key, ...ack });
  }

  // A refused frame: a final refusal of a publish drops it from the outbox and rejects its
  // promise; anything else (rate limited, storage busy) is sent again after a pause.
  #refused(m) {
    const error = new SwitchboardError(m.code ?? "error", m.message ?? "refused", m.status, m.retryAfterMs);
    const queued = this.outbox.find((o) => o.key === m.ref);
    if (queued) {
      if (error.final) {
        this.outbox = this.outbox.filter((o) => o !== queued);
        this.#save();
        this.#emit("outbox", { pending: this.outbox.length });
        this.#settle(m.ref, error);
      } else {
        this.#sent.delete(queued.key);
        clearTimeout(this.#retryTimer);
        this.#retryTimer = setTimeout(() => this.#flush(), m.retryAfterMs ?? retryAfter(m.message));
      }
    } else {
      this.#settle(m.ref, error);
    }
    this.#emit("error", error);
  }

  /** A direct message to whoever holds `nick`; resolves `{to}` once it is in their queue. */
  direct(to, text) {
    if (this.transport === "ws") {
      const ref = this.#ref();
      const done = this.#expect(ref);
      this.#send({ type: "direct", to, text, ref });
      return done;
    }
    return this.#post(`/users/${encodeURIComponent(to)}/messages`, { text, nick: this.nick, nick_key: this.nickKey });
  }

  /** Joins `room` (resuming after its last seen id) and resolves with the `joined` frame. */
  join(room, { since } = {}) {
    if (since) this.lastId[room] = since;
    if (!this.rooms.includes(room)) { this.rooms.push(room); }
    if (this.transport !== "ws") return Promise.resolve({ room, queued: true });
    const ref = this.#ref();
    const done = this.#expect(ref);
    this.#send({ type: "join", room, since: this.lastId[room], ref });
    return done;
  }

  /** Leaves `room`. */
  leave(room) {
    this.rooms = this.rooms.filter((r) => r !== room);
    if (this.transport !== "ws") return Promise.resolve({ room });
    const ref = this.#ref();
    const done = this.#expect(ref);
    this.#send({ type: "leave", room, ref });
    return done;
  }

  /** The room streamed while on the SSE fallback (one stream, one room); joins it if needed. */
  focus(room) {
    if (!this.rooms.includes(room)) void this.join(room);
    const changed = this.focused !== room;
    this.focused = room;
    if (changed && this.transport === "sse") this.#openEventSource();
  }

  /** Signs in with a (new) token: in-band on a live WebSocket, so rooms and queue stay. */
  signIn(token) {
    this.token = token;
    this.#save();
    if (this.transport === "ws" && this.#ws?.readyState === OPEN) {
      const ref = this.#ref();
      const done = this.#expect(ref);
      this.#send({ type: "auth", token, ref });
      return done;
    }
    this.#stopped = false;
    if (this.transport === "sse") this.#openEventSource(); else { this.#attempts = 0; this.#open(); }
    return Promise.resolve({ queued: true });
  }

  // ---- HTTP --------------------------------------------------------------------------

  #headers(extra = {}) {
    return { ...(this.token ? { Authorization: `Bearer ${this.token}` } : {}), ...extra };
  }

  async #json(res) {
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      const seconds = Number(res.headers.get("retry-after"));
      const wait = Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds * 1000, 30_000) : undefined;
      throw new SwitchboardError(body.code ?? "http_error", body.error ?? `HTTP ${res.status}`, res.status, wait);
    }
    return body;
  }

  async #get(path, query) {
    return this.#json(await this.fetchImpl(this.#endpoint(path, query), { headers: this.#headers() }));
  }

  async #post(path, body, headers = {}) {
    const res = await this.fetchImpl(this.#endpoint(path), {
      method: "POST",
      headers: this.#headers({ "Content-Type": "application/json", ...headers }),
      body: JSON.stringify(body),
    });
    return this.#json(res);
  }

  /** A page of history: `{last: N}` for the newest N, or `{since, limit}` to continue. */
  history(room, { since, limit, last } = {}) {
    return this.#get(`/rooms/${encodeURIComponent(room)}/messages`, { since, limit, last });
  }

  /**
   * The newest `last` messages of `room`, delivered as `message` events (once each) before
   * the live stream resumes after them: what a page shows when it opens.
   */
  async backfill(room, last = 50) {
    const page = await this.history(room, { last });
    for (const m of page.messages ?? []) if (this.#accept(m)) this.#emit("message", m);
    if (page.cursor && !this.lastId[room]) { this.lastId[room] = page.cursor; this.#save(); }
    return page;
  }

  /** Who is in `room` now: `{room, members: [{nick, transport}]}`. */
  presence(room) {
    return this.#get(`/rooms/${encodeURIComponent(room)}/presence`);
  }

  /** One page of the server's rooms: `{rooms: [{name, members, last_id}], next}`. */
  listRooms({ after, limit } = {}) {
    return this.#get("/rooms", { after, limit });
  }
}
