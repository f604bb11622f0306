//! The in-memory `History`: a ring of the room's recent messages, trimmed by count and age.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{After, Durability, History, Retention, StoreError};
use crate::event::{Event, now_ms};

/// Recent messages of one room, oldest first.
#[derive(Debug)]
pub struct MemoryHistory {
    retention: Retention,
    events: VecDeque<Arc<Event>>,
    /// The highest sequence number ever dropped by retention; a reader asking for anything
    /// at or below it has a gap.
    dropped_up_to: u64,
}

impl MemoryHistory {
    /// An empty history.
    pub fn new(retention: Retention) -> Self {
        Self {
            retention,
            events: VecDeque::new(),
            dropped_up_to: 0,
        }
    }

    /// Puts already stored messages (oldest first) into an empty history.
    pub fn preload(&mut self, events: impl IntoIterator<Item = Arc<Event>>) {
        self.events.extend(events);
        // Whatever came before the oldest kept message was dropped by retention.
        if let Some(first) = self.events.front().and_then(|e| e.id) {
            self.dropped_up_to = self.dropped_up_to.max(first.seq.saturating_sub(1));
        }
        self.trim();
    }

    /// Appends without the `History` result, for backends that wrap this one as a cache.
    pub fn push(&mut self, event: &Arc<Event>) {
        self.events.push_back(Arc::clone(event));
        self.trim();
    }

    fn trim(&mut self) {
        let oldest_ok = now_ms().saturating_sub(self.retention.max_age.as_millis() as u64);
        while let Some(front) = self.events.front() {
            let too_many = self.events.len() > self.retention.max_messages;
            if !too_many && front.time_ms >= oldest_ok {
                break;
            }
            self.dropped_up_to = front.id.map_or(self.dropped_up_to, |id| id.seq);
            self.events.pop_front();
        }
    }
}

fn seq(event: &Event) -> u64 {
    event.id.map_or(0, |id| id.seq)
}

impl History for MemoryHistory {
    fn append(&mut self, event: &Arc<Event>) -> Result<Durability, StoreError> {
        self.push(event);
        Ok(Durability::Now)
    }

    fn after(&mut self, after: u64, limit: usize) -> After {
        self.trim();
        let start = self.events.partition_point(|e| seq(e) <= after);
        let events: Vec<_> = self
            .events
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect();
        After {
            gap: after < self.dropped_up_to,
            more: self.events.len() - start > events.len(),
            events,
        }
    }

    fn last(&mut self, n: usize) -> Vec<Arc<Event>> {
        self.trim();
        let skip = self.events.len().saturating_sub(n);
        self.events.iter().skip(skip).cloned().collect()
    }

    fn len(&mut self) -> usize {
        self.trim();
        self.events.len()
    }
}
