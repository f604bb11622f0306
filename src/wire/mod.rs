//! Wire forms: how events, replays and goodbyes become bytes on each transport.
//!
//! Sans-IO. A transport's writer hands a batch of `Delivery`s to `encode`, which turns each
//! into units (a line chunk, a WebSocket frame's payload, a datagram, an SSE block) and gives
//! them to the transport's `Emit`. Uncompressed WebSocket takes whole frames instead
//! (`ws_frames`). A room event's shared form is encoded once per event and
//! cached in it (`Event::encoded`); every receiver of that form shares the same bytes.

mod grpc;
mod json;
mod line;
mod mqtt;
mod reply;
mod sse;
mod ws;

use bytes::Bytes;

use crate::event::{Disconnect, Event, Form, MessageId};
use crate::hub::{Delivery, Replay};

pub use json::gap as gap_json;
pub use line::gap as gap_text;
pub use line::terminal_safe;
pub(crate) use mqtt::event as mqtt_event;
pub use reply::render as reply;

/// The form a connection's deliveries take on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// TCP chat: newline-terminated lines.
    Line,
    /// UDP chat: one line per datagram, without its newline (the output strips it).
    Datagram,
    /// The seed's WebSocket chat: `nick: text` text frames.
    Plain,
    /// The structured WebSocket protocol: JSON envelopes.
    Json,
    /// Server-Sent Events blocks carrying the JSON envelope.
    Sse,
    /// MQTT: `transport::mqtt` writes PUBLISH packets from the events themselves; the session
    /// queues it no text (an MQTT client has nowhere to show a notice).
    Mqtt,
    /// gRPC streams: `switchboard.v1.Event` protobuf messages, answers included.
    Grpc,
}

/// Where encoded units go: a transport's output buffer.
pub trait Emit {
    /// Takes one unit. `id` is the message it carries, if any (UDP names it when a datagram
    /// would be too large).
    fn emit(&mut self, unit: &Bytes, id: Option<MessageId>);
}

/// The event's shared bytes in this wire form, encoded on first use.
pub fn event(wire: Wire, event: &Event) -> &Bytes {
    match wire {
        Wire::Line | Wire::Datagram => event.encoded(Form::Line, line::event),
        Wire::Plain => event.encoded(Form::Plain, line::plain),
        Wire::Json => event.encoded(Form::Json, json::event),
        Wire::Sse => event.encoded(Form::Sse, sse::event),
        Wire::Mqtt => event.encoded(Form::Plain, line::plain),
        Wire::Grpc => event.encoded(Form::Grpc, grpc::event),
    }
}

/// A room event's whole WebSocket text frame (`Wire::Plain` and `Wire::Json`), made once and
/// shared by every uncompressed connection; `None` for anything else (see `ws_frames`).
pub fn ws_event_frame(wire: Wire, delivery: &Delivery) -> Option<&Bytes> {
    match (wire, delivery) {
        (Wire::Plain, Delivery::Event(ev)) => {
            Some(ev.encoded(Form::PlainFrame, |e| ws::text_frame(&line::plain(e))))
        }
        (Wire::Json, Delivery::Event(ev)) => {
            Some(ev.encoded(Form::JsonFrame, |e| ws::text_frame(&json::event(e))))
        }
        _ => None,
    }
}

/// An answer or a replay as whole WebSocket text frames of its own, appended to `out`. A
/// room event takes `ws_event_frame`'s shared frame instead; given one, this frames a copy.
pub fn ws_frames(wire: Wire, delivery: &Delivery, out: &mut Vec<Bytes>) {
    match delivery {
        Delivery::Event(ev) => out.push(ws::text_frame(event(wire, ev))),
        Delivery::Direct(bytes) => out.push(ws::text_frame(bytes)),
        Delivery::Reply(answer) => {
            out.extend(reply::render(wire, answer).map(|b| ws::text_frame(&b)))
        }
        Delivery::Replay(replay) => encode_replay(wire, replay, &mut Framed(out)),
    }
}

/// Frames each unit it is given.
struct Framed<'a>(&'a mut Vec<Bytes>);

impl Emit for Framed<'_> {
    fn emit(&mut self, unit: &Bytes, _: Option<MessageId>) {
        self.0.push(ws::text_frame(unit));
    }
}

/// Encodes a batch of deliveries in order, emptying `batch`.
pub fn encode(wire: Wire, batch: &mut Vec<Delivery>, out: &mut impl Emit) {
    for delivery in batch.drain(..) {
        match delivery {
            Delivery::Event(ev) => out.emit(event(wire, &ev), ev.id),
            Delivery::Direct(bytes) => out.emit(&bytes, None),
            Delivery::Reply(answer) => {
                if let Some(bytes) = reply::render(wire, &answer) {
                    out.emit(&bytes, None);
                }
            }
            Delivery::Replay(replay) => encode_replay(wire, &replay, out),
        }
    }
}

/// One delivery's units, for outputs that take them one by one (WebSocket frames): a room
/// event or an answer is one shared unit, with nothing allocated; only a replay collects
/// several.
#[derive(Debug)]
pub enum Units {
    /// The usual case.
    One(Bytes),
    /// A replay's gap notice and messages.
    Many(Vec<Bytes>),
}

