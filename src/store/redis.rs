//! The Redis backend: room history in Redis Streams, and the bus that joins several nodes.
//!
//! With `--redis URL` every node numbers, stores and fans out messages through one Redis:
//!
//! - A publish runs one Lua script (`STORE`) that takes the room's next sequence number,
//!   appends the message to the room's stream, trims it to the retention limits and publishes
//!   it on the bus, all atomically. Ids are therefore identical on every node, and the bus
//!   carries each room's messages in sequence order.
//! - Every node subscribes once to the bus (one channel, not one per client or room) and hands
//!   each message to its local room, which delivers it to its members (`Room::apply`). A
//!   message that arrives with a number past the next expected one means something was missed
//!   (a reconnect, a room created while messages were in flight): the node reads the missing
//!   ones from the stream first, so members always see one unbroken order.
//! - Each room keeps its retained window in a `MemoryHistory` cache, loaded from the stream
//!   when the room is created and kept current by the bus, so resumes and long-polls are
//!   served locally by any node.
//! - Presence: joins, leaves and nick changes go over the bus too, and each room's members
//!   across all nodes are in a hash whose entries count only while their node's heartbeat key
//!   lives.
//!
//! Writes go through one task that pipelines whatever has queued up, in order, on one
//! connection. While Redis is unreachable a publish fails at once with
//! `StoreError::Unavailable` (a 503, an `ERR` line, a structured error): nothing is dropped
//! silently and nobody is disconnected. The bus task reconnects by itself with backoff and
//! then catches every local room up from the streams.
//!
//! Keys, under a prefix (default `switchboard`); the room name always comes last so two rooms
//! never share a key:
//! - `P:meta:ROOM` hash `epoch`, `seq`: the room's id counter.
//! - `P:log:ROOM` stream, entry id `0-SEQ`, fields `n` nick, `t` text, `ms` time, `o` origin.
//! - `P:key:LEN:ROOM:KEY` an idempotency key's id, expiring with the history age.
//! - `P:who:ROOM` hash `NODE/SUB` → `TRANSPORT NICK`.
//! - `P:node:NODE` a node's heartbeat, expiring `NODE_TTL` after the last one.
//! - `P:bus` the pub/sub channel.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Cached, Durability, MemoryHistory, Retention, RoomInit, StoreError, Writer};
use crate::event::{Disconnect, Event, EventKind, MessageId, Transport, now_ms};
use crate::hub::{Applied, Hub, MemberInfo, Room};

/// Operations queued for the writer at most; past it a publish is refused as busy.
const MAX_QUEUED: usize = 65_536;
/// Most commands sent in one pipeline.
const MAX_BATCH: usize = 1_024;
/// How long one Redis request may take before the connection is considered broken.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How often a node says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a node counts as alive after its last heartbeat.
const NODE_TTL: Duration = Duration::from_secs(15);
/// Messages read from a stream per request when catching up.
const CATCH_UP_PAGE: usize = 512;

/// The atomic store-and-publish. See the module comment; arguments are listed at the top.
const STORE: &str = r#"
-- KEYS: 1 meta, 2 log, 3 idempotency key
-- ARGV: 1 epoch if the room is new, 2 seq ('' = take the next), 3 nick, 4 text, 5 time ms,
--       6 origin, 7 max messages, 8 max age ms, 9 '1' if KEYS[3] is used, 10 bus channel
--       ('' = none), 11 room, 12 last seq known to the caller, 13 now ms, 14 bus JSON
--       without the id
local meta, log, key = KEYS[1], KEYS[2], KEYS[3]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  -- A new room, one that expired, or one whose counter was lost: carry on from what the
  -- caller has seen.
  epoch = ARGV[1]
  redis.call('HSET', meta, 'epoch', epoch, 'seq', ARGV[12])
end
if ARGV[9] == '1' then
  local prior = redis.call('GET', key)
  if prior then return {0, prior} end
end
local seq
if ARGV[2] == '' then
  seq = redis.call('HINCRBY', meta, 'seq', 1)
  redis.call('XADD', log, 'MAXLEN', ARGV[7], '0-' .. seq,
    'n', ARGV[3], 't', ARGV[4], 'ms', ARGV[5], 'o', ARGV[6])
