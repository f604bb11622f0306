//! Publishing from a session: the rate limits every publish passes, room messages with their
//! acks, and direct messages.

use std::sync::Arc;

use super::{Dialect, Session};
use crate::auth::Action;
use crate::event::Disconnect;
use crate::hub::pace::{Verdict, Who};
use crate::hub::{Delivery, Published};
use crate::reply::{ErrorCode, Reply};
use crate::store::StoreError;

/// Why `Session::publish_to` refused a message, for transports that answer with a code of
/// their own (MQTT reason codes) instead of a queued error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal.
    pub code: ErrorCode,
    /// What to log.
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl std::fmt::Display) -> Self {
        Self {
            code,
            message: message.to_string(),
        }
    }
}

/// Why `author` refused the name a stateless publisher (HTTP, gRPC `Publish`) asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameRefused {
    /// A token publishes under its own name only.
    #[error("a token publishes under its own name, {0}")]
    NotYours(Arc<str>),
    /// An anonymous sender asked for a name someone holds, is reserved, or a user has.
    #[error(transparent)]
    Taken(#[from] crate::hub::HubError),
}

/// Who a publisher without a session is shown as. A backend names anyone (`fallback` when it
/// gives no name); a token publishes under its verified name; an anonymous sender gets its
/// nick only if nobody connected holds it (or one that looks the same), it is not reserved
/// and no verified user uses it, unless `nick_key` shows it is the holder's own stream.
pub fn author(
    hub: &crate::hub::Hub,
    who: &crate::auth::Principal,
    nick: Option<String>,
    nick_key: Option<&str>,
    fallback: (&str, &str),
) -> Result<crate::event::Author, NameRefused> {
    use crate::auth::Principal;
    let (anonymous, backend) = fallback;
    let nick = match who {
        Principal::Backend => nick.unwrap_or_else(|| backend.to_owned()),
        Principal::User(identity) => {
            if nick.as_deref().is_some_and(|n| n != &*identity.name) {
                return Err(NameRefused::NotYours(Arc::clone(&identity.name)));
            }
            identity.name.to_string()
        }
        Principal::Anonymous => match nick {
            None => anonymous.to_owned(),
            Some(nick) if nick_key.is_some_and(|k| hub.holds_nick_key(&nick, k)) => nick,
            Some(nick) => {
                hub.check_free_nick(&nick)?;
                nick
            }
        },
    };
    Ok(crate::event::Author {
        nick: nick.into(),
        sender: hub.auth().sender(who),
    })
}

impl Session {
    /// The publish limits' verdict on one more message, for a transport that waits instead
    /// of refusing (MQTT reads no further until the wait is over). Counted like `paced`.
    pub fn pace(&mut self) -> Verdict {
        let who = Who::of(&self.principal, self.sub.addr);
        self.pace.check(self.hub.identities(), who.as_ref())
    }

    /// Counts one publish against the identity's bucket alone (a user, or an anonymous
    /// address; an API key is not limited): for what is said once as a connection ends, the
    /// MQTT will. `Err(wait)` when over the rate.
    pub fn pace_identity(&self) -> Result<(), std::time::Duration> {
        match Who::of(&self.principal, self.sub.addr) {
            Some(who) => self.hub.identities().check(&who),
            None => Ok(()),
        }
    }

    /// Publishes `text` to the room `name`, joined or not, creating it within the room
    /// limits: what MQTT's PUBLISH and a backend's publish do. The caller paces it first
    /// (`pace`); the refusal is returned rather than queued to the client.
    pub fn publish_to(&mut self, name: &str, text: &str) -> Result<Published, Refusal> {
        crate::protocol::names::check_room(name)
            .map_err(|e| Refusal::new(ErrorCode::BadName, e))?;
        if !self.may(name, Action::Publish) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                format!("not allowed to publish in {name}"),
            ));
        }
        let creator = Who::of(&self.principal, self.sub.addr);
        let room = self
            .hub
            .open_room(name, creator.as_ref())
            .map_err(|e| Refusal::new(ErrorCode::LimitReached, e))?;
        self.hub
            .publish(&room, Some(self.sub.id), self.author(), text, None)
            .map_err(|e| Refusal::new(ErrorCode::Unavailable, format!("message not sent: {e}")))
    }

    /// Counts a publish against this connection's and its identity's rates. Over them the
    /// client is told how long to wait; told too often in a row, it is cut as a flood.
    pub(super) fn paced(&mut self, reference: Option<&str>) -> bool {
        match self.pace() {
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
        // The same refusals as HTTP and gRPC: nothing to send, or a name no room can have
        // (which is a bad name, not a room this connection left out).
        if text.trim().is_empty() {
            return self.refuse(reference, ErrorCode::BadFrame, "the message text is empty");
        }
        if let Some(name) = room
            && let Err(e) = crate::protocol::names::check_room(name)
        {
            return self.refuse(reference, ErrorCode::BadName, e);
        }
        let index = match room {
            Some(name) => self.room_index(name),
            None if self.rooms.len() == 1 => Some(0),
            None => None,
        };
        let Some(index) = index else {
            let message = match room {
                Some(name) => format!("not in room {name}; join it first"),
                None if self.rooms.is_empty() && self.dialect.is_chat() => {
                    "you are in no room, so this went nowhere; /join ROOM first".to_owned()
                }
                None if self.rooms.is_empty() => {
                    "no room joined; join one first, then name it with \"room\"".to_owned()
                }
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
            Ok(published) if self.dialect == Dialect::Structured => {
                self.ack(published, Arc::clone(room.name()), reference)
            }
            Ok(published) => published.report_failure(&self.sub, move |e: StoreError| {
                Reply::refused(
                    None,
                    ErrorCode::Unavailable,
                    format!("message not sent: {e}"),
                )
            }),
        }
    }

    /// The structured ack waits until the message is durable, without holding up this
    /// connection's other traffic.
    fn ack(&self, published: Published, room: Arc<str>, reference: Option<&str>) {
        let sub = Arc::clone(&self.sub);
        let reference = reference.map(Box::from);
        self.tasks.spawn(async move {
            let reply = match published.durable().await {
                Ok(acked) => Reply::Ack {
                    reference,
                    room,
                    id: acked.id,
                    duplicate: acked.duplicate,
                },
                Err(e) => Reply::Refused {
                    reference,
                    code: ErrorCode::Unavailable,
                    message: format!("message not stored: {e}"),
                },
            };
            sub.offer(Delivery::reply(reply));
        });
    }

    pub(super) fn direct(&mut self, to: &str, text: &str, reference: Option<&str>) {
        if text.trim().is_empty() {
            return self.refuse(reference, ErrorCode::BadFrame, "the message text is empty");
        }
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
            Ok(()) => self.reply(Reply::Sent {
                reference: reference.map(Box::from),
                to: to.into(),
                text: text.into(),
            }),
        }
    }
}
