//! A `Reply` in each dialect: chat text (`* …` and `ERR …` lines), the structured protocol's
//! frames (JSON, and protobuf on gRPC), SSE blocks. MQTT shows none: its refusals are reason
//! codes, given by its transport.

use std::fmt::Write as _;

use bytes::Bytes;

use super::{Wire, grpc, sse};
use crate::protocol::command::HELP;
use crate::protocol::envelope::ServerFrame;
use crate::reply::Reply;

/// The reply's bytes in `wire`; `None` where the dialect has no way to show it.
pub fn render(wire: Wire, reply: &Reply) -> Option<Bytes> {
    let structured = || frame(reply);
    match wire {
        Wire::Mqtt => None,
        Wire::Line => Some(Bytes::from(text(reply) + "\n")),
        Wire::Datagram | Wire::Plain => Some(Bytes::from(text(reply))),
        Wire::Json => Some(match structured() {
            Some(frame) => Bytes::from(frame.encode()),
            None => Bytes::from(text(reply)),
        }),
        Wire::Grpc => Some(match structured() {
            Some(frame) => grpc::frame(&frame),
            None => grpc::notice(&text(reply)),
        }),
        Wire::Sse => structured().map(|frame| sse::block(frame.kind(), frame.encode().as_bytes())),
    }
}

/// The structured protocol's frame for the reply; `None` for what only chat asks.
fn frame(reply: &Reply) -> Option<ServerFrame<'_>> {
    Some(match reply {
        Reply::Welcome { nick, user, room } => ServerFrame::Welcome {
            nick,
            user: user.as_deref(),
            rooms: vec![room],
        },
        Reply::Joined {
            reference,
            room,
            members,
            cursor,
        } => ServerFrame::Joined {
            reference: reference.as_deref(),
            room,
            members: members.iter().map(|m| &**m).collect(),
            cursor: cursor.to_string(),
        },
        Reply::Left { reference, room } => ServerFrame::Left {
            reference: reference.as_deref(),
            room,
        },
        Reply::Ack {
            reference,
            room,
            id,
            duplicate,
        } => ServerFrame::Ack {
            reference: reference.as_deref(),
            room,
            id: id.to_string(),
            duplicate: *duplicate,
        },
        Reply::Sent { reference, to, .. } => ServerFrame::Sent {
            reference: reference.as_deref(),
            to,
        },
        Reply::Authenticated {
            reference,
            user,
            nick,
            expires,
            ..
        } => ServerFrame::Authenticated {
            reference: reference.as_deref(),
            user,
            nick,
            expires: *expires,
        },
        Reply::Refused {
            reference,
            code,
            message,
        } => ServerFrame::Error {
            reference: reference.as_deref(),
            code: *code,
            message: message.clone(),
        },
        _ => return None,
    })
}

/// The reply as chat text, without the last newline: `* …` for what went well, `ERR …`
/// for a refusal.
fn text(reply: &Reply) -> String {
    match reply {
        Reply::Greeting {
            nick,
            room: Some(room),
        } => format!("* welcome {nick}, you are in {room} (/help lists commands)"),
        Reply::Greeting { nick, room: None } => {
            format!(
                "* welcome {nick}; this server needs a token: /auth TOKEN (/help lists commands)"
            )
        }
        Reply::Welcome { nick, .. } => format!("* welcome {nick}"),
        Reply::Joined { room, members, .. } => joined(room, members.len()),
        Reply::Moved { room, count } => joined(room, *count),
        Reply::AlreadyIn(room) => format!("* you are already in {room}"),
        Reply::Left { room, .. } => format!("* you left {room}"),
        Reply::Ack { room, id, .. } => format!("* stored in {room} as {id}"),
        // One `you -> NICK:` per line, as the recipient sees `NICK -> you:` per line.
        Reply::Sent { to, text, .. } => text
            .split('\n')
            .map(|line| format!("you -> {to}: {}", line.trim_end_matches('\r')))
            .collect::<Vec<_>>()
            .join("\n"),
        Reply::Authenticated {
            nick,
            expires,
            rooms,
            ..
        } => signed_in(nick, *expires, rooms),
        Reply::Renamed(nick) => format!("* you are now {nick}"),
        Reply::SameNick(nick) => format!("* you are already {nick}"),
        Reply::Who { room, members } => {
            let mut out = format!("* in {room}:");
            for (i, (nick, transport)) in members.iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                let _ = write!(out, "{sep}{nick} ({})", transport.as_str());
            }
            out
        }
        Reply::Rooms { rooms, next } => {
            let mut out = String::from("* rooms:");
            for (i, (name, count)) in rooms.iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                let _ = write!(out, "{sep}{name} ({count})");
            }
            if let Some(next) = next {
                let _ = write!(out, "; more: /rooms {next}");
            }
            out
        }
        Reply::HistoryEnd(room) => format!("* end of history of {room}"),
        Reply::Help => HELP
            .iter()
            .map(|line| format!("* {line}"))
            .collect::<Vec<_>>()
            .join("\n"),
        Reply::Bye => "* bye".to_owned(),
        Reply::Idle { quiet, grace } => format!(
            "* quiet for {quiet} s: send anything (an empty line will do) within {grace} s to \
             stay connected"
        ),
        Reply::Refused { message, .. } => format!("ERR {message}"),
    }
}

