//! Message history behind the `History` seam: what a room remembers so that clients can come
//! back and get exactly what they missed.
//!
//! A room owns one `History` and writes to it under its own lock, in sequence order, so a
//! snapshot taken under that lock lines up exactly with the live stream that follows it.

mod keep;
mod lock;
mod memory;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

pub use keep::{Keep, Table};
pub use lock::DirLock;
pub use memory::MemoryHistory;
pub use sqlite::SqliteStore;

use crate::event::{Event, MessageId};

/// Retention limits every backend enforces.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Most messages kept per room.
    pub max_messages: usize,
    /// Oldest message kept, by age.
    pub max_age: Duration,
    /// How long a durable store remembers a publish's idempotency key (whatever retention
    /// does to the message itself).
    pub key_window: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_messages: 1_000,
            max_age: Duration::from_secs(24 * 60 * 60),
            key_window: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// What a history holds after a given sequence number.
#[derive(Debug, Clone)]
pub struct After {
    /// The retained messages after the cursor, oldest first, at most the asked limit.
    pub events: Vec<Arc<Event>>,
    /// True when messages after the cursor were dropped by retention before this read, so
    /// `events` does not start right after the cursor.
    pub gap: bool,
    /// True when more messages follow the returned ones (the limit cut the list).
    pub more: bool,
}

/// Why a message could not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store's write queue is full: the disk is behind. The message was not published.
    #[error("storage is busy; try again")]
    Busy,
    /// The store has shut down.
    #[error("storage is closed")]
    Closed,
    /// Writing failed; the text says why.
    #[error("storage failed: {0}")]
    Failed(String),
    /// The shared store (Redis) cannot be reached; the text says why. Nothing was published.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// Makes the data directory `dir` if it is missing.
pub(crate) fn make_dir(dir: &std::path::Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StoreError::Failed(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })
}

/// When an appended message is durable.
#[derive(Debug)]
pub enum Durability {
    /// Already (the memory store has nothing more to do).
    Now,
    /// Once this resolves with `Ok`; the batch it was in has committed.
    Pending(oneshot::Receiver<Result<(), StoreError>>),
}

impl Durability {
    /// Waits until the message is durable.
    pub async fn wait(self) -> Result<(), StoreError> {
        match self {
            Durability::Now => Ok(()),
            Durability::Pending(rx) => rx.await.unwrap_or(Err(StoreError::Closed)),
        }
    }
}

/// What a room starts from: its history and where its sequence stands.
#[derive(Debug)]
pub struct RoomInit {
    /// The room's history, already holding what was kept.
    pub history: Box<dyn History>,
    /// The room's epoch if it has one already; otherwise the hub picks a new one.
    pub epoch: Option<u32>,
    /// The last sequence number handed out in this epoch.
    pub last_seq: u64,
    /// The idempotency keys the store remembers for the room.
    pub keys: RecentKeys,
}

/// Idempotency keys a room holds in memory at most.
pub const KEYS_HELD: usize = 4096;

/// The idempotency keys a room starts with, so that a retry after a restart is known without
/// asking the store on every keyed publish.
#[derive(Debug, Default)]
pub struct RecentKeys {
    /// The newest keys within the store's key window and the ids they got, oldest first, at
    /// most `KEYS_HELD`.
    pub keys: Vec<(Box<str>, MessageId)>,
    /// True when the store holds more keys for the room than `keys`: a key missing from the
    /// room's memory must then be asked of the store (`History::find_key`).
    pub partial: bool,
}

/// One room's history.
pub trait History: Send + Sync + std::fmt::Debug {
    /// Stores a message. Called under the room lock in sequence order; must not block. An
    /// error means the message must not be published.
    fn append(&mut self, event: &Arc<Event>) -> Result<Durability, StoreError>;

    /// Stores a message published with an idempotency key; a durable store keeps the key
    /// with it, in the same transaction, so that `find_key` finds it after a restart.
    fn append_keyed(&mut self, event: &Arc<Event>, key: &str) -> Result<Durability, StoreError> {
        let _ = key;
        self.append(event)
    }

    /// The id a message published with `key` got, if the store remembers it (a durable
    /// store, within its key window). The room asks only for a key its memory does not hold
    /// while its memory is known to be partial (`RecentKeys::partial`, or keys forgotten
    /// past `KEYS_HELD`).
    fn find_key(&mut self, key: &str) -> Option<MessageId> {
        let _ = key;
        None
    }

    /// Keeps a message that is already stored elsewhere (numbered and written by the
    /// cluster), for reads. Called under the room lock in sequence order.
    fn record(&mut self, event: &Arc<Event>) {
        if let Err(error) = self.append(event) {
            tracing::warn!(%error, "message not kept in history");
        }
    }

    /// Messages with a sequence number above `seq`, oldest first, at most `limit`.
    fn after(&mut self, seq: u64, limit: usize) -> After;

    /// The last `n` messages, oldest first.
    fn last(&mut self, n: usize) -> Vec<Arc<Event>>;

    /// Messages held now (after dropping expired ones).
    fn len(&mut self) -> usize;

    /// True when nothing is held.
    fn is_empty(&mut self) -> bool {
        self.len() == 0
    }
}

/// Where a durable backend sends a room's new messages (SQLite's writer thread, Redis's
/// writer task). It must not block: it queues the write and says when it is done.
pub(crate) trait Writer: Send + Sync + std::fmt::Debug {
    fn write(&mut self, event: &Arc<Event>) -> Result<Durability, StoreError>;

    /// `write`, keeping the idempotency key with the message where the backend can.
    fn write_keyed(&mut self, event: &Arc<Event>, key: &str) -> Result<Durability, StoreError> {
        let _ = key;
        self.write(event)
    }

    /// See `History::find_key`.
    fn find_key(&mut self, key: &str) -> Option<MessageId> {
        let _ = key;
        None
    }
}

/// A durable backend's room: writes go to the backend, and every read is served by the
/// retained window kept in memory next to it, so reads never wait for the backend.
#[derive(Debug)]
pub(crate) struct Cached<W> {
    pub(crate) cache: MemoryHistory,
    pub(crate) writer: W,
}

impl<W: Writer> History for Cached<W> {
    fn append(&mut self, event: &Arc<Event>) -> Result<Durability, StoreError> {
        let durability = self.writer.write(event)?;
        self.cache.push(event);
        Ok(durability)
    }

    fn append_keyed(&mut self, event: &Arc<Event>, key: &str) -> Result<Durability, StoreError> {
        let durability = self.writer.write_keyed(event, key)?;
        self.cache.push(event);
        Ok(durability)
    }

    fn find_key(&mut self, key: &str) -> Option<MessageId> {
        self.writer.find_key(key)
    }

    /// Already stored by whoever numbered it: only kept for reads.
    fn record(&mut self, event: &Arc<Event>) {
        self.cache.push(event);
    }

    fn after(&mut self, seq: u64, limit: usize) -> After {
        self.cache.after(seq, limit)
    }

    fn last(&mut self, n: usize) -> Vec<Arc<Event>> {
        self.cache.last(n)
    }

    fn len(&mut self) -> usize {
        self.cache.len()
    }
}

/// Makes a room's history when the room is created (or created again after being idle).
pub type HistoryFactory = Arc<dyn Fn(&str) -> RoomInit + Send + Sync>;

/// The in-memory backend: history is lost when the process ends.
pub fn memory(retention: Retention) -> HistoryFactory {
    Arc::new(move |_room| RoomInit {
        history: Box::new(MemoryHistory::new(retention)),
        epoch: None,
        last_seq: 0,
        keys: RecentKeys::default(),
    })
}
