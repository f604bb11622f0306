//! A subscriber: one client connection's seat in the hub, whatever its transport.
//!
//! It owns the sending half of the connection's bounded outbound queue. Rooms push into it with
//! `try_send` and never wait; a full queue means the client is not keeping up, and the hub
//! disconnects it with a stated reason instead of slowing the room.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::event::Event;
pub use crate::event::{Disconnect, SubscriberId, Transport};

/// One item in a subscriber's outbound queue.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A room event, shared with every other receiver.
    Event(Arc<Event>),
    /// Bytes meant for this subscriber alone (a command's answer, an error line). Boxed:
    /// these are rare, and a 16-byte `Delivery` packs four queue slots per cache line
    /// instead of two (see `Delivery::direct`).
    Direct(Box<Bytes>),
    /// A session's answer to this subscriber, rendered in its dialect by its writer
    /// (`crate::wire::reply`). Boxed like `Direct`.
    Reply(Box<crate::reply::Reply>),
    /// History replayed to this subscriber, queued under the room lock ahead of every live
    /// event that follows it: one queue slot however long it is.
    Replay(Box<Replay>),
}

// The queue's slots are this size; keep it to two words.
const _: () = assert!(std::mem::size_of::<Delivery>() == 16);

impl Delivery {
    /// Bytes for this subscriber alone.
    pub fn direct(bytes: impl Into<Bytes>) -> Self {
        Delivery::Direct(Box::new(bytes.into()))
    }

    /// An answer for this subscriber alone.
    pub fn reply(reply: crate::reply::Reply) -> Self {
        Delivery::Reply(Box::new(reply))
    }

    /// What it costs the queue, in bytes (`Event::weight`).
    pub fn weight(&self) -> usize {
        match self {
            Delivery::Event(event) => event.weight(),
            Delivery::Direct(bytes) => bytes.len(),
            Delivery::Reply(reply) => reply.weight(),
            Delivery::Replay(replay) => replay.weight,
        }
    }
}

/// Messages a client missed, and whether they are all of them.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The room replayed.
    pub room: Arc<str>,
    /// Oldest first.
    pub events: Vec<Arc<Event>>,
    /// Set when history does not reach back to the client's cursor.
    pub gap: Option<Gap>,
    /// The events' total weight (`Event::weight`).
    pub weight: usize,
}

impl Replay {
    /// A replay of `events` (oldest first) that fits in `budget` bytes: the newest that fit
    /// are kept, and if older ones had to be left out the gap says so (`Gap::Truncated`,
    /// unless a gap was already there).
    pub fn within(
        room: Arc<str>,
        mut events: Vec<Arc<Event>>,
        gap: Option<Gap>,
        budget: usize,
    ) -> Self {
        let (weight, truncated) = keep_newest(&mut events, budget);
        Self {
            room,
            events,
            gap: if truncated {
                gap.or(Some(Gap::Truncated))
            } else {
                gap
            },
            weight,
        }
    }
}

/// Drops the oldest of `events` (oldest first) until the rest weigh at most `budget` bytes
/// (`Event::weight`); returns their weight and whether any were dropped.
pub fn keep_newest(events: &mut Vec<Arc<Event>>, budget: usize) -> (usize, bool) {
    let mut weight = 0;
    let mut drop = events.len();
    for event in events.iter().rev() {
        let next = weight + event.weight();
        if next > budget {
            break;
        }
        weight = next;
        drop -= 1;
    }
    events.drain(..drop);
    (weight, drop > 0)
}

/// Why a replay cannot be complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// Messages after the cursor were dropped by retention.
    Expired,
    /// The cursor is from another epoch of the room (its history was lost): what was missed
    /// is unknown, and everything held now is replayed.
    Reset,
    /// The reply reached its size limit (`limits.reply_bytes`): older messages were left
    /// out; HTTP history pages back to them.
    Truncated,
}

impl Gap {
    /// Lowercase name for the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Gap::Expired => "expired",
            Gap::Reset => "reset",
            Gap::Truncated => "truncated",
        }
    }
}

