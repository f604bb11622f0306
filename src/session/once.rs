//! One-shot requests: what a caller with no connection of its own (an HTTP request, a gRPC
//! unary call) asks of the hub. A publish is checked and carried out here once for both, and
//! refused with a domain `Refused` that each transport turns into its own answer (an HTTP
//! status with the JSON error, a gRPC status) in one place.

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::{Action, Principal};
use crate::event::Author;
use crate::hub::pace::Who;
use crate::hub::{Acked, Hub, RoomError};
use crate::store::StoreError;

/// Longest idempotency key, on every transport.
pub const MAX_KEY: usize = 200;

/// Who is asking, from where.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub hub: &'a Hub,
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
    NotAllowed { room: String, action: Action },
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
        if let Some(identity) = Who::of(self.principal, self.addr)
            && let Err(wait) = self.hub.identities().check(&identity)
        {
            return Err(Refused::RateLimited(wait));
        }
        Ok(())
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
}
