//! A room: its members, its sequence counter, and the fan-out of each event to its members.
//!
//! Each room has its own lock; nothing on the publish path is shared between rooms. The lock is
//! held while an event gets its sequence number and is offered to every member's queue, so all
//! members see a room's events in one order. Offering never waits (see `Subscriber::offer`), so
//! the lock is held for a bounded, allocation-free loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::subscriber::{Delivery, Gap, Replay, Subscriber, SubscriberId};
use crate::broker::{Applied, MemberInfo, Pending, Presence};
use crate::event::{Author, Disconnect, Event, EventKind, MessageId};
use crate::store::{Durability, RoomInit, StoreError};

/// How far back a replay reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookback {
    /// The last N messages.
    Last(usize),
    /// Every kept message after this id.
    Since(MessageId),
}

/// A page of history read without joining.
#[derive(Debug, Clone)]
pub struct Page {
    /// Oldest first.
    pub events: Vec<Arc<Event>>,
    /// Set when history does not reach back to the cursor.
    pub gap: Option<Gap>,
    /// True when more messages follow this page.
    pub more: bool,
    /// The room's latest message id, if it has had any in this epoch.
    pub last_id: Option<MessageId>,
}

impl Page {
    /// No messages: a room that does not exist reads as empty.
    pub fn empty() -> Self {
        Self {
            events: Vec::new(),
            gap: None,
            more: false,
            last_id: None,
        }
    }

    /// Where the next page starts for a client that asked after `since`: after the last
    /// message returned, else where the client was (unless that cursor could not be placed),
    /// else the room's latest.
    pub fn next(&self, since: Option<MessageId>) -> Option<MessageId> {
        self.events
            .last()
            .and_then(|e| e.id)
            .or(if self.gap.is_none() { since } else { None })
            .or(self.last_id)
    }

    /// The page cut to `budget` bytes (`Event::weight`): the oldest messages that fit, with
    /// `more` set when some were left for the next page. At least one message is kept so
    /// that paging always moves on.
    pub fn within(mut self, budget: usize) -> Self {
        let mut weight = 0;
        let fits = self
            .events
            .iter()
            .take_while(|e| {
                weight += e.weight();
                weight <= budget
            })
            .count()
            .max(1);
        if fits < self.events.len() {
            self.events.truncate(fits);
            self.more = true;
        }
        self
    }
}

#[derive(Debug)]
struct Member {
    sub: Arc<Subscriber>,
    nick: Arc<str>,
}

#[derive(Debug)]
struct RoomState {
    /// See `MessageId::epoch`. Fixed for the room's life, except when a cluster room finds
    /// that Redis holds another epoch (`Room::reset`).
    epoch: u32,
    /// Recent messages, written under this lock in sequence order.
    history: Box<dyn crate::store::History>,
    /// The last sequence number handed out.
    last_seq: u64,
    /// Dense so that fan-out walks a slice.
    members: Vec<Member>,
    /// Where each member sits in `members`, for O(1) leave.
    index: HashMap<SubscriberId, usize>,
    /// Members told of presence (`Transport::hears_presence`); with none, a join or leave
    /// is not even counted.
    listeners: usize,
    /// Set when the hub removed the room from its map; a joiner holding a stale `Arc` retries.
    retired: bool,
    /// Idempotency keys of recent publishes and the ids they got, so that a client retrying a
    /// publish (after a reconnect, or over another transport) does not post it twice.
    keys: HashMap<Box<str>, MessageId>,
    /// The same keys in arrival order, to forget the oldest past `KEYS_HELD`.
    key_order: std::collections::VecDeque<Box<str>>,
    /// True when the store may know keys `keys` does not (it held more than `KEYS_HELD`
    /// at load, or some were forgotten since): only then is a new key asked of the store.
    keys_partial: bool,
    /// Presence events' budget and what was summed up past it.
    crowd: Crowd,
}

use crate::store::KEYS_HELD;

/// Joins, leaves and renames told one by one per second, on average, in one room; past
/// it (and its burst) they are summed up in one `EventKind::Crowd` event, so that a storm
/// of arrivals (a thousand UDP senders at once, say) cannot fill readers' queues.
const PRESENCE_RATE: f64 = 20.0;
/// Presence events told at once before `PRESENCE_RATE` applies.
const PRESENCE_BURST: f64 = 100.0;

/// Rooms holding a summed-up presence change not yet told (`Room::flush_crowd`).
pub(crate) type Crowded = std::sync::Mutex<std::collections::HashSet<Arc<str>>>;

