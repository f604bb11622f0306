//! Publishing from a session: the rate limits every publish passes, room messages with their
//! acks, and direct messages.

use std::sync::Arc;

use bytes::Bytes;

use super::Session;
use crate::auth::Action;
use crate::event::Disconnect;
use crate::hub::pace::{Verdict, Who};
use crate::hub::{Delivery, Published};
use crate::protocol::envelope::{ErrorCode, ServerFrame};
use crate::store::StoreError;
use crate::wire::Wire;

impl Session {
    /// Counts a publish against this connection's and its identity's rates. Over them the
    /// client is told how long to wait; told too often in a row, it is cut as a flood.
    pub(super) fn paced(&mut self, reference: Option<&str>) -> bool {
        let who = Who::of(&self.principal, self.sub.addr);
        match self.pace.check(self.hub.identities(), who.as_ref()) {
            Verdict::Allow => true,
            Verdict::Wait(wait) => {
                self.refuse(
                    reference,
                    ErrorCode::RateLimited,
                    format!(
                        "too many messages; not sent (retry in {:.1} s)",
                        wait.as_secs_f64().max(0.1)
                    ),
                );
                false
            }
            Verdict::Flood => {
                self.sub.kick(Disconnect::Flooding);
                false
            }
        }
    }

    pub(super) fn publish(
        &mut self,
        room: Option<&str>,
        text: &str,
        key: Option<&str>,
        reference: Option<&str>,
    ) {
        let index = match room {
            Some(name) => self.room_index(name),
            None if self.rooms.len() == 1 => Some(0),
            None => None,
        };
        let Some(index) = index else {
            let message = match room {
                Some(name) => format!("not in room {name}; join it first"),
                None => "several rooms joined; say which with \"room\"".to_owned(),
            };
            return self.refuse(reference, ErrorCode::NotJoined, message);
        };
        if !self.may(self.rooms[index].name(), Action::Publish) {
            return self.forbid(reference, self.rooms[index].name(), Action::Publish);
        }
        if !self.paced(reference) {
            return;
        }
        let room = &self.rooms[index];
        let published = self
            .hub
            .publish(room, Some(self.sub.id), self.author(), text, key);
        match published {
            Err(e) => self.refuse(
                reference,
                ErrorCode::Unavailable,
                format!("message not sent: {e}"),
            ),
            Ok(published) if self.wire == Wire::Json => {
                self.ack(published, Arc::clone(room.name()), reference)
            }
            Ok(published) => {
                let newline = if self.wire == Wire::Line { "\n" } else { "" };
                published.report_failure(&self.sub, move |e: StoreError| {
                    Bytes::from(format!("ERR message not sent: {e}{newline}"))
                });
            }
        }
    }

    /// The structured ack waits until the message is durable, without holding up this
    /// connection's other traffic.
    fn ack(&self, published: Published, room: Arc<str>, reference: Option<&str>) {
        let sub = Arc::clone(&self.sub);
        let reference = reference.map(str::to_owned);
        self.tasks.spawn(async move {
            let reference = reference.as_deref();
            let frame = match published.durable().await {
                Ok(acked) => ServerFrame::Ack {
                    reference,
                    room: &room,
                    id: acked.id.to_string(),
                    duplicate: acked.duplicate,
                },
                Err(e) => ServerFrame::Error {
                    reference,
                    code: ErrorCode::Unavailable,
                    message: format!("message not stored: {e}"),
                },
            };
            sub.offer(Delivery::direct(frame.encode()));
        });
    }

    pub(super) fn direct(&mut self, to: &str, text: &str, reference: Option<&str>) {
        if !self.hub.auth().may_direct(&self.principal) {
            return self.refuse(
                reference,
                ErrorCode::Unauthorized,
                "direct messages need a token on this server (/auth TOKEN)",
            );
        }
        if !self.paced(reference) {
            return;
        }
        let sent = self.hub.direct(self.author(), self.sub.id, to, text);
        match sent {
            Err(e) => self.refuse(reference, ErrorCode::NoSuchUser, e),
            Ok(()) if self.wire == Wire::Json => {
                self.frame(&ServerFrame::Sent { reference, to });
            }
            // One `you -> NICK:` per line, as the recipient sees `NICK -> you:` per line.
            Ok(()) => {
                let lines: Vec<String> = text
                    .split('\n')
                    .map(|line| format!("you -> {to}: {}", line.trim_end_matches('\r')))
                    .collect();
                self.notice(lines.join("\n"));
            }
        }
    }
}
