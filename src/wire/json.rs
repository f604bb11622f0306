//! The structured protocol's JSON envelopes for room events and gaps (docs/PROTOCOL.md).

use bytes::Bytes;

use crate::event::{Event, EventKind, Sender};
use crate::hub::Replay;

/// The JSON envelope of an event.
pub(super) fn event(ev: &Event) -> Bytes {
    let mut v = match &ev.kind {
        EventKind::Direct { to } => {
            let mut v = serde_json::json!({
                "type": "direct",
                "from": &*ev.nick,
                "to": &**to,
                "text": &*ev.text,
                "time": ev.time_ms,
            });
            standing(&mut v, &ev.sender);
            return to_bytes(&v);
        }
        _ => serde_json::json!({
            "room": &*ev.room,
            "nick": &*ev.nick,
            "time": ev.time_ms,
        }),
    };
    match &ev.kind {
        EventKind::Message => {
            v["type"] = "message".into();
            v["id"] = ev.id.map(|id| id.to_string()).into();
            v["text"] = (&*ev.text).into();
            standing(&mut v, &ev.sender);
        }
        EventKind::Join => v["type"] = "join".into(),
        EventKind::Leave { reason } => {
            v["type"] = "leave".into();
            if let Some(reason) = reason {
                v["reason"] = reason.as_str().into();
            }
        }
        EventKind::Nick { old } => {
            v["type"] = "nick".into();
            v["old"] = (&**old).into();
        }
        EventKind::Crowd { joined, left } => {
            v["type"] = "crowd".into();
            v["joined"] = (*joined).into();
            v["left"] = (*left).into();
        }
        EventKind::Direct { .. } => {}
    }
    to_bytes(&v)
}

/// How far the name can be trusted: `"user": SUB` when verified, `"anonymous": true` for a
/// nick nobody vouched for on a server that verifies, nothing on an open server.
fn standing(v: &mut serde_json::Value, sender: &Sender) {
    match sender {
        Sender::User(sub) => v["user"] = (&**sub).into(),
        Sender::Anonymous => v["anonymous"] = true.into(),
        Sender::Backend => v["backend"] = true.into(),
        Sender::Open => {}
    }
}

/// The gap as a JSON frame of the structured protocol.
pub fn gap(replay: &Replay) -> Option<Bytes> {
    let gap = replay.gap?;
    let first = replay
        .events
        .first()
        .and_then(|e| e.id)
        .map(|id| id.to_string());
    Some(to_bytes(&serde_json::json!({
        "type": "gap",
        "room": &*replay.room,
        "reason": gap.as_str(),
        "first": first,
    })))
}

fn to_bytes(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}
