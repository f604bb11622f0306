//! The hub's rooms: looking them up and creating them within the limits (rooms in all, per
//! creator, members per room), joining and leaving, paging through them by name, sweeping
//! the idle ones, and telling the summed-up presence changes of busy ones.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::pace::Who;
use super::{Disconnect, Hub, MessageId, Room, Subscriber};

/// Why a room could not be created or joined (`Limits`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// `max_rooms`: the server holds as many rooms as it may.
    #[error("this server has too many rooms to create another")]
    TooMany,
    /// `max_rooms_per_creator`: this user or address created as many as it may.
    #[error("you have created too many rooms; reuse one, or wait until one is idle")]
    TooManyByYou,
    /// `max_members`: the room is full.
    #[error("room {0} is full")]
    Full(Arc<str>),
    /// `rooms_per_connection`: this connection is in as many rooms as one may be.
    #[error("you are in {0} rooms, the most one connection may join; leave one first")]
    TooManyJoined(usize),
    /// `memberships_per_ip`: connections from this address are in as many rooms as they
    /// may be, together.
    #[error("connections from your address are in too many rooms; leave some first")]
    TooManyFromAddress,
}

impl RoomError {
    /// The reason as metrics and JSON errors name it.
    pub fn code(&self) -> &'static str {
        match self {
            RoomError::TooMany => "too_many_rooms",
            RoomError::TooManyByYou => "too_many_rooms_created",
            RoomError::Full(_) => "room_full",
            RoomError::TooManyJoined(_) => "too_many_joined",
            RoomError::TooManyFromAddress => "too_many_memberships",
        }
    }
}

impl Hub {
    /// Tells every room's summed-up presence change (joins and leaves past its presence
    /// budget); the server calls it every second.
    pub fn flush_presence(&self) {
        let names: Vec<Arc<str>> = self
            .crowded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for name in names {
            if let Some(room) = self.existing_room(&name) {
                room.flush_crowd();
            }
        }
    }

    /// The room called `name`, created on first use.
    pub fn room(&self, name: &str) -> Arc<Room> {
        if let Some(room) = self.rooms.get(name) {
            return Arc::clone(&room);
        }
        let name: Arc<str> = name.into();
        // Made outside the map's lock: a durable store reads the room's state from disk.
        let init = (self.config.history)(&name);
        // A room the store does not know has no history, so it gets a new epoch.
        let epoch = init.epoch.unwrap_or_else(|| {
            let created = self.next_id.fetch_add(1, Ordering::Relaxed);
            (self.epochs.hash_one((&name, created)) as u32).max(1)
        });
        let presence = self
            .config
            .cluster
            .as_ref()
            .map(|c| Arc::clone(&c.presence));
        let mut created = false;
        let room = Arc::clone(
            self.rooms
                .entry(Arc::clone(&name))
                .or_insert_with(|| {
                    created = true;
                    Arc::new(Room::new(
                        Arc::clone(&name),
                        epoch,
                        init,
                        presence,
                        Arc::clone(&self.crowded),
                        self.config.observer.clone(),
                    ))
                })
                .value(),
        );
        if created {
            self.names().insert(Arc::clone(&name));
            if let Some(cluster) = &self.config.cluster {
                cluster.broker.watch(&name);
            }
            self.announce_room(&name);
        }
        room
    }

    /// The room called `name` for reading its history: the one in memory, or in a cluster
    /// the one Redis holds (loaded now), since other nodes may have written to it. Loading
    /// one makes a room here, so it goes through the caps (`open_room`) like any other:
    /// reading many names cannot grow the server past `max_rooms`.
    pub fn room_to_read(
        &self,
        name: &str,
        reader: Option<&Who>,
    ) -> Result<Option<Arc<Room>>, RoomError> {
        match &self.config.cluster {
            Some(_) => self.open_room(name, reader).map(Some),
            None => Ok(self.existing_room(name)),
        }
    }

    /// The room called `name` if it exists.
    pub fn existing_room(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.get(name).map(|r| Arc::clone(&r))
    }

    /// The room called `name`, created for `creator` if it does not exist yet and the
    /// limits allow: rooms in all, rooms per creator (`None`, a backend, is not counted).
    pub fn open_room(&self, name: &str, creator: Option<&Who>) -> Result<Arc<Room>, RoomError> {
        if let Some(room) = self.existing_room(name) {
            return Ok(room);
        }
        let limits = &self.config.limits;
        if self.rooms.len() >= limits.max_rooms {
            crate::metrics::METRICS.refuse(RoomError::TooMany.code());
            return Err(RoomError::TooMany);
        }
        if let Some(creator) = creator {
            let mut made = self.creators.entry(creator.clone()).or_insert(0);
            if *made >= limits.max_rooms_per_creator {
                crate::metrics::METRICS.refuse(RoomError::TooManyByYou.code());
                return Err(RoomError::TooManyByYou);
            }
            *made += 1;
        }
        let room = self.room(name);
        // Whoever created it first is its creator; a racing second opener gives its count
        // back.
        if let Some(creator) = creator
            && room.set_creator(creator.clone()).is_err()
        {
            self.forget_created(creator);
        }
        Ok(room)
    }

