// Types for switchboard.js, the client for a switchboard server (served at /switchboard.d.ts).

/** Where the client keeps what must survive a restart: per-room cursors, the outbox, nick, token. */
export interface Storage {
  get(key: string): unknown;
  set(key: string, value: unknown): void;
}

/** A storage that keeps nothing across restarts (the default). */
export function memoryStorage(): Storage;
/** A storage over `sessionStorage` or `localStorage`, one JSON value per key under `prefix` ("sb."). */
export function webStorage(area: { getItem(k: string): string | null; setItem(k: string, v: string): void }, prefix?: string): Storage;
/** The `exp` claim of a JWT in seconds since the epoch, 0 when it has none. */
export function tokenExpiry(token: string): number;

export interface Options {
  /** The server's HTTP(S) base URL. Defaults to the page's own location in a browser. */
  url?: string | URL;
  /** The nick to ask for (the server may add `-2`…; see `nick-assigned`). */
  nick?: string;
  /** A JWT from the server's auth setup; sent on connect and on every HTTP call. */
  token?: string | null;
  /** Called before the token runs out and when the server closes with 4001; resolve with a new token, or null to sign out. */
  refreshToken?: () => Promise<string | null> | string | null;
  /** Rooms to join on every connect, the first in the URL, the rest by `join` frames. */
  rooms?: string[];
  /** Per-room cursors to resume from (merged over what `storage` holds). */
  since?: Record<string, string>;
  storage?: Storage;
  /** Fall back to SSE + POST when WebSockets cannot connect (default true). */
  fallback?: boolean;
  /** How many failed WebSocket attempts before the fallback (default 2). */
  fallbackAfter?: number;
  /** Reconnect delays in ms: `initial` doubling to `max`, each ±50 % (defaults 500 and 15000). */
  backoff?: { initial?: number; max?: number };
  /** Constructors and fetch to use where the platform has none (Node: `ws`'s WebSocket). */
  WebSocket?: unknown;
  EventSource?: unknown;
  fetch?: typeof fetch;
}

export type State = "idle" | "connecting" | "live" | "fallback" | "down" | "closed";

export interface StateEvent {
  state: State;
  /** Why it is down or closed ("cannot connect", "signed out: token expired", a close reason). */
  reason?: string;
  /** When down: milliseconds until the next attempt. */
  retryIn?: number;
  /** When connecting: how many attempts came before this one. */
  attempt?: number;
  transport?: "ws";
  /** On the fallback: the room streamed; when `needsSignIn`: the room that refused. */
  room?: string;
  /**
   * When down: the server refused this client the room (401/403): no retries until
   * `signIn()` or `connect()`. `code` and `message` are the server's.
   */
  needsSignIn?: boolean;
  code?: string;
  message?: string;
  /** On the fallback: the SSE stream is reconnecting. */
  reconnecting?: boolean;
}

/** Who sent a message, as the server vouches for it. */
interface Standing {
  /** The verified user (a token's subject). */
  user?: string;
  /** True on a server that verifies names, for a sender nobody vouched for. */
  anonymous?: boolean;
  /** True for a message posted with an API key. */
  backend?: boolean;
}

export interface Message extends Standing {
  type: "message";
  room: string;
  /** `EPOCH-SEQ`: the resume cursor of every transport. */
  id: string;
  nick: string;
  text: string;
  /** Milliseconds since the Unix epoch. */
  time: number;
}

export interface Presence {
  type: "join" | "leave" | "nick" | "crowd";
  room: string;
  nick: string;
  time: number;
  reason?: string;
  old?: string;
  joined?: number;
  left?: number;
}

export interface Gap {
  type: "gap";
  room: string;
  /** "expired" | "reset" | "truncated" */
  reason: string;
}

export interface Direct extends Standing {
  type: "direct";
  from: string;
  to: string;
  text: string;
  time: number;
}

export interface Welcome {
  type: "welcome";
  nick: string;
  rooms: string[];
  user?: string;
  expires?: number;
}

export interface Joined {
  type: "joined";
  room: string;
  cursor: string;
  members?: string[];
  ref?: string;
  nick?: string;
  nick_key?: string;
}

export interface Ack {
  key: string;
  id: string;
  room: string;
  duplicate: boolean;
}

export interface Outboxed {
  room: string;
  text: string;
  key: string;
}

export interface HistoryPage {
  room: string;
  messages: Message[];
  next: string | null;
  cursor: string;
  last_id: string | null;
  gap: string | null;
  more: boolean;
}

export interface EventMap {
  state: StateEvent;
  welcome: Welcome;
  authenticated: { type: "authenticated"; nick: string; user: string; expires?: number; ref?: string };
  signedout: { reason: string };
  "nick-assigned": { nick: string; asked: string };
  joined: Joined;
  left: { type: "left"; room: string; ref?: string };
  message: Message;
  join: Presence;
  leave: Presence;
  nick: Presence;
  crowd: Presence;
  gap: Gap;
  direct: Direct;
  ack: Ack;
  outbox: { pending: number };
  error: SwitchboardError;
}

/** An error the server answered with. */
export class SwitchboardError extends Error {
  /** The server's code: "forbidden", "rate_limited", "no_such_user", "network", … */
  code: string;
  /** The HTTP status, for errors of HTTP calls. */
  status?: number;
  retryAfterMs?: number;
  /** True when the same request cannot succeed if sent again. */
  readonly final: boolean;
}

export class Switchboard {
  constructor(options?: Options);
  readonly url: URL;
  readonly state: State;
  readonly transport: "ws" | "sse" | null;
  /** The nick the server gave this client. Set it, then `connect()` again, to ask for another. */
  nick: string;
  token: string | null;
  /** The verified user, once the server has checked the token. */
  readonly user: string | null;
  /** When the token runs out, in seconds since the epoch (0: never or no token). */
  readonly expires: number;
  readonly rooms: string[];
  /** The room streamed while on the SSE fallback. */
  focused: string;
  /** Per room, the last message id seen: where the next connection resumes. */
  readonly lastId: Record<string, string>;
  /** Messages waiting for the server's acknowledgement. */
  readonly outbox: Outboxed[];

  on<K extends keyof EventMap>(type: K, fn: (event: EventMap[K]) => void): () => void;
  off<K extends keyof EventMap>(type: K, fn: (event: EventMap[K]) => void): void;

  connect(): this;
  close(): void;
  publish(room: string, text: string, options?: { key?: string }): Promise<{ id: string; room: string; duplicate: boolean }>;
  direct(to: string, text: string): Promise<{ to: string }>;
  join(room: string, options?: { since?: string }): Promise<Joined | { room: string; queued: true }>;
  leave(room: string): Promise<{ type?: "left"; room: string }>;
  focus(room: string): void;
  signIn(token: string): Promise<unknown>;
  history(room: string, query?: { since?: string; limit?: number; last?: number }): Promise<HistoryPage>;
  backfill(room: string, last?: number): Promise<HistoryPage>;
  presence(room: string): Promise<{ room: string; members: { nick: string; transport: string }[] }>;
  listRooms(query?: { after?: string; limit?: number }): Promise<{ rooms: { name: string; members: number; last_id: string | null }[]; next: string | null }>;
}