else
  seq = tonumber(ARGV[2])
  redis.call('XADD', log, 'MAXLEN', ARGV[7], '0-' .. seq,
    'n', ARGV[3], 't', ARGV[4], 'ms', ARGV[5], 'o', ARGV[6])
  if seq > tonumber(redis.call('HGET', meta, 'seq') or '0') then
    redis.call('HSET', meta, 'seq', seq)
  end
end
-- Age: drop expired entries from the front, a bounded number per call. Looking at the
-- oldest entry alone is the common case (it has not expired); measured, a 16-entry scan on
-- every call was a quarter of the script's cost.
local cutoff = tonumber(ARGV[13]) - tonumber(ARGV[8])
local function expired(entry)
  local f = entry[2]
  for i = 1, #f, 2 do
    if f[i] == 'ms' then return tonumber(f[i + 1]) < cutoff end
  end
  return false
end
local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
if oldest and expired(oldest) then
  local last_old = nil
  for _, entry in ipairs(redis.call('XRANGE', log, '-', '+', 'COUNT', 64)) do
    if not expired(entry) then break end
    last_old = entry[1]
  end
  redis.call('XTRIM', log, 'MINID', '0-' .. (tonumber(string.sub(last_old, 3)) + 1))
end
-- A room nobody writes to disappears once all it holds has expired.
redis.call('PEXPIRE', log, ARGV[8])
redis.call('PEXPIRE', meta, ARGV[8])
if ARGV[9] == '1' then
  redis.call('SET', key, epoch .. ':' .. seq, 'PX', ARGV[8])
end
if ARGV[10] ~= '' then
  -- ARGV[14] is the message's JSON without its id, encoded by the node (cheaper than cjson
  -- here): it ends just before the closing brace.
  redis.call('PUBLISH', ARGV[10], ARGV[14] .. ',"e":"' .. epoch .. '","s":"' .. seq .. '"}')
end
return {1, epoch, seq}
"#;

/// A publish the cluster has accepted: its id and whether its key was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The message's id (the earlier one for a duplicate).
    pub id: MessageId,
    /// True when the idempotency key had been used: nothing new was published.
    pub duplicate: bool,
}

/// The answer to a publish handed to Redis, once it comes.
#[derive(Debug)]
pub struct PendingStore(oneshot::Receiver<Result<Stored, StoreError>>);

impl PendingStore {
    /// Waits for Redis to store (or refuse) the message.
    pub async fn wait(self) -> Result<Stored, StoreError> {
        self.0.await.unwrap_or(Err(StoreError::Closed))
    }
}

fn parse_stored(value: Value) -> Result<Stored, StoreError> {
    let bad = || StoreError::Failed("unexpected answer from Redis".into());
    let Value::Array(items) = value else {
        return Err(bad());
    };
    let int = |v: &Value| -> Option<u64> {
        match v {
            Value::Int(n) => u64::try_from(*n).ok(),
            Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            Value::SimpleString(s) => s.parse().ok(),
            _ => None,
        }
    };
    match items.as_slice() {
        [flag, epoch, seq] if int(flag) == Some(1) => Ok(Stored {
            id: MessageId {
                epoch: int(epoch)
                    .and_then(|e| u32::try_from(e).ok())
                    .ok_or_else(bad)?,
                seq: int(seq).ok_or_else(bad)?,
            },
            duplicate: false,
        }),
        [flag, Value::BulkString(prior)] if int(flag) == Some(0) => {
            let prior = std::str::from_utf8(prior).map_err(|_| bad())?;
            let (epoch, seq) = prior.split_once(':').ok_or_else(bad)?;
            Ok(Stored {
                id: MessageId {
                    epoch: epoch.parse().map_err(|_| bad())?,
                    seq: seq.parse().map_err(|_| bad())?,
                },
                duplicate: true,
            })
        }
        _ => Err(bad()),
    }
}

/// What the writer does with a write's answer; runs on the writer task, so it must not block.
type Done = Box<dyn FnOnce(Result<Value, StoreError>) + Send>;

