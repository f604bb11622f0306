//! What flows through the hub and the store: an `Event` (a message, a presence change or a
//! direct message), its `MessageId`, and the reasons a member leaves.
//!
//! This module sits below both `hub/` and `store/`, so that neither imports the other. An event
//! is built once per publish and shared by every subscriber as `Arc<Event>`. Each wire form
//! (see `crate::wire`) is encoded the first time a subscriber of that form needs it and cached
//! in the event (`Event::encoded`), so a broadcast to 10,000 TCP clients encodes its line once.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// A subscriber's id, unique within one hub.
pub type SubscriberId = u64;

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
        // Strictly `HEX{1,8}-DIGITS{1,19}`: no sign, no spaces (which `parse` would allow),
        // and never a sequence number too big for the counter.
        let digits = |t: &str, max: usize, hex: bool| {
            (1..=max).contains(&t.len())
                && t.bytes().all(|b| {
                    if hex {
                        b.is_ascii_hexdigit()
                    } else {
                        b.is_ascii_digit()
                    }
                })
        };
        if !digits(epoch, 8, true) || !digits(seq, 19, false) {
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
        /// For example `Disconnect::SlowConsumer`; `None` when they left by themselves.
        reason: Option<Disconnect>,
    },
    /// Someone changed nick; `nick` is the new one.
    Nick {
        /// The nick they had before.
        old: Arc<str>,
    },
    /// A message from `nick` to one user, `to`; never stored, never part of a room.
    Direct {
        /// The nick it was sent to.
        to: Arc<str>,
    },
    /// Joins and leaves too many to tell one by one (a storm), summed up; the member list
    /// is then read from presence.
    Crowd {
        /// How many joined since the last presence event told.
        joined: u32,
        /// How many left.
        left: u32,
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
    /// How far the sender's name can be trusted.
    pub sender: Sender,
    /// Each wire form, encoded on first use (indexed by `Form`).
    encoded: [OnceLock<Bytes>; Form::COUNT],
}

/// The shared wire forms an event is cached in; `crate::wire` says how each is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `nick: text\n` lines, for TCP and UDP.
    Line,
    /// `nick: text`, the seed's WebSocket text frame.
    Plain,
    /// The structured protocol's JSON envelope.
    Json,
    /// A Server-Sent Events block.
    Sse,
    /// An MQTT 3.1.1 PUBLISH at QoS 0.
    Mqtt,
    /// An MQTT 5.0 PUBLISH at QoS 0 (with the id as a user property).
    Mqtt5,
    /// A gRPC `switchboard.v1.Event` message (protobuf, without the gRPC frame header).
    Grpc,
    /// `Plain` as a whole WebSocket text frame, header included: a server's frames are
    /// unmasked, so every uncompressed connection writes the same bytes.
    PlainFrame,
    /// `Json` as a whole WebSocket text frame.
    JsonFrame,
}

impl Form {
    const COUNT: usize = 9;
}

impl Event {
    /// What the event costs a queue that holds it, in bytes: its text, names and a fixed
    /// allowance for the framing every wire form adds. Bounds count this, not the encoding.
    pub fn weight(&self) -> usize {
        self.text.len() + self.nick.len() + self.room.len() + 64
    }

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
            sender: Sender::Open,
            encoded: Default::default(),
        }
    }

    /// The event with its sender's standing.
    pub fn with_sender(mut self, sender: Sender) -> Self {
        self.sender = sender;
        self
    }

    /// The event in wire form `form`, made by `encode` the first time it is asked for.
    pub fn encoded(&self, form: Form, encode: impl FnOnce(&Event) -> Bytes) -> &Bytes {
        self.encoded[form as usize].get_or_init(|| encode(self))
    }

    /// A direct message from `from` to `to`.
    pub fn direct(from: Arc<str>, to: Arc<str>, text: &str, origin: SubscriberId) -> Self {
        Self::new(
            EventKind::Direct { to },
            Arc::from(""),
            None,
            from,
            text.into(),
            Some(origin),
        )
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
}

/// How far a message's name can be trusted; every transport shows the difference
/// (`crate::wire`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sender {
    /// The server verifies nobody (no auth configured): names are as given, shown plain.
    #[default]
    Open,
    /// A nick nobody vouched for, on a server that verifies tokens: shown as `~nick`.
    Anonymous,
    /// A backend holding an API key, which may publish under any name.
    Backend,
    /// A verified token's subject (`sub`); the nick is its display name.
    User(Arc<str>),
}

