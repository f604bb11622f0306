//! Server-Sent Events blocks: `id:` (messages only), `event:` naming the kind, and the JSON
//! envelope as `data:`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::{Event, EventKind};

/// The event as one block. Only messages carry `id:`, so that a browser's `Last-Event-ID` is
/// always a message id. JSON has no raw newlines, so `data:` is one line.
pub(super) fn event(ev: &Event) -> Bytes {
    let json = super::event(super::Wire::Json, ev);
    let mut out = BytesMut::with_capacity(json.len() + 64);
    if let Some(id) = ev.id {
        out.put_slice(format!("id: {id}\n").as_bytes());
    }
    let kind = match ev.kind {
        EventKind::Message => "message",
        EventKind::Join => "join",
        EventKind::Leave { .. } => "leave",
        EventKind::Nick { .. } => "nick",
        EventKind::Direct { .. } => "direct",
        EventKind::Crowd { .. } => "crowd",
    };
    put_block(&mut out, kind, json);
    out.freeze()
}

/// A block with no id: `event: KIND\ndata: JSON\n\n`.
pub(super) fn block(kind: &str, json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(json.len() + kind.len() + 16);
    put_block(&mut out, kind, json);
    out.freeze()
}

fn put_block(out: &mut BytesMut, kind: &str, json: &[u8]) {
    out.put_slice(b"event: ");
    out.put_slice(kind.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(json);
    out.put_slice(b"\n\n");
}

/// The last event before the server ends the stream.
pub(super) fn close(reason: &str) -> Bytes {
    let json = serde_json::json!({"type": "close", "reason": reason}).to_string();
    block("close", json.as_bytes())
}
