//! What flows through the hub: an `Event` (a message or a presence change) and its id.
//!
//! An event is built once per publish and shared by every subscriber as `Arc<Event>`. Each wire
//! format is encoded the first time a subscriber of that format needs it and cached in a
//! `OnceLock`, so a broadcast to 10,000 TCP clients encodes its line once.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use super::SubscriberId;

/// A message id: its room's sequence number, and the room's epoch, which changes whenever the
/// room's history was lost (a restart on the memory store, say), so that a client holding an id
/// from another epoch knows its gap is unknown rather than empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    /// Identifies one unbroken run of the room's sequence.
    pub epoch: u32,
    /// The room's sequence number, starting at 1.
    pub seq: u64,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{}", self.epoch, self.seq)
    }
}

/// Why a `MessageId` string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid message id {0:?}: expected EPOCH-SEQ, e.g. 1a2b3c4d-17")]
pub struct BadMessageId(pub String);

impl MessageId {
    /// Parses an optional cursor, as given in a `since` parameter.
    pub fn parse_opt(text: Option<&str>) -> Result<Option<MessageId>, BadMessageId> {
        text.map(str::parse).transpose()
    }
}

impl std::str::FromStr for MessageId {
    type Err = BadMessageId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMessageId(s.to_owned());
        let (epoch, seq) = s.split_once('-').ok_or_else(bad)?;
        if epoch.is_empty() || epoch.len() > 8 {
            return Err(bad());
        }
        Ok(MessageId {
            epoch: u32::from_str_radix(epoch, 16).map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// What kind of event this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A chat message; the only kind with an id.
    Message,
    /// Someone joined the room.
    Join,
    /// Someone left the room; `reason` says why when it was not their choice.
    Leave {
        /// For example "slow consumer" or "timed out".
        reason: Option<&'static str>,
    },
    /// Someone changed nick; `nick` is the new one.
    Nick {
        /// The nick they had before.
        old: Arc<str>,
    },
}

/// One event in one room, shared by all its receivers.
#[derive(Debug)]
pub struct Event {
    /// Message, join, leave or nick change.
    pub kind: EventKind,
    /// The room it happened in.
    pub room: Arc<str>,
    /// Set for messages only.
    pub id: Option<MessageId>,
    /// Who sent it, or who joined/left.
    pub nick: Arc<str>,
    /// The message text; empty for presence events.
    pub text: Box<str>,
    /// Milliseconds since the Unix epoch when the hub accepted it.
    pub time_ms: u64,
    /// The subscriber that caused it, so transports that do not echo can skip their own.
    pub origin: Option<SubscriberId>,
    /// The `nick: text\n` line for TCP and UDP, encoded on first use.
    line: OnceLock<Bytes>,
    /// The `nick: text` WebSocket text frame payload of the seed's chat, encoded on first use.
    plain: OnceLock<Bytes>,
    /// The JSON envelope of the structured protocol, encoded on first use.
    json: OnceLock<Bytes>,
    /// The Server-Sent Events block (`id:`, `event:`, `data:`), encoded on first use.
    sse: OnceLock<Bytes>,
}

impl Event {
    /// A new event stamped with the current time.
    pub fn new(
        kind: EventKind,
        room: Arc<str>,
        id: Option<MessageId>,
        nick: Arc<str>,
        text: Box<str>,
        origin: Option<SubscriberId>,
    ) -> Self {
        Self {
            kind,
            room,
            id,
            nick,
            text,
            time_ms: now_ms(),
            origin,
            line: OnceLock::new(),
            plain: OnceLock::new(),
            json: OnceLock::new(),
            sse: OnceLock::new(),
        }
    }

    /// A message read back from storage, with its original id and time.
    pub fn stored(
        room: Arc<str>,
        id: MessageId,
        nick: Arc<str>,
        text: Box<str>,
        time_ms: u64,
    ) -> Self {
        Self {
            time_ms,
            ..Self::new(EventKind::Message, room, Some(id), nick, text, None)
        }
    }

    /// The event as newline-terminated text lines, the TCP and UDP wire form.
    ///
    /// A message with several lines of text becomes one `nick: line` per line, so a
    /// line-oriented client never sees an unattributed line.
    pub fn line(&self) -> &Bytes {
        self.line.get_or_init(|| {
            let mut out = BytesMut::with_capacity(self.nick.len() + self.text.len() + 32);
            match &self.kind {
                EventKind::Message => {
                    for part in self.text.split('\n') {
                        let part = part.strip_suffix('\r').unwrap_or(part);
                        out.put_slice(self.nick.as_bytes());
                        out.put_slice(b": ");
                        out.put_slice(part.as_bytes());
                        out.put_u8(b'\n');
                    }
                }
                EventKind::Join => {
                    out.put_slice(format!("* {} joined {}\n", self.nick, self.room).as_bytes())
                }
                EventKind::Leave { reason: None } => {
                    out.put_slice(format!("* {} left {}\n", self.nick, self.room).as_bytes())
                }
                EventKind::Leave {
                    reason: Some(reason),
                } => out.put_slice(
                    format!("* {} left {} ({reason})\n", self.nick, self.room).as_bytes(),
                ),
                EventKind::Nick { old } => {
                    out.put_slice(format!("* {old} is now known as {}\n", self.nick).as_bytes())
                }
            }
            out.freeze()
        })
    }
}

impl Event {
    /// The TCP/UDP line prefixed with the message id, `[EPOCH-SEQ] nick: text\n`, as shown
    /// in replays so that a line client can resume with `/since`. Not cached: replays are
    /// per client, not the broadcast path.
    pub fn line_with_id(&self) -> Bytes {
        match self.id {
            Some(id) => {
                let mut out = BytesMut::with_capacity(self.line().len() + 24);
                for line in self.line().split_inclusive(|&b| b == b'\n') {
                    out.put_slice(format!("[{id}] ").as_bytes());
                    out.put_slice(line);
                }
                out.freeze()
            }
            None => self.line().clone(),
        }
    }

    /// The payload of a plain WebSocket text frame: `nick: text` as the seed's chat sends it,
    /// and `* nick joined room` style notices for presence.
    pub fn plain(&self) -> &Bytes {
        self.plain.get_or_init(|| match self.kind {
            EventKind::Message => {
                let mut out = BytesMut::with_capacity(self.nick.len() + 2 + self.text.len());
                out.put_slice(self.nick.as_bytes());
                out.put_slice(b": ");
                out.put_slice(self.text.as_bytes());
                out.freeze()
            }
            _ => {
                let line = self.line();
                line.slice(..line.len() - 1)
            }
        })
    }

    /// The event as one Server-Sent Events block: `id:` (messages only, so that a browser's
    /// `Last-Event-ID` is always a message id), `event:` naming the kind, and the JSON
    /// envelope as `data:` (JSON has no raw newlines, so it is one line).
    pub fn sse(&self) -> &Bytes {
        self.sse.get_or_init(|| {
            let json = self.json();
            let mut out = BytesMut::with_capacity(json.len() + 64);
            if let Some(id) = self.id {
                out.put_slice(format!("id: {id}\n").as_bytes());
            }
            let kind = match self.kind {
                EventKind::Message => "message",
                EventKind::Join => "join",
                EventKind::Leave { .. } => "leave",
                EventKind::Nick { .. } => "nick",
            };
            out.put_slice(format!("event: {kind}\ndata: ").as_bytes());
            out.put_slice(json);
            out.put_slice(b"\n\n");
            out.freeze()
        })
    }

    /// The JSON envelope of the structured protocol (see docs/PROTOCOL.md).
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            let mut v = serde_json::json!({
                "room": &*self.room,
                "nick": &*self.nick,
                "time": self.time_ms,
            });
            match &self.kind {
                EventKind::Message => {
                    v["type"] = "message".into();
                    v["id"] = self.id.map(|id| id.to_string()).into();
                    v["text"] = (&*self.text).into();
                }
                EventKind::Join => v["type"] = "join".into(),
                EventKind::Leave { reason } => {
                    v["type"] = "leave".into();
                    if let Some(reason) = reason {
                        v["reason"] = (*reason).into();
                    }
                }
                EventKind::Nick { old } => {
                    v["type"] = "nick".into();
                    v["old"] = (&**old).into();
                }
            }
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        })
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips() {
        let id = MessageId {
            epoch: 0x1a2b,
            seq: 42,
        };
        assert_eq!(id.to_string(), "00001a2b-42");
        assert_eq!("00001a2b-42".parse::<MessageId>(), Ok(id));
        assert!("42".parse::<MessageId>().is_err());
        assert!("zz-1".parse::<MessageId>().is_err());
        assert!("123456789-1".parse::<MessageId>().is_err());
    }

