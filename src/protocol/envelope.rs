//! The structured WebSocket protocol (`switchboard.v1`): JSON frames from the client, and the
//! server frames that are not room events (those are `Event::json`). Specified in
//! docs/PROTOCOL.md.

use serde::{Deserialize, Serialize};

/// The subprotocol name a client offers in `Sec-WebSocket-Protocol` to get JSON envelopes.
pub const SUBPROTOCOL: &str = "switchboard.v1";

/// A frame a structured client sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Publish text to a room the connection has joined. `room` may be left out when exactly
    /// one room is joined; `ref` is echoed in the ack or error so the client can match them.
    Publish {
        /// Target room.
        #[serde(default)]
        room: Option<String>,
        /// The message.
        text: String,
        /// Client-chosen correlation id.
        #[serde(default, rename = "ref")]
        reference: Option<String>,
        /// Idempotency key: a retried publish with the same key is not posted twice.
        #[serde(default)]
        key: Option<String>,
    },
    /// Join a room (several can be joined at once).
    Join {
        /// Room to join.
        room: String,
        /// Replay every message after this id first (resume after a disconnect).
        #[serde(default)]
        since: Option<String>,
        /// Client-chosen correlation id.
        #[serde(default, rename = "ref")]
        reference: Option<String>,
    },
    /// Send text to one user (every connection holding that nick), on any transport.
    Direct {
        /// The recipient's nick.
        to: String,
        /// The message.
        text: String,
        /// Client-chosen correlation id.
        #[serde(default, rename = "ref")]
        reference: Option<String>,
    },
    /// Leave a room.
    Leave {
        /// Room to leave.
        room: String,
        /// Client-chosen correlation id.
        #[serde(default, rename = "ref")]
        reference: Option<String>,
    },
    /// Sign in with a token, or refresh it before it expires.
    Auth {
        /// The JWT.
        token: String,
        /// Client-chosen correlation id.
        #[serde(default, rename = "ref")]
        reference: Option<String>,
    },
}

impl ClientFrame {
    /// The client's correlation id, if any.
    pub fn reference(&self) -> Option<&str> {
        match self {
            ClientFrame::Publish { reference, .. }
            | ClientFrame::Join { reference, .. }
            | ClientFrame::Direct { reference, .. }
            | ClientFrame::Leave { reference, .. }
            | ClientFrame::Auth { reference, .. } => reference.as_deref(),
        }
    }
}

pub use crate::reply::ErrorCode;

/// A server frame other than a room event.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// First frame on a structured connection: who you are and where you are.
    Welcome {
        /// The nick the server gave this connection (the asked one, or it with a suffix).
        nick: &'a str,
        /// The verified user (the token's subject), when signed in.
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        /// Rooms joined.
        rooms: Vec<&'a str>,
    },
    /// A publish was accepted.
    Ack {
        /// The client's correlation id.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        /// The room it went to.
        room: &'a str,
        /// The message's id.
        id: String,
        /// True when the idempotency key was seen before and nothing new was published.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
    },
    /// A direct message was handed to its recipient's connections.
    Sent {
        /// The client's correlation id.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        /// The recipient's nick.
        to: &'a str,
    },
    /// A join or leave was done.
    Joined {
        /// The client's correlation id.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        /// The room.
        room: &'a str,
        /// Members now in it.
        members: Vec<&'a str>,
        /// Where this connection's live stream of the room starts: resume from here (with
        /// `since`) if no message of the room has arrived yet.
        cursor: String,
    },
    /// A leave was done.
    Left {
        /// The client's correlation id.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        /// The room.
        room: &'a str,
    },
    /// A token was accepted: who the connection now is, and until when.
    Authenticated {
        /// The client's correlation id.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        /// The token's subject.
        user: &'a str,
        /// The name shown to others.
        nick: &'a str,
        /// The token's expiry, seconds since the Unix epoch; refresh before it.
        expires: u64,
    },
    /// A frame was refused; the connection stays open.
    Error {
        /// The client's correlation id, when the bad frame had one.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        /// What kind of mistake.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

impl ServerFrame<'_> {
    /// Its `type`, which names an SSE block too.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::Welcome { .. } => "welcome",
            ServerFrame::Ack { .. } => "ack",
            ServerFrame::Sent { .. } => "sent",
            ServerFrame::Joined { .. } => "joined",
            ServerFrame::Left { .. } => "left",
            ServerFrame::Authenticated { .. } => "authenticated",
            ServerFrame::Error { .. } => "error",
        }
    }

    /// The frame as JSON text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Parses a client frame, saying exactly what is wrong when it cannot.
pub fn parse(text: &str) -> Result<ClientFrame, BadFrame> {
    serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        // The client's `ref`, if the frame is JSON at all, so that it can match the error to
        // its request.
        let reference = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("ref")?.as_str().map(str::to_owned));
        let message = match e.classify() {
            Category::Syntax | Category::Eof => "not JSON: a frame is one JSON object, such as \
                 {\"type\":\"publish\",\"room\":\"lobby\",\"text\":\"hi\"}"
                .to_owned(),
            // serde's own words name the field or the type; its position ("at line 1
            // column 9") means nothing to a sender of one-line frames.
            Category::Data | Category::Io => {
                let said = e.to_string();
                let said = said.split(" at line ").next().unwrap_or(&said);
                format!("bad frame: {said}")
            }
        };
        BadFrame { reference, message }
    })
}

/// A frame that could not be read: what was wrong, and the client's `ref` when it could
/// still be read, so that the error answers the right request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFrame {
    /// The frame's `ref`, if it had a readable one.
    pub reference: Option<String>,
    /// What was wrong, for a person.
    pub message: String,
}

impl std::fmt::Display for BadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames() {
        assert_eq!(
            parse(r#"{"type":"publish","text":"hi","ref":"1"}"#),
            Ok(ClientFrame::Publish {
                room: None,
                text: "hi".into(),
                reference: Some("1".into()),
                key: None,
            })
        );
        assert_eq!(
            parse(r#"{"type":"join","room":"dev"}"#),
            Ok(ClientFrame::Join {
                room: "dev".into(),
                since: None,
                reference: None
            })
        );
    }

    #[test]
    fn explains_bad_frames() {
        let said = |text: &str| parse(text).unwrap_err().message;
        assert!(said("{").contains("not JSON"));
        assert!(said("t").contains("not JSON") && !said("t").contains("ident"));
        assert!(said(r#"{"type":"dance"}"#).contains("dance"));
        assert!(said(r#"{"type":"publish"}"#).contains("text"));
        assert!(said(r#"{"type":"join","room":"a","x":1}"#).contains("x"));
        assert!(!said(r#"{"type":"publish"}"#).contains("line 1"));
        // The request's ref is kept whenever it can be read.
        let bad = parse(r#"{"type":"publish","ref":"r7","text":5}"#).unwrap_err();
        assert_eq!(bad.reference.as_deref(), Some("r7"));
        assert_eq!(parse("{").unwrap_err().reference, None);
    }

    #[test]
    fn encodes_server_frames() {
        let ack = ServerFrame::Ack {
            reference: Some("7"),
            room: "lobby",
            id: "00000001-3".into(),
            duplicate: false,
        };
        assert_eq!(
            ack.encode(),
            r#"{"type":"ack","ref":"7","room":"lobby","id":"00000001-3"}"#
        );
    }
}
