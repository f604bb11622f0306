//! The bus: every node subscribes once to one channel and hands each message to its
//! `Handler` by room name; a message past the next expected one makes the node catch the room
//! up from its stream first, so members always see one unbroken order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::load::{StreamEntry, entry_event};
use super::writer::RedisWriter;
use super::{CATCH_UP_PAGE, HEARTBEAT, NODE_TTL, RedisCluster, TIMEOUT, unavailable};
use crate::broker::{Applied, Handler};
use crate::event::{Disconnect, Event, EventKind, MessageId, Sender, now_ms};
use crate::store::{Cached, MemoryHistory};

/// A message or presence change as carried on the bus.
#[derive(Debug, serde::Deserialize)]
pub(super) struct BusMessage {
    /// `m` message, `j` join, `l` leave, `n` nick change.
    k: String,
    r: String,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    s: Option<String>,
    n: String,
    /// The sender as `Sender::to_stored` writes it; empty or absent on an open server.
    #[serde(default)]
    u: Option<String>,
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

impl RedisCluster {
    /// Receives the bus and keeps this node's rooms current until `stop`; reconnects by
    /// itself. Run once per node.
    pub(super) async fn run_bus(
        self: Arc<Self>,
        handler: Arc<dyn Handler>,
        stop: CancellationToken,
    ) {
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
        // Alive from the start: other nodes count this node's members only while its key
        // exists, and they must not wait for its bus subscription to list them.
        self.heartbeat();
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
            for room in handler.rooms() {
                self.catch_up(&*handler, &room).await;
            }
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    message = messages.next() => match message {
                        Some(message) => self.dispatch(&*handler, message.get_payload_bytes()).await,
                        None => break,
                    },
                    Some(name) = created.recv() => self.catch_up(&*handler, &name).await,
                    _ = heartbeat.tick() => self.heartbeat(),
                }
            }
            self.bus_up.store(false, Ordering::Relaxed);
            crate::metrics::METRICS.redis_up.set(0);
            self.drop_query_conn().await;
            tracing::warn!("lost the Redis bus; reconnecting");
        }
    }

    pub(super) fn heartbeat(&self) {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.node_key(&self.node))
            .arg(now_ms())
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64);
        let _ = self.enqueue(cmd, None);
    }

    /// A message's origin, `NODE/SUB` (bus field and stream field `o`): whether this node
    /// published it, and the subscriber part (empty for a publish no subscriber made).
    fn origin<'a>(&self, origin: Option<&'a str>) -> (bool, &'a str) {
        let (node, sub) = origin.and_then(|o| o.split_once('/')).unwrap_or_default();
        (node == self.node, sub)
    }

    pub(super) async fn dispatch(&self, handler: &dyn Handler, payload: &[u8]) {
        let message: BusMessage = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "unreadable message on the Redis bus");
                return;
            }
        };
        if handler.position(&message.r).is_none() {
            // Nobody here uses the room; it loads from the stream if someone does.
            return;
        }
        let room: Arc<str> = message.r.as_str().into();
        // The subscriber id only means something on its own node.
        let (from_here, sub) = self.origin(message.o.as_deref());
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
                Arc::clone(&room),
                None,
                message.n.into(),
                "".into(),
                None,
            );
            handler.deliver(&room, Arc::new(event));
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
            Arc::clone(&room),
            MessageId { epoch, seq },
            message.n.into(),
            message.t.unwrap_or_default().into(),
            message
                .ms
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(now_ms),
        );
        event.origin = origin;
        let event = event.with_sender(Sender::from_stored(
            message.u.as_deref().filter(|u| !u.is_empty()),
        ));
        match handler.apply(&room, Arc::new(event), false, from_here) {
            Applied::Done => {}
            // The stream holds this message and whatever came before it that is missing here.
            Applied::Behind | Applied::OtherEpoch => self.catch_up(handler, &room).await,
        }
    }

    /// Reads what `room` has missed from its stream and applies it in order.
    pub(super) async fn catch_up(&self, handler: &dyn Handler, room: &Arc<str>) {
        let log = self.key("log", room);
        let meta = self.key("meta", room);
        // Bounded: each page moves the room forward or ends the loop.
        for _ in 0..10_000 {
            let Some((epoch, last_seq)) = handler.position(room) else {
                return;
            };
            let mut conn = match self.query_conn().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(room = %room, %error, "cannot catch up from Redis");
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
                    tracing::warn!(room = %room, %error, "cannot catch up from Redis");
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
                    tracing::info!(room = %room, epoch = stored, "room takes its epoch from Redis");
                    let history = Cached {
                        cache: MemoryHistory::new(self.retention),
                        writer: RedisWriter(None),
                    };
                    handler.restart(room, stored, Box::new(history));
                    continue;
                }
                Some(_) => {}
                // The room has never been written to; nothing to catch up.
                None => return,
            }
            let count = entries.len();
            for (id, fields) in entries {
                if let Some(event) = entry_event(room, epoch, &id, &fields) {
                    let origin = fields
                        .iter()
                        .find(|(k, _)| k == "o")
                        .map(|(_, v)| v.as_str());
                    let (here, _) = self.origin(origin);
                    // Retention may have dropped some of what this node missed: jump over.
                    handler.apply(room, event, true, here);
                }
            }
            if count < CATCH_UP_PAGE {
                return;
            }
        }
    }
}