/// One queued write: a command and, if someone cares, what to do with its answer.
struct Op {
    cmd: redis::Cmd,
    done: Option<Done>,
}

/// A message or presence change as carried on the bus.
#[derive(Debug, serde::Deserialize)]
struct BusMessage {
    /// `m` message, `j` join, `l` leave, `n` nick change.
    k: String,
    r: String,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    s: Option<String>,
    n: String,
    #[serde(default)]
    t: Option<String>,
    #[serde(default)]
    ms: Option<String>,
    /// `NODE/SUB` of the sender, or empty.
    #[serde(default)]
    o: Option<String>,
    /// The old nick of a nick change.
    #[serde(default)]
    old: Option<String>,
    /// Why a member left, when it was not their choice.
    #[serde(default)]
    why: Option<String>,
}

/// A connection to Redis shared by every room of this node.
pub struct RedisStore {
    client: redis::Client,
    url: String,
    prefix: String,
    /// The one channel every node publishes on and subscribes to (`PREFIX:bus`).
    bus: String,
    retention: Retention,
    /// This node's id, unique per process run.
    node: String,
    script_sha: String,
    ops: mpsc::Sender<Op>,
    /// For loading a room when it is created (a blocking read, like SQLite's).
    reader: Mutex<Option<redis::Connection>>,
    /// For reads made by the bus task and presence queries.
    query: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// Rooms just created, for the bus task to check for messages it may have missed.
    created: mpsc::Sender<Arc<str>>,
    created_rx: Mutex<Option<mpsc::Receiver<Arc<str>>>>,
    /// Whether the bus subscription is live, for health and metrics.
    bus_up: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Connects to the Redis at `url` (checking that it answers) and starts the writer task.
    /// Keys are put under `prefix`. Must be called inside a tokio runtime.
    pub fn connect(url: &str, prefix: &str, retention: Retention) -> Result<Arc<Self>, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Failed(format!("bad Redis URL {url:?}: {e}")))?;
        let mut conn = sync_connect(&client)
            .map_err(|e| unavailable(format!("cannot reach Redis at {url}: {e}")))?;
        let _: String = redis::cmd("PING")
            .query(&mut conn)
            .map_err(|e| unavailable(format!("Redis at {url} does not answer: {e}")))?;
        let node = std::collections::hash_map::RandomState::new();
        let node = format!("{:016x}", node.hash_one((std::process::id(), now_ms())));
        let (ops, ops_rx) = mpsc::channel(MAX_QUEUED);
        let (created, created_rx) = mpsc::channel(4_096);
        let store = Arc::new(Self {
            client,
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            bus: format!("{prefix}:bus"),
            retention,
            node,
            script_sha: redis::Script::new(STORE).get_hash().to_owned(),
            ops,
            reader: Mutex::new(Some(conn)),
            query: tokio::sync::Mutex::new(None),
            created,
            created_rx: Mutex::new(Some(created_rx)),
            bus_up: AtomicBool::new(false),
        });
        tokio::spawn(write_loop(Arc::clone(&store), ops_rx));
        tracing::info!(url, prefix, node = %store.node, "redis store connected");
        Ok(store)
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// True while this node receives the bus.
    pub fn is_up(&self) -> bool {
        self.bus_up.load(Ordering::Relaxed)
    }

    /// A factory making each room's history from this store.
    pub fn factory(self: &Arc<Self>) -> super::HistoryFactory {
        let store = Arc::clone(self);
        Arc::new(move |room| store.room(room))
    }

    fn key(&self, kind: &str, room: &str) -> String {
        format!("{}:{kind}:{room}", self.prefix)
    }

    fn idempotency_key(&self, room: &str, key: &str) -> String {
        format!("{}:key:{}:{room}:{key}", self.prefix, room.len())
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// The commands that load a room: its counter and its newest retained messages, read
    /// atomically. A room Redis does not know gets its epoch from the hub; the first publish
    /// writes it to Redis, and any node that picked another one reloads then.
    fn load_pipe(&self, room: &str) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HMGET")
            .arg(self.key("meta", room))
            .arg("epoch")
            .arg("seq")
            .cmd("XREVRANGE")
            .arg(self.key("log", room))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(self.retention.max_messages.max(1));
        pipe
    }

    /// A loaded room: its epoch (none if Redis does not know it), last sequence and the
    /// retained messages.
    fn parse_load(&self, room: &str, answer: LoadAnswer) -> (Option<u32>, u64, MemoryHistory) {
        let ((epoch, seq), mut entries) = answer;
        let mut cache = MemoryHistory::new(self.retention);
        let Some(epoch) = epoch.as_deref().and_then(|e| e.parse::<u32>().ok()) else {
            return (None, 0, cache);
        };
        let mut last_seq: u64 = seq.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
        entries.reverse();
        let name: Arc<str> = room.into();
        let events: Vec<Arc<Event>> = entries
            .into_iter()
            .filter_map(|(id, fields)| entry_event(&name, epoch, &id, &fields))
            .collect();
        if let Some(newest) = events.last().and_then(|e| e.id) {
            last_seq = last_seq.max(newest.seq);
        }
        cache.preload(events);
        (Some(epoch), last_seq, cache)
    }

    /// Loads a room (blocking, when the hub creates it).
    fn room(self: &Arc<Self>, room: &str) -> RoomInit {
        let loaded = {
            let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
            let result = match reader.as_mut() {
                Some(conn) => self.load_pipe(room).query::<LoadAnswer>(conn),
                None => sync_connect(&self.client).and_then(|mut conn| {
                    let answer = self.load_pipe(room).query::<LoadAnswer>(&mut conn);
                    *reader = Some(conn);
                    answer
                }),
            };
            if result.is_err() {
                // Reconnect next time.
                *reader = None;
            }
            result
        };
        let (epoch, last_seq, cache) = match loaded {
            Ok(answer) => self.parse_load(room, answer),
            Err(error) => {
                // The room starts empty in an epoch of its own; the first message from the
                // bus (or the catch-up after a reconnect) carries the real epoch, and the
                // room restarts in it then.
                tracing::error!(room, %error, "cannot load room from Redis");
                (None, 0, MemoryHistory::new(self.retention))
            }
        };
        RoomInit {
            // Appends made through the `History` seam write to the stream.
            history: Box::new(Cached {
                cache,
                writer: RedisWriter(Some((Arc::clone(self), room.into()))),
            }),
            epoch,
            last_seq,
        }
    }

    /// Asks the bus task to check a room the hub has just created for messages published
    /// while it was being loaded.
    pub fn watch(&self, room: &Arc<str>) {
        let _ = self.created.try_send(Arc::clone(room));
    }

    async fn query_conn(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        let mut held = self.query.lock().await;
        if let Some(conn) = held.as_ref() {
            return Ok(conn.clone());
        }
        let conn = async_connect(&self.client).await.map_err(unavailable)?;
        *held = Some(conn.clone());
        Ok(conn)
    }

    async fn drop_query_conn(&self) {
        *self.query.lock().await = None;
    }

    fn store_cmd(&self, room: &str, args: StoreArgs<'_>) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.script_sha)
            .arg(3)
            .arg(self.key("meta", room))
            .arg(self.key("log", room))
            .arg(self.idempotency_key(room, args.key.unwrap_or("")))
            .arg(args.epoch)
            .arg(args.seq.map(|s| s.to_string()).unwrap_or_default())
            .arg(args.nick)
            .arg(args.text)
            .arg(args.time_ms)
            .arg(args.origin)
            .arg(self.retention.max_messages.max(1))
            .arg(self.retention.max_age.as_millis() as u64)
            .arg(if args.key.is_some() { "1" } else { "0" })
            .arg(if args.bus { self.bus.as_str() } else { "" })
            .arg(room)
            .arg(args.known_seq)
            .arg(now_ms());
        if args.bus {
            let json = serde_json::json!({
                "k": "m", "r": room, "n": args.nick, "t": args.text,
                "ms": args.time_ms.to_string(), "o": args.origin,
            })
            .to_string();
            // Drop the closing brace; the script appends the id fields and closes it.
            cmd.arg(&json[..json.len() - 1]);
        } else {
            cmd.arg("");
        }
        cmd
    }

    /// Queues a write for the writer task, without waiting; refused when the queue is full.
    fn enqueue(&self, cmd: redis::Cmd, done: Option<Done>) -> Result<(), StoreError> {
        self.ops.try_send(Op { cmd, done }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Busy,
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })
    }

    /// Queues a `STORE` call; `then` gets its parsed answer on the writer task.
    fn enqueue_store(
        &self,
        cmd: redis::Cmd,
        then: impl FnOnce(Result<Stored, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        self.enqueue(
            cmd,
            Some(Box::new(|answer| then(answer.and_then(parse_stored)))),
        )
    }

    /// Hands a new message for `room` to Redis, which numbers it, stores it and puts it on
    /// the bus. Local members get it from the bus like everyone else.
    pub fn publish(
        &self,
        room: &Room,
        origin: Option<u64>,
        nick: &str,
        text: &str,
        key: Option<&str>,
    ) -> Result<PendingStore, StoreError> {
        let (epoch, known_seq) = room.position();
        let origin = origin
            .map(|o| format!("{}/{o}", self.node))
            .unwrap_or_default();
        let cmd = self.store_cmd(
            room.name(),
            StoreArgs {
                epoch,
                seq: None,
                nick,
                text,
                time_ms: now_ms(),
                origin: &origin,
                key,
                bus: true,
                known_seq,
            },
        );
        let (tx, rx) = oneshot::channel();
        self.enqueue_store(cmd, move |stored| {
            if matches!(
                stored,
                Ok(Stored {
                    duplicate: false,
                    ..
                })
            ) {
                crate::metrics::METRICS.published.inc();
            }
            let _ = tx.send(stored);
        })?;
        Ok(PendingStore(rx))
    }

    /// Tells the other nodes about a join, leave or nick change of a local member, and keeps
    /// the room's member hash current. Presence is best effort: if Redis is behind or away
    /// the change is logged and dropped.
    pub fn announce(&self, event: &Event, transport: Transport, sub: u64) {
        let member = format!("{}/{sub}", self.node);
        let who = self.key("who", &event.room);
        let (kind, old, why) = match &event.kind {
            EventKind::Join => ("j", None, None),
            EventKind::Leave { reason } => ("l", None, *reason),
            EventKind::Nick { old } => ("n", Some(&**old), None),
            EventKind::Message | EventKind::Direct { .. } => return,
        };
        let mut hash = redis::cmd(if kind == "l" { "HDEL" } else { "HSET" });
        hash.arg(&who).arg(&member);
        if kind != "l" {
            hash.arg(format!("{} {}", transport.as_str(), event.nick));
        }
        let payload = serde_json::json!({
            "k": kind, "r": &*event.room, "n": &*event.nick, "o": member,
            "old": old, "why": why.map(Disconnect::as_str),
        });
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.bus).arg(payload.to_string());
        for cmd in [hash, publish] {
            if self.enqueue(cmd, None).is_err() {
                tracing::warn!(room = %event.room, "redis queue full; presence change not shared");
                return;
            }
        }
    }

    /// Members of `room` on other live nodes.
    pub async fn remote_members(&self, room: &str) -> Result<Vec<MemberInfo>, StoreError> {
        let mut conn = self.query_conn().await?;
        let entries: Vec<(String, String)> = tokio::time::timeout(
            TIMEOUT,
            redis::cmd("HGETALL")
                .arg(self.key("who", room))
                .query_async(&mut conn),
        )
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        let nodes: Vec<&str> = entries
            .iter()
            .filter_map(|(member, _)| member.split_once('/').map(|(node, _)| node))
            .filter(|node| *node != self.node)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let mut exists = redis::pipe();
        for node in &nodes {
            exists.cmd("EXISTS").arg(self.node_key(node));
        }
        let alive: Vec<bool> = tokio::time::timeout(TIMEOUT, exists.query_async(&mut conn))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        let alive: HashSet<&str> = nodes
            .iter()
            .zip(alive)
            .filter_map(|(node, up)| up.then_some(*node))
            .collect();
        // Entries of nodes that died without saying goodbye are removed when seen.
        let dead: Vec<&str> = entries
            .iter()
            .map(|(member, _)| member.as_str())
            .filter(|member| {
                member
                    .split_once('/')
                    .is_some_and(|(node, _)| node != self.node && !alive.contains(node))
            })
            .collect();
        if !dead.is_empty() {
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(self.key("who", room)).arg(&dead);
            let _ = self.enqueue(cmd, None);
        }
        Ok(entries
            .iter()
            .filter(|(member, _)| {
                member
                    .split_once('/')
                    .is_some_and(|(node, _)| alive.contains(node))
            })
            .filter_map(|(_, value)| {
                let (transport, nick) = value.split_once(' ')?;
                Some(MemberInfo {
                    nick: nick.into(),
                    transport: Transport::parse(transport)?,
                })
            })
            .collect())
    }

    /// Receives the bus and keeps this node's rooms current until `stop`; reconnects by
    /// itself. Run once per node.
    pub async fn run_bus(self: Arc<Self>, hub: Arc<Hub>, stop: CancellationToken) {
        let Some(mut created) = self
            .created_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut backoff = Duration::from_millis(100);
        // Bounded by `stop`: each pass either serves until the connection drops or waits.
        while !stop.is_cancelled() {
            let subscribed = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&self.bus).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = match tokio::time::timeout(TIMEOUT, subscribed).await {
                Ok(Ok(pubsub)) => pubsub,
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!(%error, retry_in = ?backoff, "cannot subscribe to the Redis bus");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            self.bus_up.store(true, Ordering::Relaxed);
            crate::metrics::METRICS.redis_up.set(1);
            tracing::info!("subscribed to the Redis bus");
            self.heartbeat();
            // Whatever was published while this node was not listening.
            for room in hub.all_rooms() {
                self.catch_up(&room).await;
            }
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    message = messages.next() => match message {
                        Some(message) => self.dispatch(&hub, message.get_payload_bytes()).await,
                        None => break,
                    },
                    Some(name) = created.recv() => {
                        if let Some(room) = hub.existing_room(&name) {
                            self.catch_up(&room).await;
                        }
                    }
                    _ = heartbeat.tick() => self.heartbeat(),
                }
            }
            self.bus_up.store(false, Ordering::Relaxed);
            crate::metrics::METRICS.redis_up.set(0);
            self.drop_query_conn().await;
            tracing::warn!("lost the Redis bus; reconnecting");
        }
    }

    fn heartbeat(&self) {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.node_key(&self.node))
            .arg(now_ms())
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64);
        let _ = self.enqueue(cmd, None);
    }

    async fn dispatch(&self, hub: &Hub, payload: &[u8]) {
        let message: BusMessage = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "unreadable message on the Redis bus");
                return;
            }
        };
        let Some(room) = hub.existing_room(&message.r) else {
            // Nobody here uses the room; it loads from the stream if someone does.
            return;
        };
        // `NODE/SUB` of the sender; the subscriber id only means something on its own node.
        let (node, sub) = message
            .o
            .as_deref()
            .and_then(|o| o.split_once('/'))
            .unwrap_or_default();
        let from_here = node == self.node;
        let origin = if from_here { sub.parse().ok() } else { None };
        if message.k != "m" {
            if from_here {
                return; // Our own presence change, delivered locally already.
            }
            let kind = match message.k.as_str() {
                "j" => EventKind::Join,
                "l" => EventKind::Leave {
                    reason: message.why.as_deref().and_then(Disconnect::parse),
                },
                "n" => EventKind::Nick {
                    old: message.old.unwrap_or_default().into(),
                },
                _ => return,
            };
            let event = Event::new(
                kind,
                Arc::clone(room.name()),
                None,
                message.n.into(),
                "".into(),
                None,
            );
            room.deliver_remote(Arc::new(event));
            return;
        }
        let (Some(epoch), Some(seq)) = (
            message.e.as_deref().and_then(|e| e.parse::<u32>().ok()),
            message.s.as_deref().and_then(|s| s.parse::<u64>().ok()),
        ) else {
            tracing::warn!(room = %message.r, "message without an id on the Redis bus");
            return;
        };
        let mut event = Event::stored(
            Arc::clone(room.name()),
            MessageId { epoch, seq },
            message.n.into(),
            message.t.unwrap_or_default().into(),
            message
                .ms
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(now_ms),
        );
        event.origin = origin;
        match room.apply(Arc::new(event), false) {
            Applied::Done => {}
            // The stream holds this message and whatever came before it that is missing here.
            Applied::Behind | Applied::OtherEpoch => self.catch_up(&room).await,
        }
    }

    /// Reads what `room` has missed from its stream and applies it in order.
    async fn catch_up(&self, room: &Arc<Room>) {
        let log = self.key("log", room.name());
        let meta = self.key("meta", room.name());
        // Bounded: each page moves the room forward or ends the loop.
        for _ in 0..10_000 {
            let (epoch, last_seq) = room.position();
            let mut conn = match self.query_conn().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(room = %room.name(), %error, "cannot catch up from Redis");
                    return;
                }
            };
            let mut pipe = redis::pipe();
            pipe.cmd("HGET")
                .arg(&meta)
                .arg("epoch")
                .cmd("XRANGE")
                .arg(&log)
                .arg(format!("(0-{last_seq}"))
                .arg("+")
                .arg("COUNT")
                .arg(CATCH_UP_PAGE);
            let answer: Result<(Option<String>, Vec<StreamEntry>), _> =
                match tokio::time::timeout(TIMEOUT, pipe.query_async(&mut conn)).await {
                    Ok(answer) => answer.map_err(unavailable),
                    Err(e) => Err(unavailable(e)),
                };
            let (stored_epoch, entries) = match answer {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::warn!(room = %room.name(), %error, "cannot catch up from Redis");
                    self.drop_query_conn().await;
                    return;
                }
            };
            match stored_epoch.and_then(|e| e.parse::<u32>().ok()) {
                Some(stored) if stored != epoch => {
                    // Redis numbers the room in another epoch than this node gave it: two
                    // nodes created it at once and the other one published first (or loading
                    // it failed). Nothing of that epoch has reached the members here, so
                    // start it from the beginning; the next pages deliver all of it.
                    tracing::info!(room = %room.name(), epoch = stored, "room takes its epoch from Redis");
                    let history = Cached {
                        cache: MemoryHistory::new(self.retention),
                        writer: RedisWriter(None),
                    };
                    room.restart(stored, Box::new(history));
                    continue;
                }
                Some(_) => {}
                // The room has never been written to; nothing to catch up.
                None => return,
            }
            let count = entries.len();
            for (id, fields) in entries {
                if let Some(event) = entry_event(room.name(), epoch, &id, &fields) {
                    // Retention may have dropped some of what this node missed: jump over.
                    room.apply(event, true);
                }
            }
            if count < CATCH_UP_PAGE {
                return;
            }
        }
    }

    /// Sends what is queued and says this node is gone.
    pub async fn close(&self) {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.node_key(&self.node));
        let (tx, rx) = oneshot::channel();
        let sent = move |_| {
            let _ = tx.send(());
        };
        if self.enqueue(cmd, Some(Box::new(sent))).is_ok() {
            let _ = tokio::time::timeout(TIMEOUT, rx).await;
        }
    }
}