/// Presence changes not told one by one.
#[derive(Debug)]
struct Crowd {
    bucket: super::pace::Bucket,
    joined: u32,
    left: u32,
}

/// The outcome of a publish.
#[derive(Debug)]
pub enum Published {
    /// A new message, delivered to the room; durable once `Durability` says so.
    New(Arc<Event>, Durability),
    /// The idempotency key was seen before: nothing was published; this is the earlier id.
    Duplicate(MessageId),
    /// Handed to the cluster (Redis), which numbers and stores it; local members get it from
    /// the bus like every other node's.
    Remote(Pending),
}

/// A publish once it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The message's id (the earlier one for a duplicate).
    pub id: MessageId,
    /// True when an idempotency key had been used before: nothing new was published.
    pub duplicate: bool,
}

impl Published {
    /// Waits until the message is durable (at once for a duplicate: it was acknowledged
    /// before).
    pub async fn durable(self) -> Result<Acked, StoreError> {
        match self {
            Published::New(event, durability) => {
                durability.wait().await?;
                Ok(Acked {
                    id: event.id.unwrap_or(MessageId { epoch: 0, seq: 0 }),
                    duplicate: false,
                })
            }
            Published::Duplicate(id) => Ok(Acked {
                id,
                duplicate: true,
            }),
            Published::Remote(pending) => {
                let stored = pending.wait().await?;
                Ok(Acked {
                    id: stored.id,
                    duplicate: stored.duplicate,
                })
            }
        }
    }

    /// For transports that do not acknowledge publishes: if storing fails later (a publish
    /// handed to Redis), sends `sub` the bytes `error` makes from the reason.
    pub fn report_failure(
        self,
        sub: &Arc<Subscriber>,
        error: impl FnOnce(StoreError) -> crate::reply::Reply + Send + 'static,
    ) {
        if let Published::Remote(pending) = self {
            let sub = Arc::clone(sub);
            tokio::spawn(async move {
                if let Err(e) = pending.wait().await {
                    sub.offer(Delivery::reply(error(e)));
                }
            });
        }
    }
}

impl RoomState {
    fn remove(&mut self, id: SubscriberId) -> Option<Member> {
        let at = self.index.remove(&id)?;
        let member = self.members.swap_remove(at);
        if member.sub.transport.hears_presence() {
            self.listeners -= 1;
        }
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
    state: Mutex<RoomState>,
    /// Set when nodes share rooms: local presence changes are announced there.
    presence: Option<Arc<dyn Presence>>,
    /// Woken on every message, for long-polls (which are not members).
    changed: Notify,
    /// Who created it, when that is counted (`Hub::open_room`).
    creator: std::sync::OnceLock<super::pace::Who>,
    /// Where the room puts its name when it has a summed-up presence change to tell; the
    /// hub flushes them every second (`Hub::flush_presence`).
    crowded: Arc<Crowded>,
    /// Told of arrivals, departures and messages (`Hub`'s observer: webhooks).
    observer: Option<Arc<dyn super::Observer>>,
}

impl Room {
    pub(crate) fn new(
        name: Arc<str>,
        epoch: u32,
        init: RoomInit,
        presence: Option<Arc<dyn Presence>>,
        crowded: Arc<Crowded>,
        observer: Option<Arc<dyn super::Observer>>,
    ) -> Self {
        Self {
            name,
            presence,
            crowded,
            observer,
            state: Mutex::new(RoomState {
                epoch,
                history: init.history,
                last_seq: init.last_seq,
                members: Vec::new(),
                index: HashMap::new(),
                listeners: 0,
                retired: false,
                keys: init.keys.keys.iter().cloned().collect(),
                key_order: init.keys.keys.into_iter().map(|(key, _)| key).collect(),
                keys_partial: init.keys.partial,
                crowd: Crowd {
                    bucket: super::pace::Bucket::full(PRESENCE_BURST, std::time::Instant::now()),
                    joined: 0,
                    left: 0,
                },
            }),
            changed: Notify::new(),
            creator: std::sync::OnceLock::new(),
        }
    }

    /// Records who created the room; fails if someone already did.
    pub(crate) fn set_creator(&self, who: super::pace::Who) -> Result<(), super::pace::Who> {
        self.creator.set(who)
    }

    /// Who created the room, when counted.
    pub(crate) fn creator(&self) -> Option<&super::pace::Who> {
        self.creator.get()
    }

    /// The room's current epoch.
    pub fn epoch(&self) -> u32 {
        self.lock().epoch
    }