impl Sender {
    /// The one-column stored form: `None` for open, `~` anonymous, `!` backend, `=SUB` user.
    pub fn to_stored(&self) -> Option<String> {
        match self {
            Sender::Open => None,
            Sender::Anonymous => Some("~".to_owned()),
            Sender::Backend => Some("!".to_owned()),
            Sender::User(sub) => Some(format!("={sub}")),
        }
    }

    /// Reads `to_stored`'s form back; anything unknown is `Open`.
    pub fn from_stored(stored: Option<&str>) -> Sender {
        match stored {
            Some("~") => Sender::Anonymous,
            Some("!") => Sender::Backend,
            Some(s) if s.len() > 1 && s.starts_with('=') => Sender::User(s[1..].into()),
            _ => Sender::Open,
        }
    }
}

/// A message's sender: the nick shown and how far it can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// The name shown.
    pub nick: Arc<str>,
    /// Its standing.
    pub sender: Sender,
}

impl From<&str> for Author {
    fn from(nick: &str) -> Self {
        Arc::<str>::from(nick).into()
    }
}

impl From<Arc<str>> for Author {
    fn from(nick: Arc<str>) -> Self {
        Author {
            nick,
            sender: Sender::Open,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Which transport a subscriber arrived on; shown in presence and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Line-oriented TCP chat.
    Tcp,
    /// UDP datagram chat.
    Udp,
    /// WebSocket.
    Ws,
    /// Server-Sent Events.
    Sse,
    /// MQTT, over TCP or WebSocket.
    Mqtt,
    /// gRPC streams (`Subscribe`, `Chat`).
    Grpc,
}

impl Transport {
    /// Whether its clients are told of joins, leaves and renames. MQTT has no such packet:
    /// rooms skip its members for presence, so that a storm of leaves (a thousand wildcard
    /// subscribers closing at once) costs MQTT members nothing.
    pub fn hears_presence(self) -> bool {
        !matches!(self, Transport::Mqtt)
    }

    /// Lowercase name for logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Mqtt => "mqtt",
            Transport::Grpc => "grpc",
        }
    }

    /// The transport called `name` (as `as_str` writes it).
    pub fn parse(name: &str) -> Option<Transport> {
        [
            Transport::Tcp,
            Transport::Udp,
            Transport::Ws,
            Transport::Sse,
            Transport::Mqtt,
            Transport::Grpc,
        ]
        .into_iter()
        .find(|t| t.as_str() == name)
    }
}

/// Why a member left or was disconnected when it was not its own choice. Every transport
/// renders it its own way (`crate::wire::goodbye`, close codes); rooms see `as_str`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// Its outbound queue overflowed: it reads slower than its rooms publish.
    SlowConsumer,
    /// The server is shutting down.
    Shutdown,
    /// It sent nothing for longer than the idle timeout (TCP) or the member TTL (UDP).
    TimedOut,
    /// Its token expired and was not refreshed in time.
    TokenExpired,
    /// An operator removed it (`POST /admin/users/{nick}/kick`, `POST /admin/rooms/{room}/close`).
    Kicked,
    /// It kept publishing after being told to slow down (`limits.flood_refusals`).
    Flooding,
    /// A new connection took over its MQTT client id.
    Replaced,
}

impl Disconnect {
    const ALL: [Disconnect; 7] = [
        Disconnect::SlowConsumer,
        Disconnect::Shutdown,
        Disconnect::TimedOut,
        Disconnect::TokenExpired,
        Disconnect::Kicked,
        Disconnect::Flooding,
        Disconnect::Replaced,
    ];

    /// The reason as said to the client and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Disconnect::SlowConsumer => "slow consumer",
            Disconnect::Shutdown => "server shutting down",
            Disconnect::TimedOut => "timed out",
            Disconnect::TokenExpired => "token expired",
            Disconnect::Kicked => "removed by an operator",
            Disconnect::Flooding => "publishing too fast",
            Disconnect::Replaced => "replaced by a new connection",
        }
    }

    /// The reason called `text` (as `as_str` writes it), e.g. from another node.
    pub fn parse(text: &str) -> Option<Disconnect> {
        Self::ALL.into_iter().find(|d| d.as_str() == text)
    }
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
    fn senders_round_trip_through_storage() {
        for s in [
            Sender::Open,
            Sender::Anonymous,
            Sender::Backend,
            Sender::User("=x~".into()),
        ] {
            assert_eq!(Sender::from_stored(s.to_stored().as_deref()), s);
        }
    }

    #[test]
    fn disconnect_reasons_round_trip() {
        for d in Disconnect::ALL {
            assert_eq!(Disconnect::parse(d.as_str()), Some(d));
        }
        assert_eq!(Disconnect::parse("bored"), None);
    }
}