    #[test]
    fn plain_and_json_forms() {
        let id = MessageId { epoch: 1, seq: 2 };
        let ev = Event::new(
            EventKind::Message,
            "lobby".into(),
            Some(id),
            "ann".into(),
            "hi \"you\"".into(),
            None,
        );
        assert_eq!(&ev.plain()[..], b"ann: hi \"you\"");
        let v: serde_json::Value = serde_json::from_slice(ev.json()).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["id"], "00000001-2");
        assert_eq!(v["text"], "hi \"you\"");
        let leave = Event::new(
            EventKind::Leave {
                reason: Some("slow consumer"),
            },
            "lobby".into(),
            None,
            "bob".into(),
            "".into(),
            None,
        );
        assert_eq!(&leave.plain()[..], b"* bob left lobby (slow consumer)");
        let v: serde_json::Value = serde_json::from_slice(leave.json()).unwrap();
        assert_eq!(v["reason"], "slow consumer");
    }

    #[test]
    fn multi_line_text_is_attributed_per_line() {
        let ev = Event::new(
            EventKind::Message,
            "lobby".into(),
            None,
            "ann".into(),
            "one\r\ntwo".into(),
            None,
        );
        assert_eq!(&ev.line()[..], b"ann: one\nann: two\n");
    }
}