    /// The room's epoch and last sequence number.
    pub fn position(&self) -> (u32, u64) {
        let state = self.lock();
        (state.epoch, state.last_seq)
    }

    /// Waits, at most `within`, until this room holds message `id` or a later one (or has
    /// started another epoch). False when the time ran out.
    pub async fn reached(&self, id: MessageId, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        // Bounded by the deadline: each turn waits for the next change.
        loop {
            let changed = self.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (epoch, last_seq) = self.position();
            if epoch != id.epoch || last_seq >= id.seq {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    /// Resolves after the next message; create it before checking history so that nothing
    /// published in between is missed (`Notified::enable`).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
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

    /// Adds a member and tells the room. With a cursor, first queues to the member what it
    /// missed since then; both happen under the room lock, so the replay ends exactly where
    /// the live stream begins. Returns false if the room was retired meanwhile; the caller
    /// looks the room up again.
    pub(crate) fn add(
        &self,
        sub: &Arc<Subscriber>,
        nick: Arc<str>,
        since: Option<MessageId>,
    ) -> Option<MessageId> {
        let mut state = self.lock();
        if state.retired {
            return None;
        }
        // Where this member's live stream starts: a client that has seen no message yet
        // resumes from here.
        let cursor = MessageId {
            epoch: state.epoch,
            seq: state.last_seq,
        };
        if let Some(since) = since {
            let page = Self::read(&mut state, since, usize::MAX);
            sub.offer(Delivery::Replay(Box::new(Replay::within(
                Arc::clone(&self.name),
                page.events,
                page.gap,
                sub.reply_bytes(),
            ))));
        }
        if state.index.contains_key(&sub.id) {
            return Some(cursor);
        }
        let at = state.members.len();
        state.members.push(Member {
            sub: Arc::clone(sub),
            nick: Arc::clone(&nick),
        });
        state.index.insert(sub.id, at);
        if sub.transport.hears_presence() {
            state.listeners += 1;
        }
        let event = self.event(EventKind::Join, None, nick, "", Some(sub.id));
        self.announce(&event, sub);
        if let Some(observer) = &self.observer {
            observer.observe(super::Observed::Joined {
                event: Arc::clone(&event),
                transport: sub.transport,
                first: state.members.len() == 1,
            });
        }
        self.deliver_presence(&mut state, event);
        Some(cursor)
    }

    /// Removes a member and tells the room. Returns true if the room is now empty.
    pub(crate) fn remove(&self, id: SubscriberId, reason: Option<Disconnect>) -> bool {
        let mut state = self.lock();
        if let Some(member) = state.remove(id) {
            let event = self.event(EventKind::Leave { reason }, None, member.nick, "", Some(id));
            self.announce(&event, &member.sub);
            if let Some(observer) = &self.observer {
                observer.observe(super::Observed::Left {
                    event: Arc::clone(&event),
                    transport: member.sub.transport,
                    last: state.members.is_empty(),
                });
            }
            self.deliver_presence(&mut state, event);
        }
        state.members.is_empty()
    }

    /// Marks the room retired if it has no members and no history; called by the hub under
    /// its map's shard lock, only when nobody else holds the room.
    pub(crate) fn retire_if_idle(&self) -> bool {
        let mut state = self.lock();
        if state.members.is_empty() && state.history.is_empty() {
            state.retired = true;
        }
        state.retired
    }

    /// Messages after `since`, at most `limit`.
    pub fn page(&self, since: Option<MessageId>, limit: usize) -> Page {
        let mut state = self.lock();
        match since {
            Some(since) => Self::read(&mut state, since, limit),
            None => {
                let after = state.history.after(0, limit);
                Page {
                    events: after.events,
                    gap: None,
                    more: after.more,
                    last_id: Self::last_id(&state),
                }
            }
        }
    }

    /// The last `n` messages, oldest first.
    pub fn last(&self, n: usize) -> Vec<Arc<Event>> {
        self.lock().history.last(n)
    }

    /// Queues history to `sub` (the last `n` messages, or everything after a cursor) under
    /// the room lock, so that it lines up with the live events around it.
    pub fn replay(&self, sub: &Subscriber, lookback: Lookback) {
        let mut state = self.lock();
        let (events, gap) = match lookback {
            Lookback::Last(n) => (state.history.last(n), None),
            Lookback::Since(id) => {
                let page = Self::read(&mut state, id, usize::MAX);
                (page.events, page.gap)
            }
        };
        sub.offer(Delivery::Replay(Box::new(Replay::within(
            Arc::clone(&self.name),
            events,
            gap,
            sub.reply_bytes(),
        ))));
    }

    /// Messages held in history now.
    pub fn history_len(&self) -> usize {
        self.lock().history.len()
    }

    /// The latest message id of this epoch.
    pub fn latest(&self) -> Option<MessageId> {
        Self::last_id(&self.lock())
    }

    /// A resume point for someone who has seen everything so far: the room's epoch and last
    /// sequence number (`EPOCH-0` in a room without messages).
    pub fn cursor(&self) -> MessageId {
        let (epoch, seq) = self.position();
        MessageId { epoch, seq }
    }

    fn last_id(state: &RoomState) -> Option<MessageId> {
        (state.last_seq > 0).then_some(MessageId {
            epoch: state.epoch,
            seq: state.last_seq,
        })
    }

    fn read(state: &mut RoomState, since: MessageId, limit: usize) -> Page {
        // A cursor from another epoch, or from beyond this epoch's end, cannot be placed:
        // say so and give everything held. A cursor at sequence 0 (`00000000-0`, or one
        // taken in an empty room, on this node or another, in whatever epoch) has seen
        // nothing, so it is placed before the first message in any epoch: nothing of its
        // was lost, and only a trimmed history is a gap.
        let placed = since.seq == 0 || since.epoch == state.epoch && since.seq <= state.last_seq;
        let after = state
            .history
            .after(if placed { since.seq } else { 0 }, limit);
        let gap = if !placed {
            Some(Gap::Reset)
        } else if after.gap {
            Some(Gap::Expired)
        } else {
            None
        };
        Page {
            events: after.events,
            gap,
            more: after.more,
            last_id: Self::last_id(state),
        }
    }

    /// Publishes unless `key` was already used in this room, in which case nothing is sent
    /// and the earlier id is returned. A message the store refuses is not published at all.
    pub(crate) fn publish(
        &self,
        origin: Option<SubscriberId>,
        author: Author,
        text: &str,
        key: Option<&str>,
    ) -> Result<Published, StoreError> {
        let mut state = self.lock();
        if let Some(key) = key {
            let known = state.keys.get(key).copied();
            // Memory holds every key of the window unless it is partial; then a key it does
            // not hold is asked of the store, which keeps them with their messages.
            let stored = || match state.keys_partial {
                true => state.history.find_key(key),
                false => None,
            };
            if let Some(id) = known.or_else(stored) {
                return Ok(Published::Duplicate(id));
            }
        }
        let id = MessageId {
            epoch: state.epoch,
            seq: state.last_seq + 1,
        };
        let event = Arc::new(
            Event::new(
                EventKind::Message,
                Arc::clone(&self.name),
                Some(id),
                author.nick,
                text.into(),
                origin,
            )
            .with_sender(author.sender),
        );
        let durability = match key {
            Some(key) => state.history.append_keyed(&event, key)?,
            None => state.history.append(&event)?,
        };
        state.last_seq = id.seq;
        if let Some(key) = key {
            let key: Box<str> = key.into();
            state.keys.insert(key.clone(), id);
            state.key_order.push_back(key);
            if state.key_order.len() > KEYS_HELD
                && let Some(old) = state.key_order.pop_front()
            {
                state.keys.remove(&old);
                state.keys_partial = true;
            }
        }
        if let Some(observer) = &self.observer {
            observer.observe(super::Observed::Message(Arc::clone(&event)));
        }
        self.deliver(&mut state, Arc::clone(&event));
        drop(state);
        self.changed.notify_waiters();
        crate::metrics::METRICS.published.inc();
        Ok(Published::New(event, durability))
    }

    /// Takes a message numbered by the cluster: keeps it in history and delivers it, if it
    /// is the next one. With `jump`, a message further ahead is taken too (catching up after
    /// retention dropped what this node missed). The observer hears of it only if it was
    /// published through this node (`here`): every node applies it, one tells it.
    pub(crate) fn apply(&self, event: Arc<Event>, jump: bool, here: bool) -> Applied {
        let Some(id) = event.id else {
            return Applied::Done;
        };
        let mut state = self.lock();
        if id.epoch != state.epoch {
            return Applied::OtherEpoch;
        }
        if id.seq <= state.last_seq {
            return Applied::Done;
        }
        if id.seq != state.last_seq + 1 && !jump {
            return Applied::Behind;
        }
        state.history.record(&event);
        state.last_seq = id.seq;
        if here && let Some(observer) = &self.observer {
            observer.observe(super::Observed::Message(Arc::clone(&event)));
        }
        self.deliver(&mut state, event);
        drop(state);
        self.changed.notify_waiters();
        Applied::Done
    }

    /// Delivers a presence change from another node to the local members.
    pub(crate) fn deliver_remote(&self, event: Arc<Event>) {
        let mut state = self.lock();
        self.deliver_presence(&mut state, event);
    }

    /// Delivers a join, leave or rename within the room's presence budget; past it, the
    /// change is only counted, and told later in one `Crowd` event.
    fn deliver_presence(&self, state: &mut RoomState, event: Arc<Event>) {
        if state.listeners == 0 {
            return;
        }
        // Once a storm is being counted, everything is counted until the next flush tells
        // it, so that members see one summary a second, not summaries between singles.
        let first = state.crowd.joined + state.crowd.left == 0;
        let now = std::time::Instant::now();
        if first
            && state
                .crowd
                .bucket
                .take(PRESENCE_RATE, PRESENCE_BURST, now)
                .is_ok()
        {
            return self.deliver(state, event);
        }
        match event.kind {
            EventKind::Join => state.crowd.joined += 1,
            EventKind::Leave { .. } => state.crowd.left += 1,
            // A rename in a storm is not told; `/who` and presence show the new name.
            _ => return,
        }
        if first {
            self.crowded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(Arc::clone(&self.name));
        }
    }

    /// Tells the members what was summed up, if anything.
    fn tell_crowd(&self, state: &mut RoomState) {
        let (joined, left) = (state.crowd.joined, state.crowd.left);
        if joined + left == 0 {
            return;
        }
        state.crowd.joined = 0;
        state.crowd.left = 0;
        let event = self.event(EventKind::Crowd { joined, left }, None, "".into(), "", None);
        self.deliver(state, event);
    }

    /// Tells a summed-up presence change now (called by the hub every second).
    pub(crate) fn flush_crowd(&self) {
        let mut state = self.lock();
        self.tell_crowd(&mut state);
    }

    /// Starts the room over, empty, in `epoch` (a cluster room that Redis numbers in another
    /// epoch than this node gave it); what that epoch holds is applied next. Members stay;
    /// their next resume with an old cursor sees a reset.
    pub(crate) fn restart(&self, epoch: u32, history: Box<dyn crate::store::History>) {
        let mut state = self.lock();
        state.epoch = epoch;
        state.history = history;
        state.last_seq = 0;
        drop(state);
        self.changed.notify_waiters();
    }

    /// Shares a local member's presence change with the other nodes.
    fn announce(&self, event: &Event, sub: &Subscriber) {
        if let Some(presence) = &self.presence {
            presence.announce(event, sub.transport, sub.id);
        }
    }

    /// Changes a member's nick and tells the room.
    pub(crate) fn rename(&self, id: SubscriberId, nick: Arc<str>) {
        let mut state = self.lock();
        let Some(&at) = state.index.get(&id) else {
            return;
        };
        let old = std::mem::replace(&mut state.members[at].nick, Arc::clone(&nick));
        let event = self.event(EventKind::Nick { old }, None, nick, "", Some(id));
        let sub = Arc::clone(&state.members[at].sub);
        self.announce(&event, &sub);
        self.deliver_presence(&mut state, event);
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

    /// The members' subscribers, for operator actions.
    pub fn subscribers(&self) -> Vec<Arc<Subscriber>> {
        self.lock()
            .members
            .iter()
            .map(|m| Arc::clone(&m.sub))
            .collect()
    }

    /// Events waiting in the members' queues.
    pub fn queued(&self) -> usize {
        self.lock().members.iter().map(|m| m.sub.queued()).sum()
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
            let reason = member.sub.kick_reason();
            let leave = self.event(EventKind::Leave { reason }, None, member.nick, "", Some(id));
            self.announce(&leave, &member.sub);
            offer_all(state, &leave, &mut gone);
        }
    }
}

fn offer_all(state: &RoomState, event: &Arc<Event>, gone: &mut Vec<SubscriberId>) {
    let mut delivered = 0u64;
    let presence = !matches!(event.kind, EventKind::Message);
    for member in &state.members {
        if event.origin == Some(member.sub.id) && !member.sub.echo_own {
            continue;
        }
        if presence && !member.sub.transport.hears_presence() {
            continue;
        }
        if member.sub.offer(Delivery::Event(Arc::clone(event))) {
            delivered += 1;
        } else if !gone.contains(&member.sub.id) {
            gone.push(member.sub.id);
        }
    }
    // One atomic add per event, not one per subscriber.
    crate::metrics::METRICS.deliveries.inc_by(delivered);
}
