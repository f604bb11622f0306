//! A room: its members, its sequence counter, and the fan-out of each event to its members.
//!
//! Each room has its own lock; nothing on the publish path is shared between rooms. The lock is
//! held while an event gets its sequence number and is offered to every member's queue, so all
//! members see a room's events in one order. Offering never waits (see `Subscriber::offer`), so
//! the lock is held for a bounded, allocation-free loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::event::{Event, EventKind, MessageId};
use super::subscriber::{Delivery, Subscriber, SubscriberId, Transport};

/// A member as seen by presence queries.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    /// The member's nick in this room.
    pub nick: Arc<str>,
    /// The transport it is connected through.
    pub transport: Transport,
}

#[derive(Debug)]
struct Member {
    sub: Arc<Subscriber>,
    nick: Arc<str>,
}

#[derive(Debug, Default)]
struct RoomState {
    /// The last sequence number handed out.
    last_seq: u64,
    /// Dense so that fan-out walks a slice.
    members: Vec<Member>,
    /// Where each member sits in `members`, for O(1) leave.
    index: HashMap<SubscriberId, usize>,
    /// Set when the hub removed the room from its map; a joiner holding a stale `Arc` retries.
    retired: bool,
}

impl RoomState {
    fn remove(&mut self, id: SubscriberId) -> Option<Member> {
        let at = self.index.remove(&id)?;
        let member = self.members.swap_remove(at);
        if let Some(moved) = self.members.get(at) {
            self.index.insert(moved.sub.id, at);
        }
        Some(member)
    }
}

/// One room.
#[derive(Debug)]
pub struct Room {
    /// The room's name, shared with every event it produces.
    name: Arc<str>,
    /// See `MessageId::epoch`.
    epoch: u32,
    state: Mutex<RoomState>,
}

impl Room {
    pub(crate) fn new(name: Arc<str>, epoch: u32) -> Self {
        Self {
            name,
            epoch,
            state: Mutex::new(RoomState::default()),
        }
    }

    /// The room's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // A panic while holding the lock leaves the state consistent (every mutation is a
        // single push/remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a member and tells the room. Returns false if the room was retired meanwhile; the
    /// caller looks the room up again.
    pub(crate) fn add(&self, sub: &Arc<Subscriber>, nick: Arc<str>) -> bool {
        let mut state = self.lock();
        if state.retired {
            return false;
        }
        if state.index.contains_key(&sub.id) {
            return true;
        }
        let at = state.members.len();
        state.members.push(Member {
            sub: Arc::clone(sub),
            nick: Arc::clone(&nick),
        });
        state.index.insert(sub.id, at);
        let event = self.event(EventKind::Join, None, nick, "", Some(sub.id));
        self.deliver(&mut state, event);
        true
    }

    /// Removes a member and tells the room. Returns true if the room is now empty.
    pub(crate) fn remove(&self, id: SubscriberId, reason: Option<&'static str>) -> bool {
        let mut state = self.lock();
        if let Some(member) = state.remove(id) {
            let event = self.event(EventKind::Leave { reason }, None, member.nick, "", Some(id));
            self.deliver(&mut state, event);
        }
        state.members.is_empty()
    }

    /// Marks the room retired if it is empty; called by the hub under its map's shard lock.
    pub(crate) fn retire_if_empty(&self) -> bool {
        let mut state = self.lock();
        if state.members.is_empty() {
            state.retired = true;
        }
        state.retired
    }

    /// Publishes a message: gives it the next id and offers it to every member.
    pub(crate) fn publish(
        &self,
        origin: Option<SubscriberId>,
        nick: Arc<str>,
        text: &str,
    ) -> Arc<Event> {
        let mut state = self.lock();
        state.last_seq += 1;
        let id = MessageId {
            epoch: self.epoch,
            seq: state.last_seq,
        };
        let event = self.event(EventKind::Message, Some(id), nick, text, origin);
        self.deliver(&mut state, Arc::clone(&event));
        event
    }

    /// Changes a member's nick and tells the room.
    pub(crate) fn rename(&self, id: SubscriberId, nick: Arc<str>) {
        let mut state = self.lock();
        let Some(&at) = state.index.get(&id) else {
            return;
        };
        let old = std::mem::replace(&mut state.members[at].nick, Arc::clone(&nick));
        let event = self.event(EventKind::Nick { old }, None, nick, "", Some(id));
        self.deliver(&mut state, event);
    }

    /// The current members.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.lock()
            .members
            .iter()
            .map(|m| MemberInfo {
                nick: Arc::clone(&m.nick),
                transport: m.sub.transport,
            })
            .collect()
    }

    /// How many members the room has.
    pub fn member_count(&self) -> usize {
        self.lock().members.len()
    }

    fn event(
        &self,
        kind: EventKind,
        id: Option<MessageId>,
        nick: Arc<str>,
        text: &str,
        origin: Option<SubscriberId>,
    ) -> Arc<Event> {
        Arc::new(Event::new(
            kind,
            Arc::clone(&self.name),
            id,
            nick,
            text.into(),
            origin,
        ))
    }

    /// Offers `event` to every member. Members that cannot take it (queue full, or connection
    /// gone) are removed, and the room is told they left; that notice may in turn push out
    /// more members, so this loops until nobody else is removed. Each pass removes at least one
    /// member, so it ends.
    fn deliver(&self, state: &mut RoomState, event: Arc<Event>) {
        let mut gone = Vec::new();
        offer_all(state, &event, &mut gone);
        while let Some(id) = gone.pop() {
            let Some(member) = state.remove(id) else {
                continue;
            };
            let reason = member.sub.kick_reason().map(|r| r.as_str());
            let leave = self.event(EventKind::Leave { reason }, None, member.nick, "", Some(id));
            offer_all(state, &leave, &mut gone);
        }
    }
}

fn offer_all(state: &RoomState, event: &Arc<Event>, gone: &mut Vec<SubscriberId>) {
    for member in &state.members {
        if event.origin == Some(member.sub.id) && !member.sub.echo_own {
            continue;
        }
        if !member.sub.offer(Delivery::Event(Arc::clone(event))) && !gone.contains(&member.sub.id) {
            gone.push(member.sub.id);
        }
    }
}
