//! Webhook settings (`--webhook`, `[[webhooks]]`): which receivers get which events. The
//! sender that uses them is `crate::webhook`.

use serde::Deserialize;

use crate::auth::Pattern;

/// The kinds of webhook event, by the name a receiver sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// The first member arrived in a room (on this node).
    RoomOccupied,
    /// The last member left a room (on this node).
    RoomVacated,
    /// A member arrived.
    MemberJoined,
    /// A member left, by itself or cut (`reason`).
    MemberLeft,
    /// A message was published.
    Message,
}

impl HookKind {
    /// The name in the event's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::RoomOccupied => "room_occupied",
            HookKind::RoomVacated => "room_vacated",
            HookKind::MemberJoined => "member_joined",
            HookKind::MemberLeft => "member_left",
            HookKind::Message => "message",
        }
    }
}

/// One receiver: where, which events of which rooms, and the key its POSTs are signed with.
/// Its `Debug` leaves the secret out.
#[derive(Clone)]
pub struct Endpoint {
    /// An `http://` or `https://` URL.
    pub url: reqwest::Url,
    /// Signs every body sent here (`X-Switchboard-Signature`): its own `secret` from
    /// `[[webhooks]]`, else `--webhook-secret`. At least 16 bytes.
    pub secret: String,
    /// The kinds sent; empty = all.
    pub events: Vec<HookKind>,
    /// Room patterns (`*` = any run of characters); empty = every room.
    pub rooms: Vec<Pattern>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url.as_str())
            .field("secret", &"<hidden>")
            .field("events", &self.events)
            .field("rooms", &self.rooms)
            .finish()
    }
}

impl Endpoint {
    pub(crate) fn wants(&self, kind: HookKind, room: &str) -> bool {
        (self.events.is_empty() || self.events.contains(&kind))
            && (self.rooms.is_empty() || self.rooms.iter().any(|p| p.matches(room)))
    }
}

/// Every webhook setting, resolved.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The receivers.
    pub endpoints: Vec<Endpoint>,
    /// Events one endpoint may have queued; past it the oldest are dropped.
    pub queue_max: usize,
    /// Bytes of events one endpoint may have queued (messages are up to 64 KiB each); past
    /// it the oldest are dropped.
    pub queue_max_bytes: usize,
    /// Events per POST at most.
    pub batch_max: usize,
    /// A POST not answered within this long has failed.
    pub timeout: std::time::Duration,
}
