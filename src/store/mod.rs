//! Message history behind the `History` seam: what a room remembers so that clients can come
//! back and get exactly what they missed.
//!
//! A room owns one `History` and writes to it under its own lock, in sequence order, so a
//! snapshot taken under that lock lines up exactly with the live stream that follows it.

mod memory;

use std::sync::Arc;
use std::time::Duration;

pub use memory::MemoryHistory;

use crate::hub::Event;

/// Retention limits every backend enforces.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Most messages kept per room.
    pub max_messages: usize,
    /// Oldest message kept, by age.
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_messages: 1_000,
            max_age: Duration::from_secs(24 * 60 * 60),
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

/// One room's history.
pub trait History: Send + Sync + std::fmt::Debug {
    /// Stores a message. Called under the room lock in sequence order; must not block.
    fn append(&mut self, event: &Arc<Event>);

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

/// Makes a new, empty history for a room.
pub type HistoryFactory = Arc<dyn Fn(&str) -> Box<dyn History> + Send + Sync>;

/// The in-memory backend.
pub fn memory(retention: Retention) -> HistoryFactory {
    Arc::new(move |_room| Box::new(MemoryHistory::new(retention)))
}