/// The hub's handle on one client.
#[derive(Debug)]
pub struct Subscriber {
    /// Unique within the hub; used to skip the sender and to find the member in a room.
    pub id: SubscriberId,
    /// Shown in presence.
    pub transport: Transport,
    /// Whether the client receives its own messages (WebSocket chat does, TCP chat does not).
    pub echo_own: bool,
    /// The peer's address, for logs and per-IP limits.
    pub addr: Option<SocketAddr>,
    /// Bounded: see `Config::queue_capacity` for how the bound was chosen.
    tx: super::queue::Sender<Delivery>,
    /// Bytes queued and not yet written (`Delivery::weight`), against `max_bytes`.
    queued_bytes: AtomicUsize,
    /// Past this many queued bytes the client is cut as a slow consumer.
    max_bytes: usize,
    /// Largest history reply this client is sent at once (`Replay::within`).
    reply_bytes: usize,
    /// Cancelled when the hub disconnects the client; the connection task selects on it.
    kicked: CancellationToken,
    /// Set once, before `kicked` is cancelled.
    reason: OnceLock<Disconnect>,
}

impl Subscriber {
    pub(crate) fn new(
        id: SubscriberId,
        transport: Transport,
        echo_own: bool,
        addr: Option<SocketAddr>,
        tx: super::queue::Sender<Delivery>,
        (max_bytes, reply_bytes): (usize, usize),
    ) -> Self {
        Self {
            id,
            transport,
            echo_own,
            addr,
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_bytes,
            reply_bytes,
            kicked: CancellationToken::new(),
            reason: OnceLock::new(),
        }
    }

    /// Queues a delivery without waiting. On a full queue the subscriber is kicked as a slow
    /// consumer and `false` is returned; `false` also when the connection is already gone.
    /// The queue is bounded twice: in deliveries (`super::queue`) and in bytes (`max_bytes`),
    /// whichever fills first.
    pub fn offer(&self, delivery: Delivery) -> bool {
        let weight = delivery.weight();
        let before = self.queued_bytes.fetch_add(weight, Ordering::Relaxed);
        if before + weight > self.max_bytes {
            self.queued_bytes.fetch_sub(weight, Ordering::Relaxed);
            if !self.tx.is_closed() {
                self.kick(Disconnect::SlowConsumer);
            }
            return false;
        }
        match self.tx.try_send(delivery) {
            Ok(()) => true,
            Err(e) => {
                self.queued_bytes.fetch_sub(weight, Ordering::Relaxed);
                if e == super::queue::Refused::Full {
                    self.kick(Disconnect::SlowConsumer);
                }
                false
            }
        }
    }

    /// The writer took deliveries weighing `bytes` off the queue and wrote them.
    pub fn written(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Largest history reply to queue for this client at once.
    pub fn reply_bytes(&self) -> usize {
        self.reply_bytes
    }

    /// Disconnects the subscriber; the first reason given wins.
    pub fn kick(&self, reason: Disconnect) {
        if self.reason.set(reason).is_ok() {
            if reason == Disconnect::SlowConsumer {
                crate::metrics::METRICS.slow_consumers.inc();
            }
            tracing::info!(id = self.id, transport = self.transport.as_str(), addr = ?self.addr, reason = reason.as_str(), "disconnecting subscriber");
        }
        self.kicked.cancel();
    }

    /// True once kicked or once its connection dropped its queue.
    pub fn is_gone(&self) -> bool {
        self.kicked.is_cancelled() || self.tx.is_closed()
    }

    /// Resolves when the hub kicks the subscriber.
    pub fn kicked(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.kicked.cancelled()
    }

    /// Why it was kicked, if it was.
    pub fn kick_reason(&self) -> Option<Disconnect> {
        self.reason.get().copied()
    }

    /// Messages waiting in the queue; for metrics.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        crate::metrics::METRICS
            .connections
            .get_or_create(&crate::metrics::TransportLabel {
                transport: self.transport.as_str(),
            })
            .dec();
    }
}
