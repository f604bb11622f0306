//! One-shot requests: what a caller with no connection of its own (an HTTP request, a gRPC
//! unary call) asks of the hub. A publish, a history page, a room's members and the room list
//! are checked and carried out here once for both, and refused with a domain `Refused` that
//! each transport turns into its own answer (an HTTP status with the JSON error, a gRPC
//! status) in one place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Action, Principal};
use crate::event::Author;
use crate::hub::pace::Who;
use crate::hub::{Acked, Hub, MemberInfo, MessageId, Page, Room, RoomError};
use crate::store::StoreError;

/// Longest idempotency key, on every transport.
pub const MAX_KEY: usize = 200;
/// Largest page of history or of the room list, on every transport.
pub const MAX_PAGE: usize = 1_000;
/// The page size when a request names none.
pub const DEFAULT_PAGE: usize = 100;

/// Who is asking, from where.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The hub asked.
    pub hub: &'a Hub,
    /// Who is asking, as `auth` decided.
    pub principal: &'a Principal,
    /// The client's address (behind a trusted proxy, the one it names).
    pub addr: Option<SocketAddr>,
}

/// Why a one-shot request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The caller's grants do not cover `action` on `room`; the transport says whether
    /// signing in would help (it knows the principal).
    #[error("not allowed to {} in {room}", action.as_str())]
    NotAllowed {
        /// The room asked about.
        room: String,
        /// What was asked.
        action: Action,
    },
    /// Past the identity's publish rate; it may try again after this long.
    #[error("too many messages; retry in {} ms", .0.as_millis().max(1))]
    RateLimited(Duration),
    /// Nothing but white space.
    #[error("the message text is empty")]
    Empty,
    /// An idempotency key over `MAX_KEY` bytes.
    #[error("key longer than {MAX_KEY} bytes")]
    KeyTooLong,
    /// The room cannot be made or joined (`max_rooms`, the creator's cap…).
    #[error(transparent)]
    Room(#[from] RoomError),
    /// The store could not take it now.
    #[error(transparent)]
    Unavailable(#[from] StoreError),
    /// The caller's deadline passed before the message was durable.
    #[error("the message was not stored in time")]
    DeadlineExceeded,
    /// The members could not be listed (a cluster whose Redis is away).
    #[error("cannot list members: {0}")]
    Presence(StoreError),
}

/// A history page, and the room it was read from (none when the room does not exist: an
/// empty page).
#[derive(Debug)]
pub struct Read {
    /// The messages, oldest first, within `reply_bytes`.
    pub page: Page,
    /// The room read, for its cursor.
    pub room: Option<Arc<Room>>,
}

impl Caller<'_> {
    /// Whether the caller may publish to `room` now: its grants, then its identity's rate
    /// (a token is taken). Asked before a body is read, so a refused caller costs nothing
    /// more.
    pub fn may_publish(&self, room: &str) -> Result<(), Refused> {
        if !self
            .hub
            .auth()
            .allows(self.principal, room, Action::Publish)
        {
            return Err(Refused::NotAllowed {
                room: room.to_owned(),
                action: Action::Publish,
            });
        }
        self.pace()
    }

    /// Takes one token from the caller's identity bucket (a backend has none), or says how
    /// long to wait: every publish and direct message without a connection passes it.
    pub fn pace(&self) -> Result<(), Refused> {
        match Who::of(self.principal, self.addr) {
            Some(identity) => self
                .hub
                .identities()
                .check(&identity)
                .map_err(Refused::RateLimited),
            None => Ok(()),
        }
    }

    /// Publishes `text` to `room` (made within the caller's room caps) and waits until it
    /// is durable, or until `deadline`; then until local members have it, so that a read
    /// right after the answer finds it. A repeated `key` publishes nothing and answers with
    /// the first id. `may_publish` is the caller's to ask first.
    pub async fn publish(
        &self,
        room: &str,
        author: Author,
        text: &str,
        key: Option<&str>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Acked, Refused> {
        if text.trim().is_empty() {
            return Err(Refused::Empty);
        }
        if key.is_some_and(|k| k.len() > MAX_KEY) {
            return Err(Refused::KeyTooLong);
        }
        let creator = Who::of(self.principal, self.addr);
        let opened = self.hub.open_room(room, creator.as_ref())?;
        let key = key.filter(|k| !k.is_empty());
        let published = self.hub.publish(&opened, None, author, text, key)?;
        let durable = published.durable();
        let acked = match deadline {
            None => durable.await,
            Some(at) => tokio::time::timeout_at(at, durable)
                .await
                .map_err(|_| Refused::DeadlineExceeded)?,
        }?;
        self.hub.settle(&opened, acked.id).await;
        Ok(acked)
    }

    /// `action` on `room`, or why not.
    fn may(&self, room: &str, action: Action) -> Result<(), Refused> {
        if self.hub.auth().allows(self.principal, room, action) {
            Ok(())
        } else {
            Err(Refused::NotAllowed {
                room: room.to_owned(),
                action,
            })
        }
    }

    /// Up to `limit` messages of `room` after `since`, within `reply_bytes`. Reading may
    /// load the room (a cluster's), within the caller's room caps.
    pub fn history(
        &self,
        room: &str,
        since: Option<MessageId>,
        limit: usize,
    ) -> Result<Read, Refused> {
        self.may(room, Action::History)?;
        self.read(room, since, limit)
    }

    /// `history` for a caller whose grant was checked already (HTTP's, where a long-poll
    /// needs only `subscribe`).
    pub fn read(
        &self,
        room: &str,
        since: Option<MessageId>,
        limit: usize,
    ) -> Result<Read, Refused> {
        let reader = Who::of(self.principal, self.addr);
        let found = self.hub.room_to_read(room, reader.as_ref())?;
        let page = match &found {
            Some(r) => r.page(since, limit),
            None => Page::empty(),
        };
        let page = page.within(self.hub.limits().reply_bytes);
        Ok(Read { page, room: found })
    }

    /// Who is in `room`, on every transport and node.
    pub async fn members(&self, room: &str) -> Result<Vec<MemberInfo>, Refused> {
        self.may(room, Action::Presence)?;
        self.hub.members(room).await.map_err(Refused::Presence)
    }

    /// Up to `limit` rooms the caller may see (presence or subscribe), in name order after
    /// `after`, and where the next page starts.
    pub fn rooms(&self, after: Option<&str>, limit: usize) -> (Vec<Arc<Room>>, Option<Arc<str>>) {
        let auth = self.hub.auth();
        self.hub.rooms_page(after, limit, |name| {
            let may = auth.actions(self.principal, name);
            may.allows(Action::Presence) || may.allows(Action::Subscribe)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubConfig;

    fn hub() -> Arc<Hub> {
        Hub::new(HubConfig {
            history: crate::store::memory(crate::store::Retention::default()),
            auth: crate::auth::Auth::open(),
            ..HubConfig::default()
        })
    }

    fn author() -> Author {
        Author {
            nick: "api".into(),
            sender: crate::event::Sender::Backend,
        }
    }

    #[tokio::test]
    async fn a_publish_is_checked_stored_and_read_back_once() {
        let hub = hub();
        let caller = Caller {
            hub: &hub,
            principal: &Principal::Backend,
            addr: None,
        };
        assert!(matches!(
            caller.publish("r", author(), "  ", None, None).await,
            Err(Refused::Empty)
        ));
        let long = "k".repeat(MAX_KEY + 1);
        assert!(matches!(
            caller.publish("r", author(), "hi", Some(&long), None).await,
            Err(Refused::KeyTooLong)
        ));
        let first = caller
            .publish("r", author(), "hi", Some("k1"), None)
            .await
            .unwrap();
        let again = caller
            .publish("r", author(), "hi", Some("k1"), None)
            .await
            .unwrap();
        assert!(!first.duplicate && again.duplicate);
        assert_eq!(first.id, again.id);
        let read = caller.history("r", None, DEFAULT_PAGE).unwrap();
        assert_eq!(read.page.events.len(), 1, "one message for one key");
        assert!(caller.history("nowhere", None, 10).unwrap().room.is_none());
        let (rooms, next) = caller.rooms(None, 10);
        assert_eq!(rooms.len(), 1);
        assert!(next.is_none());
    }

    #[tokio::test]
    async fn grants_are_asked_first() {
        let config = crate::auth::AuthConfig {
            secrets: vec!["a-secret-of-at-least-thirty-two-bytes!".into()],
            ..Default::default()
        };
        let hub = Hub::new(HubConfig {
            history: crate::store::memory(crate::store::Retention::default()),
            auth: Arc::new(crate::auth::Auth::new(&config).unwrap()),
            ..HubConfig::default()
        });
        let caller = Caller {
            hub: &hub,
            principal: &Principal::Anonymous,
            addr: None,
        };
        assert!(matches!(
            caller.may_publish("closed"),
            Err(Refused::NotAllowed {
                action: Action::Publish,
                ..
            })
        ));
        assert!(matches!(
            caller.history("closed", None, 10),
            Err(Refused::NotAllowed {
                action: Action::History,
                ..
            })
        ));
        assert!(matches!(
            caller.members("closed").await,
            Err(Refused::NotAllowed {
                action: Action::Presence,
                ..
            })
        ));
    }
}