    fn forget_created(&self, creator: &Who) {
        self.creators.remove_if_mut(creator, |_, made| {
            *made -= 1;
            *made == 0
        });
    }

    /// Joins `sub` to room `name` (see `join_since`), creating it within the limits
    /// (`open_room`) and refusing when it is full.
    pub fn enter(
        &self,
        name: &str,
        sub: &Arc<Subscriber>,
        nick: Arc<str>,
        since: Option<MessageId>,
        creator: Option<&Who>,
    ) -> Result<(Arc<Room>, MessageId), RoomError> {
        let group = sub.addr.map(|a| crate::auth::throttle::group(a.ip()));
        if let Some(group) = group {
            let mut held = self.memberships.entry(group).or_insert(0);
            if *held >= self.config.limits.memberships_per_ip {
                drop(held);
                crate::metrics::METRICS.refuse(RoomError::TooManyFromAddress.code());
                return Err(RoomError::TooManyFromAddress);
            }
            *held += 1;
        }
        let entered = loop {
            let room = match self.open_room(name, creator) {
                Ok(room) => room,
                Err(e) => break Err(e),
            };
            if room.member_count() >= self.config.limits.max_members {
                let full = RoomError::Full(Arc::clone(room.name()));
                crate::metrics::METRICS.refuse(full.code());
                break Err(full);
            }
            if let Some(cursor) = room.add(sub, Arc::clone(&nick), since) {
                break Ok((room, cursor));
            }
        };
        if entered.is_err()
            && let Some(group) = group
        {
            self.forget_membership(group);
        }
        entered
    }

    /// Takes `sub` out of `room` (a room `enter` put it in) and tells the room.
    pub fn leave(&self, room: &Arc<Room>, sub: &Subscriber, reason: Option<Disconnect>) {
        room.remove(sub.id, reason);
        if let Some(addr) = sub.addr {
            self.forget_membership(crate::auth::throttle::group(addr.ip()));
        }
    }

    fn forget_membership(&self, group: std::net::IpAddr) {
        self.memberships.remove_if_mut(&group, |_, held| {
            *held = held.saturating_sub(1);
            *held == 0
        });
    }

    /// Adds `sub` to room `name` under `nick` and tells the room.
    pub fn join(&self, name: &str, sub: &Arc<Subscriber>, nick: Arc<str>) -> Arc<Room> {
        self.join_since(name, sub, nick, None).0
    }

    /// Joins like `join`, first queuing to `sub` everything after `since` (see `Room::add`).
    /// Also returns the cursor at which the member's live stream starts.
    pub fn join_since(
        &self,
        name: &str,
        sub: &Arc<Subscriber>,
        nick: Arc<str>,
        since: Option<MessageId>,
    ) -> (Arc<Room>, MessageId) {
        loop {
            let room = self.room(name);
            if let Some(cursor) = room.add(sub, Arc::clone(&nick), since) {
                return (room, cursor);
            }
            // The room was retired between lookup and add; the next lookup creates it anew.
        }
    }

    /// Drops rooms nobody uses: no members, no history, and no other holder (a connection or
    /// a long-poll). Run periodically by the server; returns how many were dropped.
    pub fn sweep(&self) -> usize {
        let before = self.rooms.len();
        self.rooms.retain(|_, room| {
            let retired = Arc::strong_count(room) == 1 && room.retire_if_idle();
            if retired {
                self.names().remove(room.name());
                if let Some(creator) = room.creator() {
                    self.forget_created(creator);
                }
            }
            !retired
        });
        before - self.rooms.len()
    }

    /// How many rooms exist, without listing them (`/healthz` asks this on every probe).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub(super) fn names(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<Arc<str>>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Up to `limit` rooms `visible` lets through, in name order after `after`, and the name
    /// to continue after when there are more. At most `limit * 10` names are looked at per
    /// call, so a caller who may see few rooms among many pages through them too.
    pub fn rooms_page(
        &self,
        after: Option<&str>,
        limit: usize,
        visible: impl Fn(&str) -> bool,
    ) -> (Vec<Arc<Room>>, Option<Arc<str>>) {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let names: Vec<Arc<str>> = self
            .names()
            .range::<str, _>((start, Bound::Unbounded))
            .take(limit.saturating_mul(10).saturating_add(1))
            .cloned()
            .collect();
        let mut page = Vec::new();
        for (looked, name) in names.iter().enumerate() {
            if page.len() == limit || looked == limit.saturating_mul(10) {
                let last = if looked == 0 {
                    name
                } else {
                    &names[looked - 1]
                };
                return (page, Some(Arc::clone(last)));
            }
            if visible(name)
                && let Some(room) = self.existing_room(name)
            {
                page.push(room);
            }
        }
        (page, None)
    }
}
