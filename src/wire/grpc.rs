//! gRPC's wire form: room events, gaps and answers as `switchboard.v1.Event` protobuf messages
//! (proto/switchboard/v1/switchboard.proto), without the gRPC frame header, which the server
//! adds per stream. An event's message is encoded once (`Form::Grpc`) and shared by every
//! stream; `crate::grpc::Encoded` carries the bytes through tonic unchanged.

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::event::{Event, EventKind, Sender};
use crate::hub::Replay;
use crate::protocol::envelope::ServerFrame;

/// `Event.Kind`, by its numbers in the .proto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
enum Kind {
    /// A room message.
    Message = 1,
    /// Someone joined.
    Join = 2,
    /// Someone left.
    Leave = 3,
    /// Messages missing before a replay.
    Gap = 4,
    /// A direct message.
    Direct = 5,
    /// A nick change.
    Nick = 6,
    /// Presence in bulk.
    Crowd = 7,
    /// The first event of a stream.
    Welcome = 8,
    /// A join was done.
    Joined = 9,
    /// A leave was done.
    Left = 10,
    /// A publish was stored.
    Ack = 11,
    /// A direct message was handed over.
    Sent = 12,
    /// A request was refused.
    Error = 13,
    /// A token was accepted.
    Authenticated = 14,
    /// A notice.
    Notice = 15,
}

/// `Event`'s field numbers.
mod tag {
    pub(super) const KIND: u32 = 1;
    pub(super) const ID: u32 = 2;
    pub(super) const ROOM: u32 = 3;
    pub(super) const FROM: u32 = 4;
    pub(super) const TEXT: u32 = 5;
    pub(super) const TIME: u32 = 6;
    pub(super) const TO: u32 = 7;
    pub(super) const USER: u32 = 8;
    pub(super) const ANONYMOUS: u32 = 9;
    pub(super) const BACKEND: u32 = 10;
    pub(super) const REASON: u32 = 11;
    pub(super) const REF: u32 = 12;
    pub(super) const CODE: u32 = 13;
    pub(super) const DUPLICATE: u32 = 14;
    pub(super) const MEMBERS: u32 = 15;
    pub(super) const OLD: u32 = 16;
    pub(super) const JOINED: u32 = 17;
    pub(super) const LEFT: u32 = 18;
    pub(super) const EXPIRES: u32 = 19;
}

/// A message being written. proto3 leaves default values out, and so does this.
struct Message(BytesMut);

impl Message {
    fn new(kind: Kind, capacity: usize) -> Self {
        let mut m = Message(BytesMut::with_capacity(capacity + 16));
        m.varint(tag::KIND, kind as u64);
        m
    }

    fn varint(&mut self, tag: u32, value: u64) {
        if value != 0 {
            encode_key(tag, WireType::Varint, &mut self.0);
            encode_varint(value, &mut self.0);
        }
    }

    fn text(&mut self, tag: u32, value: &str) {
        if !value.is_empty() {
            self.repeated_text(tag, value);
        }
    }

    /// A string even when empty (an element of a repeated field).
    fn repeated_text(&mut self, tag: u32, value: &str) {
        encode_key(tag, WireType::LengthDelimited, &mut self.0);
        encode_varint(value.len() as u64, &mut self.0);
        self.0.put_slice(value.as_bytes());
    }

    fn opt_text(&mut self, tag: u32, value: Option<&str>) {
        if let Some(value) = value {
            self.text(tag, value);
        }
    }

    fn done(self) -> Bytes {
        self.0.freeze()
    }
}

/// Room for a string field of `len` bytes, with its key and length.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// An event's message.
pub(super) fn event(ev: &Event) -> Bytes {
    let capacity = field_len(tag::TEXT, ev.text.len())
        + field_len(tag::ROOM, ev.room.len())
        + field_len(tag::FROM, ev.nick.len())
        + 48;
    let kind = match &ev.kind {
        EventKind::Message => Kind::Message,
        EventKind::Join => Kind::Join,
        EventKind::Leave { .. } => Kind::Leave,
        EventKind::Nick { .. } => Kind::Nick,
        EventKind::Direct { .. } => Kind::Direct,
        EventKind::Crowd { .. } => Kind::Crowd,
    };
    let mut m = Message::new(kind, capacity);
    if let Some(id) = ev.id {
        m.text(tag::ID, &id.to_string());
    }
    m.text(tag::ROOM, &ev.room);
    m.text(tag::FROM, &ev.nick);
    m.text(tag::TEXT, &ev.text);
    m.varint(tag::TIME, ev.time_ms);
    match &ev.kind {
        EventKind::Direct { to } => m.text(tag::TO, to),
        EventKind::Leave { reason } => m.opt_text(tag::REASON, reason.map(|r| r.as_str())),
        EventKind::Nick { old } => m.text(tag::OLD, old),
        EventKind::Crowd { joined, left } => {
            m.varint(tag::JOINED, u64::from(*joined));
            m.varint(tag::LEFT, u64::from(*left));
        }
        EventKind::Message | EventKind::Join => {}
    }
    if matches!(ev.kind, EventKind::Message | EventKind::Direct { .. }) {
        match &ev.sender {
            Sender::User(sub) => m.text(tag::USER, sub),
            Sender::Anonymous => m.varint(tag::ANONYMOUS, 1),
            Sender::Backend => m.varint(tag::BACKEND, 1),
            Sender::Open => {}
        }
    }
    m.done()
}