impl IntoIterator for Units {
    type Item = Bytes;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Bytes>, std::vec::IntoIter<Bytes>>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Units::One(one) => Some(one).into_iter().chain(Vec::new()),
            Units::Many(many) => None.into_iter().chain(many),
        }
    }
}

impl Emit for Vec<Bytes> {
    fn emit(&mut self, unit: &Bytes, _: Option<MessageId>) {
        self.push(unit.clone());
    }
}

/// The units of one delivery in this wire form.
pub fn units(wire: Wire, delivery: Delivery) -> Units {
    match delivery {
        Delivery::Event(ev) => Units::One(event(wire, &ev).clone()),
        Delivery::Direct(bytes) => Units::One(*bytes),
        Delivery::Reply(answer) => match reply::render(wire, &answer) {
            Some(bytes) => Units::One(bytes),
            None => Units::Many(Vec::new()),
        },
        Delivery::Replay(replay) => {
            let mut many = Vec::with_capacity(replay.events.len() + 1);
            encode_replay(wire, &replay, &mut many);
            Units::Many(many)
        }
    }
}

/// A replay: the gap notice if there is one, then each message. Line clients see each
/// message's id (`[ID] nick: text`) so that they can resume with `/since`.
fn encode_replay(wire: Wire, replay: &Replay, out: &mut impl Emit) {
    let gap = match wire {
        Wire::Line => gap_text(replay).map(|g| Bytes::from(g + "\n")),
        Wire::Datagram | Wire::Plain => gap_text(replay).map(Bytes::from),
        Wire::Json => gap_json(replay),
        Wire::Sse => gap_json(replay).map(|g| sse::block("gap", &g)),
        Wire::Grpc => grpc::gap(replay),
        Wire::Mqtt => None,
    };
    if let Some(gap) = gap {
        out.emit(&gap, None);
    }
    for ev in &replay.events {
        match wire {
            Wire::Line | Wire::Datagram => out.emit(&line::with_id(ev), ev.id),
            _ => out.emit(event(wire, ev), ev.id),
        }
    }
}

/// What a client is told when the server ends its connection; `None` where the transport
/// says it another way (WebSocket close frames, see `transport::ws`).
pub fn goodbye(wire: Wire, reason: Disconnect) -> Option<Bytes> {
    let text = match reason {
        Disconnect::SlowConsumer
        | Disconnect::TokenExpired
        | Disconnect::Kicked
        | Disconnect::Flooding
        | Disconnect::Replaced => {
            format!("ERR disconnected: {}", reason.as_str())
        }
        Disconnect::Shutdown => "* server shutting down".to_owned(),
        Disconnect::TimedOut => "* closing idle connection".to_owned(),
    };
    match wire {
        Wire::Line => Some(Bytes::from(text + "\n")),
        Wire::Datagram => Some(Bytes::from(text)),
        Wire::Sse => Some(sse::close(reason.as_str())),
        // gRPC ends a stream with a status (`crate::grpc`).
        Wire::Plain | Wire::Json | Wire::Mqtt | Wire::Grpc => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::EventKind;

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
        assert_eq!(&event(Wire::Plain, &ev)[..], b"ann: hi \"you\"");
        let v: serde_json::Value = serde_json::from_slice(event(Wire::Json, &ev)).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["id"], "00000001-2");
        assert_eq!(v["text"], "hi \"you\"");
        let leave = Event::new(
            EventKind::Leave {
                reason: Some(Disconnect::SlowConsumer),
            },
            "lobby".into(),
            None,
            "bob".into(),
            "".into(),
            None,
        );
        assert_eq!(
            &event(Wire::Plain, &leave)[..],
            b"* bob left lobby (slow consumer)"
        );
        let v: serde_json::Value = serde_json::from_slice(event(Wire::Json, &leave)).unwrap();
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
        assert_eq!(&event(Wire::Line, &ev)[..], b"ann: one\nann: two\n");
    }

    #[test]
    fn a_direct_message_names_both_ends() {
        let ev = Event::direct("ann".into(), "bob".into(), "psst", 7);
        assert_eq!(&event(Wire::Line, &ev)[..], b"ann -> you: psst\n");
        assert_eq!(&event(Wire::Plain, &ev)[..], b"ann -> you: psst");
        let v: serde_json::Value = serde_json::from_slice(event(Wire::Json, &ev)).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["from"].as_str(), v["to"].as_str()),
            (Some("direct"), Some("ann"), Some("bob"))
        );
        assert!(event(Wire::Sse, &ev).starts_with(b"event: direct\ndata: {"));
    }

    #[test]
    fn a_replay_with_a_gap_starts_with_the_notice() {
        let id = MessageId { epoch: 1, seq: 5 };
        let ev = Arc::new(Event::stored(
            "r".into(),
            id,
            "ann".into(),
            "kept".into(),
            0,
        ));
        let replay = Replay::within(
            "r".into(),
            vec![ev],
            Some(crate::hub::Gap::Expired),
            1 << 20,
        );
        let mut units: Vec<Bytes> = Vec::new();
        encode(
            Wire::Line,
            &mut vec![Delivery::Replay(Box::new(replay))],
            &mut units,
        );
        assert_eq!(
            units,
            [
                Bytes::from("* gap in r: older messages expired; history resumes at 00000001-5\n"),
                Bytes::from("[00000001-5] ann: kept\n"),
            ]
        );
    }
}
