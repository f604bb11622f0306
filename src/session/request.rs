//! `Request`: what every transport's decoder lowers its input into, so that each request is
//! applied in one place (`Session::apply`) whatever it arrived on.

use crate::protocol::command::{Command, CommandError, Input};
use crate::protocol::envelope::{BadFrame, ClientFrame, ErrorCode};

/// One thing a client asks of its session. Borrowed from the decoded input: lowering
/// allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// Publish `text` to a joined room (`None`: the only one joined).
    Publish {
        /// Target room.
        room: Option<&'a str>,
        /// The message.
        text: &'a str,
        /// Idempotency key.
        key: Option<&'a str>,
        /// Correlation id echoed in the answer.
        reference: Option<&'a str>,
    },
    /// Send `text` to whoever holds nick `to`.
    Direct {
        /// The recipient's nick.
        to: &'a str,
        /// The message.
        text: &'a str,
        /// Correlation id echoed in the answer.
        reference: Option<&'a str>,
    },
    /// Join one more room, first replaying what came after `since`.
    Join {
        /// Room to join.
        room: &'a str,
        /// Resume cursor, as the client sent it.
        since: Option<&'a str>,
        /// Correlation id echoed in the answer.
        reference: Option<&'a str>,
    },
    /// Leave the current room for `room` (the line protocol's `/join`).
    Move(&'a str),
    /// Leave a room.
    Leave {
        /// Room to leave.
        room: &'a str,
        /// Correlation id echoed in the answer.
        reference: Option<&'a str>,
    },
    /// Change nick.
    Nick(&'a str),
    /// List the current room's members.
    Who,
    /// List rooms, a page after this name.
    Rooms(Option<&'a str>),
    /// Replay the current room's last N messages.
    History(usize),
    /// Replay the current room's messages after an id.
    Since(&'a str),
    /// List the commands.
    Help,
    /// Sign in with a token, or refresh it.
    Auth {
        /// The JWT.
        token: &'a str,
        /// Correlation id echoed in the answer.
        reference: Option<&'a str>,
    },
    /// Say goodbye and close.
    Quit,
    /// Input that could not be decoded; answered with the error.
    Invalid {
        /// Correlation id, when the input had one.
        reference: Option<&'a str>,
        /// What kind of mistake.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

impl<'a> Request<'a> {
    /// Lowers a chat line (TCP, UDP); `None` for an empty line.
    pub fn from_line(input: &'a Result<Input<'a>, CommandError>) -> Option<Self> {
        let input = match input {
            Ok(input) => input,
            Err(e) => return Some(Self::invalid(None, ErrorCode::BadFrame, e)),
        };
        Some(match input {
            Input::Empty => return None,
            Input::Text(text) => Request::Publish {
                room: None,
                text,
                key: None,
                reference: None,
            },
            Input::Command(command) => match command {
                Command::Nick(nick) => Request::Nick(nick),
                Command::Join(room) => Request::Move(room),
                Command::Who => Request::Who,
                Command::Rooms(after) => Request::Rooms(after.as_deref()),
                Command::Help => Request::Help,
                Command::History(n) => Request::History(*n),
                Command::Since(id) => Request::Since(id),
                Command::Msg { to, text } => Request::Direct {
                    to,
                    text,
                    reference: None,
                },
                Command::Auth(token) => Request::Auth {
                    token,
                    reference: None,
                },
                Command::Quit => Request::Quit,
            },
        })
    }

    /// Lowers a frame of the structured WebSocket protocol.
    pub fn from_frame(frame: &'a Result<ClientFrame, BadFrame>) -> Self {
        let frame = match frame {
            Ok(frame) => frame,
            Err(bad) => {
                return Self::invalid(bad.reference.as_deref(), ErrorCode::BadFrame, bad);
            }
        };
        match frame {
            ClientFrame::Publish {
                room,
                text,
                reference,
                key,
            } => Request::Publish {
                room: room.as_deref(),
                text,
                key: key.as_deref(),
                reference: reference.as_deref(),
            },
            ClientFrame::Join {
                room,
                since,
                reference,
            } => Request::Join {
                room,
                since: since.as_deref(),
                reference: reference.as_deref(),
            },
            ClientFrame::Direct {
                to,
                text,
                reference,
            } => Request::Direct {
                to,
                text,
                reference: reference.as_deref(),
            },
            ClientFrame::Leave { room, reference } => Request::Leave {
                room,
                reference: reference.as_deref(),
            },
            ClientFrame::Auth { token, reference } => Request::Auth {
                token,
                reference: reference.as_deref(),
            },
        }
    }

    /// Lowers a text frame of the seed's plain WebSocket chat, which speaks the TCP chat's
    /// language: `/msg`, `/nick`, `/join`, `/auth` and the rest are commands, never text for
    /// the room, and `//` starts text with one `/`. An empty (or blank) frame is refused: a
    /// frame is a message, and there is nothing in it to send.
    pub fn from_plain(input: &'a Result<Input<'a>, CommandError>) -> Self {
        Self::from_line(input).unwrap_or_else(|| {
            Self::invalid(None, ErrorCode::BadFrame, "the message text is empty")
        })
    }

    fn invalid(
        reference: Option<&'a str>,
        code: ErrorCode,
        message: impl std::fmt::Display,
    ) -> Self {
        Request::Invalid {
            reference,
            code,
            message: message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{command, envelope};

    #[test]
    fn a_line_and_a_frame_lower_to_the_same_direct_request() {
        let line = command::parse("/msg bob hi there");
        let frame = envelope::parse(r#"{"type":"direct","to":"bob","text":"hi there"}"#);
        let expected = Request::Direct {
            to: "bob",
            text: "hi there",
            reference: None,
        };
        assert_eq!(Request::from_line(&line), Some(expected.clone()));
        assert_eq!(Request::from_frame(&frame), expected);
    }

    #[test]
    fn a_plain_websocket_frame_speaks_the_chat_language() {
        let msg = command::parse("/msg udpguy psst");
        assert_eq!(
            Request::from_plain(&msg),
            Request::Direct {
                to: "udpguy",
                text: "psst",
                reference: None
            }
        );
        let escaped = command::parse("//shrug");
        assert!(matches!(
            Request::from_plain(&escaped),
            Request::Publish { text: "/shrug", .. }
        ));
        assert!(matches!(
            Request::from_plain(&command::parse("")),
            Request::Invalid { message, .. } if message.contains("empty")
        ));
    }

    #[test]
    fn bad_input_lowers_to_invalid() {
        let line = command::parse("/frob");
        assert!(matches!(
            Request::from_line(&line),
            Some(Request::Invalid { message, .. }) if message.contains("unknown command")
        ));
        assert_eq!(Request::from_line(&command::parse("  ")), None);
    }
}
