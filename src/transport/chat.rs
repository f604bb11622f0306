//! The chat session shared by the TCP and UDP transports: one client's nick and room, and what
//! each input line does. Answers go into the client's own queue as `Delivery::Direct`, so they
//! are ordered with the room's events and bounded like them.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;

use crate::hub::{Delivery, Hub, Lookback, MemberInfo, MessageId, Room, Subscriber};
use crate::protocol::command::{self, Command, Input};

/// The room every chat client starts in.
pub const DEFAULT_ROOM: &str = "lobby";

/// The answer to `/who`: `* in ROOM: nick (transport), ...`.
fn who_line(room: &str, members: &[MemberInfo]) -> String {
    let mut out = format!("* in {room}:");
    for (i, m) in members.iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        let _ = write!(out, "{sep}{} ({})", m.nick, m.transport.as_str());
    }
    out.push('\n');
    out
}

/// What the transport should do after a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// The client asked to leave; close after flushing the answer.
    Quit,
}

/// One chat client's state.
#[derive(Debug)]
pub struct ChatSession {
    hub: Arc<Hub>,
    sub: Arc<Subscriber>,
    nick: Arc<str>,
    room: Arc<Room>,
}

impl ChatSession {
    /// Gives the client a generated nick, puts it in the default room and greets it.
    pub fn start(hub: Arc<Hub>, sub: Arc<Subscriber>) -> Self {
        let nick = hub.claim_generated_nick(sub.id);
        let room = hub.join(DEFAULT_ROOM, &sub, Arc::clone(&nick));
        let session = Self {
            hub,
            sub,
            nick,
            room,
        };
        session.reply(format!(
            "* welcome {}, you are in {} (/help lists commands)\n",
            session.nick, DEFAULT_ROOM
        ));
        session
    }

    /// The client's subscriber.
    pub fn subscriber(&self) -> &Arc<Subscriber> {
        &self.sub
    }

    /// Sends the client a line of its own (an answer or an error).
    pub fn reply(&self, text: String) {
        self.sub.offer(Delivery::direct(text));
    }

    /// Sends the client an `ERR` line.
    pub fn error(&self, message: impl std::fmt::Display) {
        tracing::debug!(id = self.sub.id, addr = ?self.sub.addr, %message, "client error");
        self.reply(format!("ERR {message}\n"));
    }

    /// Acts on one line of input.
    pub fn handle_line(&mut self, line: &str) -> Flow {
        let input = match command::parse(line) {
            Ok(input) => input,
            Err(e) => {
                self.error(e);
                return Flow::Continue;
            }
        };
        match input {
            Input::Empty => {}
            Input::Text(text) => {
                let published = self.hub.publish(
                    &self.room,
                    Some(self.sub.id),
                    Arc::clone(&self.nick),
                    text,
                    None,
                );
                match published {
                    Err(e) => self.error(format!("message not sent: {e}")),
                    Ok(published) => published.report_failure(&self.sub, |e| {
                        Bytes::from(format!("ERR message not sent: {e}\n"))
                    }),
                }
            }
            Input::Command(Command::Nick(new)) => self.rename(new),
            Input::Command(Command::Join(room)) => self.join(&room),
            Input::Command(Command::Who) => {
                if self.hub.cluster().is_none() {
                    self.reply(who_line(self.room.name(), &self.room.members()));
                } else {
                    // Members on other nodes are asked of Redis; the answer joins this
                    // client's queue when it comes.
                    let (hub, sub) = (Arc::clone(&self.hub), Arc::clone(&self.sub));
                    let room = Arc::clone(self.room.name());
                    tokio::spawn(async move {
                        let line = match hub.members(&room).await {
                            Ok(members) => who_line(&room, &members),
                            Err(e) => format!("ERR cannot list members: {e}\n"),
                        };
                        sub.offer(Delivery::direct(line));
                    });
                }
            }
            Input::Command(Command::Rooms) => {
                let mut out = String::from("* rooms:");
                for (i, (name, count)) in self.hub.rooms().iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    let _ = write!(out, "{sep}{name} ({count})");
                }
                out.push('\n');
                self.reply(out);
            }
            Input::Command(Command::History(n)) => {
                self.room.replay(&self.sub, Lookback::Last(n));
                self.reply(format!("* end of history of {}\n", self.room.name()));
            }
            Input::Command(Command::Since(id)) => match id.parse::<MessageId>() {
                Ok(id) => {
                    self.room.replay(&self.sub, Lookback::Since(id));
                    self.reply(format!("* end of history of {}\n", self.room.name()));
                }
                Err(e) => self.error(e),
            },
            Input::Command(Command::Help) => {
                let mut out = String::new();
                for line in command::HELP {
                    let _ = writeln!(out, "* {line}");
                }
                self.reply(out);
            }
            Input::Command(Command::Quit) => {
                self.reply("* bye\n".into());
                return Flow::Quit;
            }
        }
        Flow::Continue
    }

    fn rename(&mut self, new: String) {
        if *new == *self.nick {
            self.reply(format!("* you are already {new}\n"));
            return;
        }
        if let Err(e) = self.hub.claim_nick(self.sub.id, &new) {
            self.error(e);
            return;
        }
        // A case-only change keeps the same registry key, so release only a different one.
        if new.to_lowercase() != self.nick.to_lowercase() {
            self.hub.release_nick(self.sub.id, &self.nick);
        }
        self.nick = new.into();
        self.hub
            .rename(&self.room, self.sub.id, Arc::clone(&self.nick));
        self.reply(format!("* you are now {}\n", self.nick));
    }

    fn join(&mut self, name: &str) {
        if **self.room.name() == *name {
            self.reply(format!("* you are already in {name}\n"));
            return;
        }
        self.hub.leave(&self.room, self.sub.id, None);
        self.room = self.hub.join(name, &self.sub, Arc::clone(&self.nick));
        let count = self.room.member_count();
        self.reply(format!("* you joined {name} ({count} here)\n"));
    }

    /// Leaves the room and frees the nick; `reason` is told to the room.
    pub fn end(self, reason: Option<&'static str>) {
        self.hub.leave(&self.room, self.sub.id, reason);
        self.hub.release_nick(self.sub.id, &self.nick);
    }
}
