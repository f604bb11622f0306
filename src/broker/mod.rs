//! The cluster seams: `Broker` (numbering, storing and fanning out messages across nodes),
//! `Presence` (members on other nodes), and `Handler`, what a broker calls back into.
//!
//! The hub holds these as trait objects and names no backend; `redis` is the one we ship.
//! As in centrifuge's `BrokerEventHandler`, a broker never reaches into the hub's rooms: its
//! run loop hands every message it hears to a `Handler` (implemented by the hub) by room
//! name, and reads a room's position through it when it catches the room up.

pub mod redis;

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::event::{Author, Event, MessageId, SubscriberId, Transport};
use crate::store::{History, StoreError};

pub use redis::RedisCluster;

/// A boxed future, for the seams' async methods (object-safe traits).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A publish the cluster has accepted: its id and whether its key was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The message's id (the earlier one for a duplicate).
    pub id: MessageId,
    /// True when the idempotency key had been used: nothing new was published.
    pub duplicate: bool,
}

/// The answer to a publish handed to the broker, once it comes.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<Stored, StoreError>>);

impl Pending {
    /// A pending answer and the sender that gives it.
    pub fn new() -> (oneshot::Sender<Result<Stored, StoreError>>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Self(rx))
    }

    /// Waits for the broker to store (or refuse) the message.
    pub async fn wait(self) -> Result<Stored, StoreError> {
        self.0.await.unwrap_or(Err(StoreError::Closed))
    }
}

/// A new message for the cluster, from a local room.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The room.
    pub room: &'a str,
    /// The room's epoch and last sequence as this node knows them (a room the cluster does
    /// not know yet starts from them).
    pub position: (u32, u64),
    /// The sending subscriber on this node, if any.
    pub origin: Option<SubscriberId>,
    /// Who sent it.
    pub author: &'a Author,
    /// The text.
    pub text: &'a str,
    /// Idempotency key.
    pub key: Option<&'a str>,
}

/// The cluster: every node publishes through it, and hears every node's messages from it.
pub trait Broker: Send + Sync + Debug {
    /// Numbers, stores and fans out a message to every node (this one included, through
    /// `run`); the answer comes once it is stored. Refused at once when the cluster is
    /// unreachable or behind.
    fn publish(&self, message: Outgoing<'_>) -> Result<Pending, StoreError>;

    /// A room was just created here: check it for messages published while it loaded.
    fn watch(&self, room: &Arc<str>);

    /// True while this node hears the cluster.
    fn is_up(&self) -> bool;

    /// Why the cluster refuses this node's writes, while it does (the last write was
    /// refused); `None` while writes go through.
    fn refusing_writes(&self) -> Option<String>;

    /// This node's id in the cluster, which message origins and presence entries carry.
    fn node(&self) -> &str;

    /// Hears the cluster until `stop`, handing each message to `handler`; reconnects by
    /// itself and catches every local room up after a gap. Run once per node.
    fn run(
        self: Arc<Self>,
        handler: Arc<dyn Handler>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()>;

    /// Sends what is queued and leaves the cluster.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// Who is in a room on other nodes.
pub trait Presence: Send + Sync + Debug {
    /// Tells the other nodes of a local member's join, leave or nick change (best effort).
    fn announce(&self, event: &Event, transport: Transport, sub: SubscriberId);

    /// Members of `room` on other live nodes.
    fn members<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<MemberInfo>, StoreError>>;
}

/// What a broker calls back into; the hub implements it. Rooms are named, never handed out.
pub trait Handler: Send + Sync {
    /// The rooms this node holds.
    fn rooms(&self) -> Vec<Arc<str>>;

    /// A local room's epoch and last sequence; `None` if nobody uses it here.
    fn position(&self, room: &str) -> Option<(u32, u64)>;

    /// A message numbered by the cluster, for room `room` if it is here. With `jump`, one
    /// further ahead than the next is taken too (catching up after retention dropped what
    /// this node missed). `here`: it was published through this node, which alone tells
    /// the observer (webhooks), so a cluster tells each message once.
    fn apply(&self, room: &str, event: Arc<Event>, jump: bool, here: bool) -> Applied;

    /// A presence change from another node, for the local members of `room`.
    fn deliver(&self, room: &str, event: Arc<Event>);

    /// Starts room `room` over, empty, in the cluster's `epoch`.
    fn restart(&self, room: &str, epoch: u32, history: Box<dyn History>);
}

/// What `Handler::apply` did with a message from the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Delivered, already seen, or the room is not here.
    Done,
    /// Messages before it are missing here; read them from the store first.
    Behind,
    /// It belongs to another epoch than the room's: the room restarts in that epoch.
    OtherEpoch,
}

/// A member as seen by presence queries.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    /// The member's nick in this room.
    pub nick: Arc<str>,
    /// The transport it is connected through.
    pub transport: Transport,
}
