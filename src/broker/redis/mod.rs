//! The Redis cluster: room history in Redis Streams, and the bus that joins several nodes.
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
//! Files: `script` (the `STORE` call), `writer` (the write task and the `History` writer),
//! `load` (room loads), `bus` (the subscription, dispatch and catch-up), `presence`.
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
//! - `P:log:ROOM` stream, entry id `0-SEQ`, fields `n` nick, `t` text, `ms` time, `o` origin
//!   (`NODE/SUB`, or `NODE/` for a publish no subscriber made: that node tells its webhook).
//! - `P:key:LEN:ROOM:KEY` an idempotency key's id, expiring with the history age.
//! - `P:who:ROOM` hash `NODE/SUB` → `TRANSPORT NICK`.
//! - `P:node:NODE` a node's heartbeat, expiring `NODE_TTL` after the last one.
//! - `P:bus` the pub/sub channel.

mod bus;
mod load;
mod presence;
mod script;
mod writer;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{BoxFuture, Broker, Handler, MemberInfo, Outgoing, Pending, Presence, Stored};
use crate::event::{Event, SubscriberId, Transport, now_ms};
use crate::store::{HistoryFactory, Retention, StoreError};
use script::{STORE, StoreArgs};
use writer::{Op, write_loop};

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

/// A connection to Redis shared by every room of this node.
pub struct RedisCluster {
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
    /// Why Redis refused the last write, while the last write was refused (a full Redis, a
    /// cluster's CROSSSLOT): health says so until a write goes through again.
    refusing: Mutex<Option<String>>,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisCluster {
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
            refusing: Mutex::new(None),
        });
        tokio::spawn(write_loop(Arc::clone(&store), ops_rx));
        tracing::info!(url, prefix, node = %store.node, "redis store connected");
        Ok(store)
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A factory making each room's history from this store.
    pub fn factory(self: &Arc<Self>) -> HistoryFactory {
        let store = Arc::clone(self);
        Arc::new(move |room| store.room(room))
    }

    pub(super) fn key(&self, kind: &str, room: &str) -> String {
        format!("{}:{kind}:{room}", self.prefix)
    }

    pub(super) fn idempotency_key(&self, room: &str, key: &str) -> String {
        format!("{}:key:{}:{room}:{key}", self.prefix, room.len())
    }

    pub(super) fn node_key(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    pub(super) async fn query_conn(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        let mut held = self.query.lock().await;
        if let Some(conn) = held.as_ref() {
            return Ok(conn.clone());
        }
        let conn = async_connect(&self.client).await.map_err(unavailable)?;
        *held = Some(conn.clone());
        Ok(conn)
    }

    pub(super) async fn drop_query_conn(&self) {
        *self.query.lock().await = None;
    }
}

pub(super) fn sync_connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let conn = client.get_connection_with_timeout(TIMEOUT)?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.set_write_timeout(Some(TIMEOUT))?;
    Ok(conn)
}

pub(super) async fn async_connect(
    client: &redis::Client,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

impl Broker for RedisCluster {
    /// Hands a new message to Redis, which numbers it, stores it and puts it on the bus.
    /// Local members get it from the bus like everyone else.
    fn publish(&self, message: Outgoing<'_>) -> Result<Pending, StoreError> {
        let (epoch, known_seq) = message.position;
        // `NODE/SUB`, or `NODE/` for a publish no subscriber made (HTTP, gRPC unary): the
        // node tells the message's webhook, the subscriber is spared its own echo.
        let origin = match message.origin {
            Some(sub) => format!("{}/{sub}", self.node),
            None => format!("{}/", self.node),
        };
        let cmd = self.store_cmd(
            message.room,
            StoreArgs {
                epoch,
                seq: None,
                nick: &message.author.nick,
                sender: &message.author.sender.to_stored().unwrap_or_default(),
                text: message.text,
                time_ms: now_ms(),
                origin: &origin,
                key: message.key,
                bus: true,
                known_seq,
            },
        );
        let (tx, pending) = Pending::new();
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
        Ok(pending)
    }

    /// Asks the bus task to check a room the hub has just created for messages published
    /// while it was being loaded.
    fn watch(&self, room: &Arc<str>) {
        let _ = self.created.try_send(Arc::clone(room));
    }

    fn node(&self) -> &str {
        &self.node
    }

    /// True while this node receives the bus.
    fn is_up(&self) -> bool {
        self.bus_up.load(Ordering::Relaxed)
    }

    fn refusing_writes(&self) -> Option<String> {
        self.refusing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn run(
        self: Arc<Self>,
        handler: Arc<dyn Handler>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(self.run_bus(handler, stop))
    }

    /// Sends what is queued and says this node is gone.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(self.node_key(&self.node));
            let (tx, rx) = oneshot::channel();
            let sent = move |_| {
                let _ = tx.send(());
            };
            if self.enqueue(cmd, Some(Box::new(sent))).is_ok() {
                let _ = tokio::time::timeout(TIMEOUT, rx).await;
            }
        })
    }
}

impl Presence for RedisCluster {
    fn announce(&self, event: &Event, transport: Transport, sub: SubscriberId) {
        self.share_presence(event, transport, sub);
    }

    fn members<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<MemberInfo>, StoreError>> {
        Box::pin(self.remote_members(room))
    }
}
