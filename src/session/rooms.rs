//! A session's rooms: joining (within the room limits, resuming from a cursor), moving,
//! leaving, and what it may ask of them: members, the room list a page at a time, history.

use std::sync::Arc;

use super::Session;
use crate::auth::{Action, Principal};
use crate::event::MessageId;
use crate::hub::pace::Who;
use crate::hub::{Delivery, Lookback, MemberInfo, RoomError};
use crate::protocol::names::check_room;
use crate::reply::{ErrorCode, Reply};

/// Rooms listed per `/rooms` answer.
const ROOMS_PER_PAGE: usize = 50;

impl Session {
    /// Joins `room` (replaying what came after `since` first), or, if already in it,
    /// replays after `since`. Returns the cursor at which the live stream starts.
    /// Refused when the room would be one too many, is full, or would be one too many for
    /// this connection or its address (`RoomError`).
    pub fn join(&mut self, room: &str, since: Option<MessageId>) -> Result<MessageId, RoomError> {
        if let Some(index) = self.room_index(room) {
            let joined = &self.rooms[index];
            if let Some(since) = since {
                joined.replay(&self.sub, Lookback::Since(since));
            }
            return Ok(joined.cursor());
        }
        if self.rooms_left() == 0 {
            let full = RoomError::TooManyJoined(self.hub.limits().rooms_per_connection);
            crate::metrics::METRICS.refuse(full.code());
            return Err(full);
        }
        let creator = Who::of(&self.principal, self.sub.addr);
        let (joined, cursor) = self.hub.enter(
            room,
            &self.sub,
            Arc::clone(&self.nick),
            since,
            creator.as_ref(),
        )?;
        self.rooms.push(joined);
        Ok(cursor)
    }

    /// How many more rooms this connection may join (`limits.rooms_per_connection`; a
    /// backend is not held to it).
    pub fn rooms_left(&self) -> usize {
        if matches!(self.principal, Principal::Backend) {
            return usize::MAX;
        }
        let cap = self.hub.limits().rooms_per_connection;
        cap.saturating_sub(self.rooms.len())
    }

    /// Leaves `room` without answering the client; false if it was not in it.
    pub fn part(&mut self, room: &str) -> bool {
        let Some(index) = self.room_index(room) else {
            return false;
        };
        let left = self.rooms.swap_remove(index);
        self.hub.leave(&left, &self.sub, None);
        true
    }

    /// `join`, telling the client when it is refused.
    pub(super) fn join_or_refuse(&mut self, reference: Option<&str>, room: &str) {
        if let Err(e) = self.join(room, None) {
            self.refuse(reference, ErrorCode::LimitReached, e);
        }
    }

    pub(super) fn join_more(&mut self, room: &str, since: Option<&str>, reference: Option<&str>) {
        if let Err(e) = check_room(room) {
            return self.refuse(reference, ErrorCode::BadName, e);
        }
        if !self.may(room, Action::Subscribe) {
            return self.forbid(reference, room, Action::Subscribe);
        }
        let since = match MessageId::parse_opt(since) {
            Ok(since) => since,
            Err(e) => return self.refuse(reference, ErrorCode::BadFrame, e),
        };
        match self.join(room, since) {
            Ok(cursor) => self.joined(reference, room, cursor),
            Err(e) => self.refuse(reference, ErrorCode::LimitReached, e),
        }
    }

    pub(super) fn move_to(&mut self, name: &str) {
        if self.room_index(name).is_some() {
            return self.reply(Reply::AlreadyIn(name.into()));
        }
        if !self.may(name, Action::Subscribe) {
            return self.forbid(None, name, Action::Subscribe);
        }
        // A move is told to two rooms: it is paced like a message.
        if !self.paced(None) {
            return;
        }
        // Joined first, so that a refused move leaves the client where it was.
        if let Err(e) = self.join(name, None) {
            return self.refuse(None, ErrorCode::LimitReached, e);
        }
        let joined = self.rooms.pop();
        for room in self.rooms.drain(..) {
            self.hub.leave(&room, &self.sub, None);
        }
        self.rooms.extend(joined);
        self.reply(Reply::Moved {
            room: Arc::clone(self.rooms[0].name()),
            count: self.rooms[0].member_count(),
        });
    }

    pub(super) fn leave(&mut self, room: &str, reference: Option<&str>) {
        let Some(index) = self.room_index(room) else {
            return self.refuse(
                reference,
                ErrorCode::NotJoined,
                format!("not in room {room}"),
            );
        };
        let left = self.rooms.swap_remove(index);
        self.hub.leave(&left, &self.sub, None);
        self.reply(Reply::Left {
            reference: reference.map(Box::from),
            room: Arc::clone(left.name()),
        });
    }

    /// Leaves every room the client may no longer subscribe to, saying so.
    pub(super) fn leave_forbidden(&mut self) {
        let mut at = 0;
        while at < self.rooms.len() {
            if self.may(self.rooms[at].name(), Action::Subscribe) {
                at += 1;
                continue;
            }
            let left = self.rooms.swap_remove(at);
            self.hub.leave(&left, &self.sub, None);
            self.forbid(None, left.name(), Action::Subscribe);
        }
    }

    pub(super) fn who(&self) {
        let Some(room) = self.rooms.first() else {
            return;
        };
        if !self.may(room.name(), Action::Presence) {
            return self.forbid(None, room.name(), Action::Presence);
        }
        if self.hub.broker().is_none() {
            return self.reply(who(room.name(), room.members()));
        }
        // Members on other nodes are asked of Redis; the answer joins this client's queue
        // when it comes.
        let (hub, sub) = (Arc::clone(&self.hub), Arc::clone(&self.sub));
        let room = Arc::clone(room.name());
        self.tasks.spawn(async move {
            let reply = match hub.members(&room).await {
                Ok(members) => who(&room, members),
                Err(e) => Reply::refused(
                    None,
                    ErrorCode::Unavailable,
                    format!("cannot list members: {e}"),
                ),
            };
            sub.offer(Delivery::reply(reply));
        });
    }

    pub(super) fn list_rooms(&self, after: Option<&str>) {
        let (rooms, next) = self.hub.rooms_page(after, ROOMS_PER_PAGE, |name| {
            self.may(name, Action::Presence) || self.may(name, Action::Subscribe)
        });
        self.reply(Reply::Rooms {
            rooms: rooms
                .iter()
                .map(|room| (Arc::clone(room.name()), room.member_count()))
                .collect(),
            next,
        });
    }

    pub(super) fn history(&self, lookback: Lookback) {
        let Some(room) = self.rooms.first() else {
            return;
        };
        if !self.may(room.name(), Action::History) {
            return self.forbid(None, room.name(), Action::History);
        }
        room.replay(&self.sub, lookback);
        self.reply(Reply::HistoryEnd(Arc::clone(room.name())));
    }
}

/// The answer to `/who`: each member's nick and transport.
fn who(room: &Arc<str>, members: Vec<MemberInfo>) -> Reply {
    Reply::Who {
        room: Arc::clone(room),
        members: members.into_iter().map(|m| (m.nick, m.transport)).collect(),
    }
}
