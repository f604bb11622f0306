//! `Reply`: what a session answers its own client, in no wire form.
//!
//! `Session` queues a reply as `Delivery::Reply`; the connection's writer renders it in its
//! dialect (`wire::reply`): a `* …` line or an `ERR …` line for chat, a JSON frame for the
//! structured protocol, a protobuf `Event` on gRPC, nothing on MQTT (whose refusals are
//! reason codes its transport gives). So the session never names a wire form, and a new
//! dialect is one renderer.

use std::sync::Arc;

use serde::Serialize;

use crate::event::{MessageId, Transport};

/// Why a request was refused, in the session's terms. Each transport maps it once: the
/// structured protocol's `code` (snake case), a chat `ERR` line, an MQTT reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid JSON or not a known frame.
    BadFrame,
    /// A room or nick name broke the naming rules.
    BadName,
    /// Publish or leave for a room the connection has not joined, or publish with no room
    /// while several are joined.
    NotJoined,
    /// A direct message named a nick nobody holds.
    NoSuchUser,
    /// The message could not be stored (storage busy or failing); it was not published.
    Unavailable,
    /// A token was refused (bad, expired, or none where one is needed).
    Unauthorized,
    /// The connection's identity may not do this in this room.
    Forbidden,
    /// Publishing faster than the limits allow; the message was not sent.
    RateLimited,
    /// A server limit (rooms, members, reply size) refused the request.
    LimitReached,
}

impl ErrorCode {
    /// The code as the structured protocol writes it (`bad_frame`, `forbidden`…).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::BadName => "bad_name",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::NoSuchUser => "no_such_user",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitReached => "limit_reached",
        }
    }
}

/// A client's correlation id, echoed in the answer to its request.
pub type Ref = Option<Box<str>>;

/// One answer to one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A chat client's first line: where it is, or that it must sign in first (`room` none).
    Greeting {
        /// Its nick.
        nick: Arc<str>,
        /// The room it was put in.
        room: Option<Arc<str>>,
    },
    /// A structured client's first frame: who it is and where.
    Welcome {
        /// Its nick.
        nick: Arc<str>,
        /// The verified user, when signed in.
        user: Option<Arc<str>>,
        /// The room it asked for ("" for none).
        room: Arc<str>,
    },
    /// A join was done: the members, and where the live stream starts.
    Joined {
        /// Correlation id.
        reference: Ref,
        /// The room.
        room: Arc<str>,
        /// Members now in it.
        members: Vec<Arc<str>>,
        /// Resume from here if no message of the room has arrived yet.
        cursor: MessageId,
    },
    /// A chat client moved to `room`, which now has `count` members.
    Moved {
        /// The room.
        room: Arc<str>,
        /// Members now in it.
        count: usize,
    },
    /// Asked to go where it already is.
    AlreadyIn(Arc<str>),
    /// A leave was done.
    Left {
        /// Correlation id.
        reference: Ref,
        /// The room.
        room: Arc<str>,
    },
    /// A publish is durable.
    Ack {
        /// Correlation id.
        reference: Ref,
        /// The room.
        room: Arc<str>,
        /// The message's id.
        id: MessageId,
        /// The idempotency key was seen before; nothing new was published.
        duplicate: bool,
    },
    /// A direct message was handed to its recipient's connections.
    Sent {
        /// Correlation id.
        reference: Ref,
        /// The recipient's nick.
        to: Box<str>,
        /// What was sent (chat echoes it as `you -> NICK: …`).
        text: Box<str>,
    },
    /// A token was accepted.
    Authenticated {
        /// Correlation id.
        reference: Ref,
        /// The token's subject.
        user: Arc<str>,
        /// The name shown to others.
        nick: Arc<str>,
        /// The token's expiry, seconds since the Unix epoch.
        expires: u64,
        /// The rooms the connection is in now.
        rooms: Vec<Arc<str>>,
    },
    /// The nick is now this one.
    Renamed(Arc<str>),
    /// Asked for the nick it already has.
    SameNick(Arc<str>),
    /// A room's members and how each is connected.
    Who {
        /// The room.
        room: Arc<str>,
        /// Nick and transport of each member.
        members: Vec<(Arc<str>, Transport)>,
    },
    /// A page of the room list: names with member counts, and where the next page starts.
    Rooms {
        /// The rooms on this page.
        rooms: Vec<(Arc<str>, usize)>,
        /// The name to ask after for the next page.
        next: Option<Arc<str>>,
    },
    /// A history replay of `room` is over.
    HistoryEnd(Arc<str>),
    /// The command list.
    Help,
    /// The client asked to leave.
    Bye,
    /// Quiet for `quiet` seconds: answer within `grace` seconds or be closed.
    Idle {
        /// Seconds without input so far.
        quiet: u64,
        /// Seconds left to answer.
        grace: u64,
    },
    /// A request was refused; the connection stays open.
    Refused {
        /// Correlation id.
        reference: Ref,
        /// What kind of refusal.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

impl Reply {
    /// A refusal.
    pub fn refused(reference: Option<&str>, code: ErrorCode, message: impl ToString) -> Self {
        Reply::Refused {
            reference: reference.map(Box::from),
            code,
            message: message.to_string(),
        }
    }

    /// What it costs a queue, in bytes (`Delivery::weight`): about the size of its largest
    /// rendering (the fixed words of a line or a frame are within the 128), counted before
    /// it is rendered.
    pub fn weight(&self) -> usize {
        let names = |v: &[Arc<str>]| v.iter().map(|n| n.len() + 8).sum::<usize>();
        128 + match self {
            Reply::Greeting { nick, room } => nick.len() + room.as_ref().map_or(0, |r| r.len()),
            Reply::Welcome { nick, user, room } => {
                nick.len() + user.as_ref().map_or(0, |u| u.len()) + room.len()
            }
            Reply::Joined { room, members, .. } => room.len() + names(members),
            Reply::Sent { to, text, .. } => 2 * (to.len() + text.len()),
            Reply::Authenticated {
                user, nick, rooms, ..
            } => user.len() + nick.len() + names(rooms),
            Reply::Who { room, members } => {
                room.len() + members.iter().map(|(n, _)| n.len() + 16).sum::<usize>()
            }
            Reply::Rooms { rooms, next } => {
                rooms.iter().map(|(n, _)| n.len() + 24).sum::<usize>()
                    + next.as_ref().map_or(0, |n| n.len())
            }
            // The command list is about 600 bytes; `wire::reply`'s tests hold it to this.
            Reply::Help => 1024,
            Reply::Refused { message, .. } => message.len(),
            Reply::Moved { room, .. }
            | Reply::AlreadyIn(room)
            | Reply::Left { room, .. }
            | Reply::Ack { room, .. }
            | Reply::Renamed(room)
            | Reply::SameNick(room)
            | Reply::HistoryEnd(room) => room.len(),
            Reply::Bye | Reply::Idle { .. } => 0,
        }
    }
}