fn joined(room: &str, count: usize) -> String {
    format!("* you joined {room} ({count} here)")
}

fn signed_in(nick: &str, expires: u64, rooms: &[std::sync::Arc<str>]) -> String {
    let left = expires.saturating_sub(crate::event::now_ms() / 1000);
    let rooms = if rooms.is_empty() {
        "none".to_owned()
    } else {
        rooms.iter().map(|r| &**r).collect::<Vec<_>>().join(", ")
    };
    format!(
        "* signed in as {nick} (token expires in {left} s; /auth again to refresh); rooms: {rooms}"
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{MessageId, Transport};
    use crate::reply::ErrorCode;

    #[test]
    fn a_refusal_is_an_err_line_a_json_error_and_nothing_on_mqtt() {
        let reply = Reply::refused(Some("r1"), ErrorCode::NotJoined, "not in room x");
        assert_eq!(
            render(Wire::Line, &reply).unwrap(),
            "ERR not in room x\n".as_bytes()
        );
        assert_eq!(
            render(Wire::Plain, &reply).unwrap(),
            "ERR not in room x".as_bytes()
        );
        assert_eq!(
            render(Wire::Json, &reply).unwrap(),
            r#"{"type":"error","ref":"r1","code":"not_joined","message":"not in room x"}"#
                .as_bytes()
        );
        assert_eq!(render(Wire::Mqtt, &reply), None);
        let grpc = render(Wire::Grpc, &reply).unwrap();
        assert!(grpc.windows(10).any(|w| w == b"not_joined"));
        assert!(
            render(Wire::Sse, &reply)
                .unwrap()
                .starts_with(b"event: error\ndata: {")
        );
    }

    #[test]
    fn chat_lines_for_what_only_chat_asks() {
        let who = Reply::Who {
            room: "lobby".into(),
            members: vec![
                ("ann".into(), Transport::Tcp),
                ("bob".into(), Transport::Ws),
            ],
        };
        assert_eq!(text(&who), "* in lobby: ann (tcp), bob (ws)");
        let rooms = Reply::Rooms {
            rooms: vec![("a".into(), 2), ("b".into(), 0)],
            next: Some("b".into()),
        };
        assert_eq!(text(&rooms), "* rooms: a (2), b (0); more: /rooms b");
        let sent = Reply::Sent {
            reference: None,
            to: "bob".into(),
            text: "one\r\ntwo".into(),
        };
        assert_eq!(text(&sent), "you -> bob: one\nyou -> bob: two");
        assert!(frame(&who).is_none());
    }

    #[test]
    fn every_rendering_is_within_its_weight() {
        let replies = [
            Reply::Help,
            Reply::Bye,
            Reply::Idle {
                quiet: 900,
                grace: 60,
            },
            Reply::Greeting {
                nick: "ann".into(),
                room: None,
            },
            Reply::Authenticated {
                reference: Some("r".into()),
                user: "u-1".into(),
                nick: "ann".into(),
                expires: u64::MAX,
                rooms: vec!["a".into(), "b".into()],
            },
            Reply::Ack {
                reference: Some("r".into()),
                room: "lobby".into(),
                id: MessageId {
                    epoch: u32::MAX,
                    seq: u64::MAX,
                },
                duplicate: true,
            },
        ];
        for reply in &replies {
            for wire in [Wire::Line, Wire::Json, Wire::Grpc, Wire::Sse] {
                let len = render(wire, reply).map_or(0, |b| b.len());
                assert!(len <= reply.weight(), "{reply:?} on {wire:?}: {len}");
            }
        }
    }

    #[test]
    fn a_structured_join_names_members_and_cursor() {
        let joined = Reply::Joined {
            reference: None,
            room: "dev".into(),
            members: vec![Arc::from("ann")],
            cursor: MessageId { epoch: 1, seq: 4 },
        };
        assert_eq!(
            render(Wire::Json, &joined).unwrap(),
            r#"{"type":"joined","room":"dev","members":["ann"],"cursor":"00000001-4"}"#.as_bytes()
        );
        assert_eq!(text(&joined), "* you joined dev (1 here)");
    }
}