/// The gap before a replay: its reason, and the first id kept.
pub(super) fn gap(replay: &Replay) -> Option<Bytes> {
    let gap = replay.gap?;
    let mut m = Message::new(Kind::Gap, replay.room.len() + 48);
    if let Some(first) = replay.events.first().and_then(|e| e.id) {
        m.text(tag::ID, &first.to_string());
    }
    m.text(tag::ROOM, &replay.room);
    m.text(tag::REASON, gap.as_str());
    Some(m.done())
}

/// A notice for one client.
pub(super) fn notice(text: &str) -> Bytes {
    let mut m = Message::new(Kind::Notice, text.len() + 8);
    m.text(tag::TEXT, text);
    m.done()
}

/// An answer of the structured protocol as an `Event` of the matching kind.
pub(super) fn frame(frame: &ServerFrame<'_>) -> Bytes {
    let mut m;
    match frame {
        ServerFrame::Welcome { nick, user, rooms } => {
            m = Message::new(Kind::Welcome, 64);
            m.text(tag::FROM, nick);
            m.opt_text(tag::USER, *user);
            if let Some(room) = rooms.first() {
                m.text(tag::ROOM, room);
            }
        }
        ServerFrame::Ack {
            reference,
            room,
            id,
            duplicate,
        } => {
            m = Message::new(Kind::Ack, 64);
            m.text(tag::ID, id);
            m.text(tag::ROOM, room);
            m.opt_text(tag::REF, *reference);
            m.varint(tag::DUPLICATE, u64::from(*duplicate));
        }
        ServerFrame::Sent { reference, to } => {
            m = Message::new(Kind::Sent, 64);
            m.text(tag::TO, to);
            m.opt_text(tag::REF, *reference);
        }
        ServerFrame::Joined {
            reference,
            room,
            members,
            cursor,
        } => {
            let names: usize = members.iter().map(|n| n.len() + 3).sum();
            m = Message::new(Kind::Joined, 64 + names);
            m.text(tag::ID, cursor);
            m.text(tag::ROOM, room);
            m.opt_text(tag::REF, *reference);
            for member in members {
                m.repeated_text(tag::MEMBERS, member);
            }
        }
        ServerFrame::Left { reference, room } => {
            m = Message::new(Kind::Left, 64);
            m.text(tag::ROOM, room);
            m.opt_text(tag::REF, *reference);
        }
        ServerFrame::Authenticated {
            reference,
            user,
            nick,
            expires,
        } => {
            m = Message::new(Kind::Authenticated, 64);
            m.text(tag::FROM, nick);
            m.text(tag::USER, user);
            m.opt_text(tag::REF, *reference);
            m.varint(tag::EXPIRES, *expires);
        }
        ServerFrame::Error {
            reference,
            code,
            message,
        } => {
            m = Message::new(Kind::Error, message.len() + 48);
            m.text(tag::CODE, code.as_str());
            m.text(tag::TEXT, message);
            m.opt_text(tag::REF, *reference);
        }
    }
    m.done()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MessageId;
    use crate::protocol::envelope::ErrorCode;

    #[test]
    fn a_message_is_its_fields_in_order_without_defaults() {
        let ev = Event::new(
            EventKind::Message,
            "r".into(),
            Some(MessageId { epoch: 1, seq: 2 }),
            "ann".into(),
            "hi".into(),
            None,
        );
        let bytes = event(&ev);
        let mut want = vec![0x08, 1, 0x12, 10];
        want.extend_from_slice(b"00000001-2");
        want.extend_from_slice(&[
            0x1a, 1, b'r', 0x22, 3, b'a', b'n', b'n', 0x2a, 2, b'h', b'i',
        ]);
        assert_eq!(&bytes[..want.len()], &want[..]);
        // Then the time (field 6, varint) and nothing else: an open server's sender.
        assert_eq!(bytes[want.len()], 0x30);
    }

    #[test]
    fn an_error_names_its_code_as_the_json_protocol_does() {
        let bytes = frame(&ServerFrame::Error {
            reference: Some("7"),
            code: ErrorCode::NotJoined,
            message: "no".into(),
        });
        let json = serde_json::to_value(ErrorCode::NotJoined).unwrap();
        assert_eq!(json, "not_joined");
        assert!(bytes.windows(10).any(|w| w == b"not_joined"));
    }
}