/// The arguments of one `STORE` call.
struct StoreArgs<'a> {
    epoch: u32,
    seq: Option<u64>,
    nick: &'a str,
    text: &'a str,
    time_ms: u64,
    origin: &'a str,
    key: Option<&'a str>,
    bus: bool,
    known_seq: u64,
}

type StreamEntry = (String, Vec<(String, String)>);
type LoadAnswer = ((Option<String>, Option<String>), Vec<StreamEntry>);

fn entry_event(
    room: &Arc<str>,
    epoch: u32,
    id: &str,
    fields: &[(String, String)],
) -> Option<Arc<Event>> {
    let seq = id.strip_prefix("0-")?.parse().ok()?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    Some(Arc::new(Event::stored(
        Arc::clone(room),
        MessageId { epoch, seq },
        field("n")?.into(),
        field("t").unwrap_or("").into(),
        field("ms").and_then(|m| m.parse().ok()).unwrap_or(0),
    )))
}

fn sync_connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let conn = client.get_connection_with_timeout(TIMEOUT)?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.set_write_timeout(Some(TIMEOUT))?;
    Ok(conn)
}

async fn async_connect(
    client: &redis::Client,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// The writer: sends queued operations in order, pipelined, on one connection; connects
/// (and loads the script) when it has none. While Redis is away every operation fails at
/// once, so publishers get an answer instead of a wait.
async fn write_loop(store: Arc<RedisStore>, mut ops: mpsc::Receiver<Op>) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while ops.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if conn.is_none() {
            match connect_writer(&store).await {
                Ok(c) => conn = Some(c),
                Err(error) => {
                    tracing::warn!(%error, dropped = batch.len(), "redis unavailable");
                    for op in batch.drain(..) {
                        if let Some(done) = op.done {
                            done(Err(error.clone()));
                        }
                    }
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for op in &batch {
            pipe.add_command(op.cmd.clone());
        }
        let answer = tokio::time::timeout(TIMEOUT, pipe.query_async::<Vec<Value>>(c)).await;
        match answer {
            Ok(Ok(values)) if values.len() == batch.len() => {
                for (op, value) in batch.drain(..).zip(values) {
                    let result = match value {
                        Value::ServerError(e) => {
                            tracing::warn!(error = %e.details().unwrap_or(""), "redis refused a write");
                            Err(StoreError::Failed(format!(
                                "Redis refused the write: {e:?}"
                            )))
                        }
                        value => Ok(value),
                    };
                    if let Some(done) = op.done {
                        done(result);
                    }
                }
            }
            failed => {
                // The writes may or may not have happened; a publisher retrying with its
                // idempotency key gets the right answer either way.
                let error = match failed {
                    Ok(Ok(_)) => unavailable("Redis answered a pipeline partly"),
                    Ok(Err(e)) => unavailable(e),
                    Err(_) => unavailable("Redis did not answer in time"),
                };
                tracing::warn!(%error, "redis write failed; reconnecting");
                conn = None;
                for op in batch.drain(..) {
                    if let Some(done) = op.done {
                        done(Err(error.clone()));
                    }
                }
            }
        }
    }
}

async fn connect_writer(
    store: &RedisStore,
) -> Result<redis::aio::MultiplexedConnection, StoreError> {
    let mut conn = async_connect(&store.client).await.map_err(unavailable)?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(STORE)
        .query_async(&mut conn)
        .await
        .map_err(unavailable)?;
    debug_assert_eq!(sha, store.script_sha);
    Ok(conn)
}

/// One room's writes on Redis: appends made through the `History` seam go to the room's
/// stream. `None` for a room restarted by the bus task, which only records what the bus
/// delivers.
#[derive(Debug)]
struct RedisWriter(Option<(Arc<RedisStore>, Arc<str>)>);

impl Writer for RedisWriter {
    fn write(&mut self, event: &Arc<Event>) -> Result<Durability, StoreError> {
        let Some((store, room)) = &self.0 else {
            return Ok(Durability::Now);
        };
        let id = event
            .id
            .ok_or_else(|| StoreError::Failed("message without id".into()))?;
        let origin = String::new();
        let cmd = store.store_cmd(
            room,
            StoreArgs {
                epoch: id.epoch,
                seq: Some(id.seq),
                nick: &event.nick,
                text: &event.text,
                time_ms: event.time_ms,
                origin: &origin,
                key: None,
                bus: false,
                known_seq: id.seq.saturating_sub(1),
            },
        );
        let (tx, rx) = oneshot::channel();
        store.enqueue_store(cmd, move |stored| {
            let _ = tx.send(stored.map(|_| ()));
        })?;
        Ok(Durability::Pending(rx))
    }
}
