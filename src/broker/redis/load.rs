//! Loading a room: its counter and retained messages, read atomically when the hub creates
//! it, into the memory cache every read is served from.

use std::sync::Arc;

use super::writer::RedisWriter;
use super::{RedisCluster, sync_connect};
use crate::event::{Event, MessageId, Sender};
use crate::store::{Cached, MemoryHistory, RecentKeys, RoomInit};

pub(super) type StreamEntry = (String, Vec<(String, String)>);
pub(super) type LoadAnswer = ((Option<String>, Option<String>), Vec<StreamEntry>);

impl RedisCluster {
    /// The commands that load a room: its counter and its newest retained messages, read
    /// atomically. A room Redis does not know gets its epoch from the hub; the first publish
    /// writes it to Redis, and any node that picked another one reloads then.
    pub(super) fn load_pipe(&self, room: &str) -> redis::Pipeline {
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
    pub(super) fn parse_load(
        &self,
        room: &str,
        answer: LoadAnswer,
    ) -> (Option<u32>, u64, MemoryHistory) {
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
    pub(super) fn room(self: &Arc<Self>, room: &str) -> RoomInit {
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
            // Redis checks keys itself, in the `STORE` script.
            keys: RecentKeys::default(),
        }
    }
}

pub(super) fn entry_event(
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
    let event = Event::stored(
        Arc::clone(room),
        MessageId { epoch, seq },
        field("n")?.into(),
        field("t").unwrap_or("").into(),
        field("ms").and_then(|m| m.parse().ok()).unwrap_or(0),
    );
    Some(Arc::new(event.with_sender(Sender::from_stored(
        field("u").filter(|u| !u.is_empty()),
    ))))
}
