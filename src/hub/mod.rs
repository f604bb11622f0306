//! The hub: rooms by name, subscribers, nicks, and the publish path every transport shares.
//!
//! Transports are thin: they turn bytes into calls on `Hub` and drain a subscriber's queue back
//! into bytes. The room map is sharded (`DashMap`), each room has its own lock, and publishing
//! touches one shard read lock and one room lock: there is no global lock on the publish path.

mod nicks;
pub mod pace;
pub mod queue;
mod room;
mod rooms;
mod subscriber;
pub mod topics;

use std::collections::hash_map::RandomState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

pub use crate::broker::{Applied, MemberInfo};
pub use crate::event::{Author, BadMessageId, Event, EventKind, MessageId, Sender, now_ms};
pub use crate::metrics::HubStats;
pub use nicks::Holder;
pub use room::{Acked, Lookback, Page, Published, Room};
pub use rooms::RoomError;
pub use subscriber::{
    Delivery, Disconnect, Gap, Replay, Subscriber, SubscriberId, Transport, keep_newest,
};

use crate::auth::Auth;
use crate::broker::{Broker, Handler, Outgoing, Presence};
use crate::config::Limits;
use crate::store::{History, HistoryFactory, StoreError};
use pace::{RateLimiter, Who};

/// True when two nicks are one name to the registry (case and look-alikes folded).
pub fn same_nick(a: &str, b: &str) -> bool {
    nicks::fold(a) == nicks::fold(b)
}

/// Errors the hub reports to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// Another connected client already holds this nick, or one that looks the same.
    #[error("nick {0} is taken")]
    NickTaken(String),
    /// The nick would pass for the server or an operator.
    #[error("nick {0} is reserved")]
    NickReserved(String),
    /// A verified user signs in under this nick (or one that looks the same).
    #[error("nick {0} belongs to a verified user; sign in with a token to use it")]
    NickVerified(String),
    /// A direct message named a nick nobody connected holds.
    #[error("no such user {0}")]
    NoSuchUser(String),
}

/// Settings the hub needs.
#[derive(Clone)]
pub struct HubConfig {
    /// Capacity of each subscriber's outbound queue, in events.
    pub queue_capacity: usize,
    /// Makes each new room's history.
    pub history: HistoryFactory,
    /// Set when rooms are shared with other nodes: publishes are numbered and fanned out
    /// there.
    pub cluster: Option<Cluster>,
    /// Tokens and room policy.
    pub auth: Arc<Auth>,
    /// Publishes per second per identity, every transport together (0 = unlimited), and the
    /// burst before that rate applies.
    pub identity_rate: (f64, f64),
    /// What one client, identity or creator may ask of the hub.
    pub limits: Limits,
    /// Told of arrivals, departures and messages in every room (webhooks).
    pub observer: Option<Arc<dyn Observer>>,
}

/// Something that wants to know what happens in rooms, such as the webhook sender. Called
/// under the room's lock, on the publisher's or joiner's task: it must hand the news on
/// without blocking or waiting (a bounded queue it may drop from), so that it can never
/// slow a room.
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// One thing that happened in a room.
    fn observe(&self, what: Observed);
}

/// What an `Observer` is told. Each carries the room's own event (shared, not copied).
#[derive(Debug)]
pub enum Observed {
    /// A member arrived on this node; `first` when the room had no member here before.
    Joined {
        /// The room's `join` event.
        event: Arc<Event>,
        /// How the member is connected.
        transport: Transport,
        /// The room was empty on this node.
        first: bool,
    },
    /// A member left this node's room; `last` when nobody is left here.
    Left {
        /// The room's `leave` event (with the reason, if it was cut).
        event: Arc<Event>,
        /// How the member was connected.
        transport: Transport,
        /// The room is now empty on this node.
        last: bool,
    },
    /// A message was numbered and kept in the room (on every node, in a cluster).
    Message(Arc<Event>),
}

impl Default for HubConfig {
    /// An in-memory hub, open to everyone, with the default limits.
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            history: crate::store::memory(crate::store::Retention::default()),
            cluster: None,
            auth: Auth::open(),
            identity_rate: (20.0, 50.0),
            observer: None,
            limits: Limits::default(),
        }
    }
}

/// The seams to the other nodes, when rooms are shared (see `crate::broker`).
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Numbers, stores and fans out every publish.
    pub broker: Arc<dyn Broker>,
    /// Members on other nodes.
    pub presence: Arc<dyn Presence>,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("queue_capacity", &self.queue_capacity)
            .finish_non_exhaustive()
    }
}

/// The shared state of one server: all rooms and nicks.
#[derive(Debug)]
pub struct Hub {
    rooms: DashMap<Arc<str>, Arc<Room>>,
    /// Nicks held by connected clients, by look-alike skeleton, so two people cannot pose as
    /// one; each names its holders, so that direct messages find them.
    nicks: nicks::Nicks,
    next_id: AtomicU64,
    /// Seeds room epochs so that each process run gets new ones.
    epochs: RandomState,
    /// Publish buckets per identity (`pace`).
    identities: RateLimiter<Who>,
    /// Rooms existing now by who created them, against `max_rooms_per_creator`.
    creators: DashMap<Who, usize>,
    /// Rooms joined by connections from each address (IPv6 by prefix), against
    /// `memberships_per_ip`: every `enter` counts one, its `leave` gives it back.
    memberships: DashMap<std::net::IpAddr, usize>,
    /// Every room's name in order, so that listing a page of rooms costs the page, not a
    /// sort of them all.
    names: std::sync::Mutex<std::collections::BTreeSet<Arc<str>>>,
    /// Rooms with a summed-up presence change to tell (`Room::flush_crowd`).
    crowded: Arc<room::Crowded>,
    /// Wildcard subscriptions, told of new rooms (`topics`).
    topics: std::sync::Mutex<topics::Node>,
    config: HubConfig,
}

impl Hub {
    /// An empty hub.
    pub fn new(config: HubConfig) -> Arc<Self> {
        Arc::new(Self {
            rooms: DashMap::new(),
            nicks: nicks::Nicks::default(),
            next_id: AtomicU64::new(1),
            epochs: RandomState::new(),
            identities: RateLimiter::new(config.identity_rate.0, config.identity_rate.1),
            creators: DashMap::new(),
            memberships: DashMap::new(),
            names: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            crowded: Arc::default(),
            topics: std::sync::Mutex::default(),
            config,
        })
    }

    /// Publish buckets per identity, shared by every transport.
    pub fn identities(&self) -> &RateLimiter<Who> {
        &self.identities
    }

    /// What one client, identity or creator may ask.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Registers a new client and gives it its bounded outbound queue.
    pub fn subscribe(
        &self,
        transport: Transport,
        echo_own: bool,
        addr: Option<SocketAddr>,
    ) -> (Arc<Subscriber>, queue::Receiver<Delivery>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = queue::queue(self.config.queue_capacity);
        crate::metrics::METRICS
            .connections
            .get_or_create(&crate::metrics::TransportLabel {
                transport: transport.as_str(),
            })
            .inc();
        (
            Arc::new(Subscriber::new(
                id,
                transport,
                echo_own,
                addr,
                tx,
                (
                    self.config.limits.queue_bytes,
                    self.config.limits.reply_bytes,
                ),
            )),
            rx,
        )
    }

    /// The server's token verifier and room policy.
    pub fn auth(&self) -> &Arc<Auth> {
        &self.config.auth
    }

    /// Claims a generated nick, `guest-N`, for a new client.
    pub fn claim_generated_nick(&self, sub: &Arc<Subscriber>) -> Arc<str> {
        let mut n = sub.id;
        loop {
            let nick = format!("guest-{n}");
            if self.claim_nick(sub, &nick, None).is_ok() {
                return nick.into();
            }
            n = n.wrapping_add(self.next_id.load(Ordering::Relaxed));
        }
    }

    /// Claims `nick` for `sub`, for verified subject `user` or anonymously. Claiming the
    /// nick one already holds succeeds; see `nicks` for look-alikes and verified names.
    pub fn claim_nick(
        &self,
        sub: &Arc<Subscriber>,
        nick: &str,
        user: Option<&Arc<str>>,
    ) -> Result<(), HubError> {
        self.nicks.claim(sub, nick, user)
    }

    /// Whether an anonymous sender may publish as `nick` without holding it.
    pub fn check_free_nick(&self, nick: &str) -> Result<(), HubError> {
        self.nicks.check_free(nick)
    }

    /// Releases a nick held by `id`.
    pub fn release_nick(&self, id: SubscriberId, nick: &str) {
        self.nicks.release(id, nick);
    }

    /// The key that lets HTTP publishes use the nick subscriber `id` holds (`nicks`).
    pub fn nick_key(&self, id: SubscriberId, nick: &str) -> String {
        self.nicks.key_for(id, nick)
    }

    /// True if `key` is a live holder's key for `nick`.
    pub fn holds_nick_key(&self, nick: &str, key: &str) -> bool {
        self.nicks.holds_key(nick, key)
    }

    /// Every connection (each holds a nick) with its verified subject, for operators.
    pub fn connections(&self) -> Vec<nicks::Holder> {
        self.nicks.all()
    }

    /// Every live connection holding `nick` (all of a verified user's).
    pub fn holders(&self, nick: &str) -> Vec<Arc<Subscriber>> {
        self.nicks.holders(nick)
    }

    /// Sends `text` from `from` to whoever holds nick `to`, into its queue beside its room
    /// events. Direct messages are not stored and, in a cluster, reach only this node's
    /// connections.
    pub fn direct(
        &self,
        from: Author,
        origin: SubscriberId,
        to: &str,
        text: &str,
    ) -> Result<(), HubError> {
        let holders = self.nicks.holders(to);
        if holders.is_empty() {
            return Err(HubError::NoSuchUser(to.to_owned()));
        }
        let event =
            Arc::new(Event::direct(from.nick, to.into(), text, origin).with_sender(from.sender));
        for holder in holders {
            if holder.offer(Delivery::Event(Arc::clone(&event))) {
                crate::metrics::METRICS.deliveries.inc();
            }
        }
        Ok(())
    }

    /// The broker this hub shares rooms through, if any.
    pub fn broker(&self) -> Option<&Arc<dyn Broker>> {
        self.config.cluster.as_ref().map(|c| &c.broker)
    }

    /// Members of room `name` on every node: the local ones, then (in a cluster) those on
    /// other live nodes. An unreachable Redis is an error.
    pub async fn members(&self, name: &str) -> Result<Vec<MemberInfo>, StoreError> {
        let mut members = self
            .existing_room(name)
            .map(|r| r.members())
            .unwrap_or_default();
        if let Some(cluster) = &self.config.cluster {
            members.extend(cluster.presence.members(name).await?);
        }
        Ok(members)
    }

    /// Publishes `text` from `author` to `room`; `origin` is the sending subscriber, if any.
    /// With an idempotency `key`, a repeat publishes nothing (see `Published`).
    pub fn publish(
        &self,
        room: &Room,
        origin: Option<SubscriberId>,
        author: Author,
        text: &str,
        key: Option<&str>,
    ) -> Result<Published, StoreError> {
        match &self.config.cluster {
            Some(cluster) => {
                let pending = cluster.broker.publish(Outgoing {
                    room: room.name(),
                    position: room.position(),
                    origin,
                    author: &author,
                    text,
                    key,
                })?;
                Ok(Published::Remote(pending))
            }
            None => room.publish(origin, author, text, key),
        }
    }

    /// Read-your-writes for a request that was answered `id`: in a cluster a message reaches
    /// this node's copy of the room from the Redis bus a moment after Redis stored it, so the
    /// answer waits (at most `SETTLE`) for it, and a history read on this node that follows
    /// the answer holds the message. Alone, the room holds it already.
    pub async fn settle(&self, room: &Room, id: MessageId) {
        /// Far above a bus round trip (well under a millisecond on loopback); a bus that is
        /// slower still delivers the message, later.
        const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);
        if self.config.cluster.is_some() && !room.reached(id, SETTLE).await {
            tracing::debug!(room = %room.name(), %id, "the bus has not brought the message back yet");
        }
    }

    /// Changes a member's nick in `room` and tells the room.
    pub fn rename(&self, room: &Room, id: SubscriberId, nick: Arc<str>) {
        room.rename(id, nick);
    }

    /// Totals over every room, for metrics: rooms, messages in history, events queued.
    pub fn stats(&self) -> HubStats {
        let rooms: Vec<Arc<Room>> = self.rooms.iter().map(|r| Arc::clone(r.value())).collect();
        let mut stats = HubStats {
            rooms: rooms.len(),
            ..HubStats::default()
        };
        for room in &rooms {
            stats.history += room.history_len();
            stats.queued += room.queued();
        }
        stats
    }
}

/// The broker calls back through this, by room name; rooms nobody uses here are skipped.
impl Handler for Hub {
    fn rooms(&self) -> Vec<Arc<str>> {
        self.rooms.iter().map(|r| Arc::clone(r.key())).collect()
    }

    fn position(&self, room: &str) -> Option<(u32, u64)> {
        self.existing_room(room).map(|r| r.position())
    }

    fn apply(&self, room: &str, event: Arc<Event>, jump: bool, here: bool) -> Applied {
        match self.existing_room(room) {
            Some(r) => r.apply(event, jump, here),
            None => Applied::Done,
        }
    }

    fn deliver(&self, room: &str, event: Arc<Event>) {
        if let Some(r) = self.existing_room(room) {
            r.deliver_remote(event);
        }
    }

    fn restart(&self, room: &str, epoch: u32, history: Box<dyn History>) {
        if let Some(r) = self.existing_room(room) {
            r.restart(epoch, history);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Publishes without a key and returns the event.
    fn say(
        hub: &Hub,
        room: &Room,
        origin: Option<SubscriberId>,
        nick: &str,
        text: &str,
    ) -> Arc<Event> {
        match hub.publish(room, origin, nick.into(), text, None).unwrap() {
            Published::New(event, _) => event,
            other => panic!("no key and no cluster, yet {other:?}"),
        }
    }

    fn hub(queue_capacity: usize) -> Arc<Hub> {
        Hub::new(HubConfig {
            queue_capacity,
            history: crate::store::memory(crate::store::Retention::default()),
            cluster: None,
            auth: crate::auth::Auth::open(),
            ..HubConfig::default()
        })
    }

    /// A hub whose rooms keep their last `max_messages` only.
    fn keeping(max_messages: usize) -> Arc<Hub> {
        Hub::new(HubConfig {
            queue_capacity: 4,
            history: crate::store::memory(crate::store::Retention {
                max_messages,
                ..Default::default()
            }),
            cluster: None,
            auth: crate::auth::Auth::open(),
            ..HubConfig::default()
        })
    }

    fn line(ev: &Event) -> String {
        String::from_utf8_lossy(crate::wire::event(crate::wire::Wire::Line, ev)).into_owned()
    }

    fn drain(rx: &mut queue::Receiver<Delivery>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(d) = rx.try_recv() {
            match d {
                Delivery::Event(ev) => out.push(line(&ev)),
                Delivery::Replay(r) => {
                    out.extend(crate::wire::gap_text(&r).map(|g| g + "\n"));
                    for ev in &r.events {
                        out.push(line(ev));
                    }
                }
                Delivery::Direct(_) | Delivery::Reply(_) => {}
            }
        }
        out
    }

    #[test]
    fn mqtt_members_are_not_offered_presence() {
        let hub = hub(4);
        let (device, mut rd) = hub.subscribe(Transport::Mqtt, false, None);
        let room = hub.join("sensors/t", &device, "device".into());
        // More comings and goings than the device's queue holds: offered to it, they
        // would cut it as a slow consumer.
        for n in 0..20 {
            let (other, _rx) = hub.subscribe(Transport::Mqtt, false, None);
            hub.join("sensors/t", &other, format!("m{n}").into());
            hub.leave(&room, &other, None);
        }
        let (person, mut rp) = hub.subscribe(Transport::Tcp, false, None);
        hub.join("sensors/t", &person, "person".into());
        hub.leave(&room, &person, None);
        assert!(
            rd.try_recv().is_none(),
            "no join, leave or crowd queued for MQTT"
        );
        say(&hub, &room, None, "x", "21.5");
        assert_eq!(drain(&mut rd), ["x: 21.5\n"], "messages still reach it");
        drop(rp.try_recv());
    }

    #[test]
    fn memberships_are_counted_per_address_and_given_back() {
        let hub = Hub::new(HubConfig {
            limits: Limits {
                memberships_per_ip: 3,
                ..Limits::default()
            },
            ..HubConfig::default()
        });
        let addr = |ip: &str| Some(SocketAddr::new(ip.parse().unwrap(), 1));
        let (a, _ra) = hub.subscribe(Transport::Ws, false, addr("192.0.2.1"));
        let (b, _rb) = hub.subscribe(Transport::Ws, false, addr("192.0.2.1"));
        let (c, _rc) = hub.subscribe(Transport::Ws, false, addr("192.0.2.2"));
        let enter = |sub: &Arc<Subscriber>, room: &str| {
            hub.enter(room, sub, "n".into(), None, None).map(|(r, _)| r)
        };
        let r1 = enter(&a, "r1").unwrap();
        enter(&a, "r2").unwrap();
        enter(&b, "r1").unwrap();
        assert!(matches!(
            enter(&b, "r3"),
            Err(RoomError::TooManyFromAddress)
        ));
        assert!(enter(&c, "r3").is_ok(), "another address has its own count");
        hub.leave(&r1, &a, None);
        assert!(enter(&b, "r3").is_ok(), "a leave gives its place back");
    }

    #[test]
    fn publish_reaches_others_not_sender_and_ids_count_up() {
        let hub = hub(16);
        let (a, mut ra) = hub.subscribe(Transport::Tcp, false, None);
        let (b, mut rb) = hub.subscribe(Transport::Tcp, false, None);
        let room = hub.join("lobby", &a, "a".into());
        hub.join("lobby", &b, "b".into());
        let first = say(&hub, &room, Some(a.id), "a", "hi");
        let second = say(&hub, &room, Some(a.id), "a", "again");
        assert_eq!(first.id.unwrap().seq, 1);
        assert_eq!(second.id.unwrap().seq, 2);
        assert_eq!(drain(&mut rb), ["a: hi\n", "a: again\n"]);
        assert_eq!(drain(&mut ra), ["* b joined lobby\n"]);
    }

    #[test]
    fn echo_own_subscriber_gets_its_own_message() {
        let hub = hub(16);
        let (a, mut ra) = hub.subscribe(Transport::Ws, true, None);
        let room = hub.join("r", &a, "a".into());
        say(&hub, &room, Some(a.id), "a", "x");
        assert_eq!(drain(&mut ra), ["* a joined r\n", "a: x\n"]);
    }

    #[test]
    fn overflowing_subscriber_is_kicked_and_room_carries_on() {
        let hub = hub(4);
        let (slow, _slow_rx) = hub.subscribe(Transport::Tcp, false, None);
        let (fast, mut fast_rx) = hub.subscribe(Transport::Tcp, false, None);
        let room = hub.join("r", &slow, "slow".into());
        hub.join("r", &fast, "fast".into());
        for i in 0..10 {
            say(&hub, &room, None, "pub", &i.to_string());
            drain(&mut fast_rx);
        }
        assert_eq!(slow.kick_reason(), Some(Disconnect::SlowConsumer));
        assert_eq!(room.member_count(), 1);
        assert!(!fast.is_gone());
    }

    #[test]
    fn slow_consumer_leave_is_announced_with_reason() {
        let hub = hub(2);
        let (slow, _slow_rx) = hub.subscribe(Transport::Tcp, false, None);
        let (fast, mut fast_rx) = hub.subscribe(Transport::Tcp, false, None);
        let room = hub.join("r", &slow, "slow".into());
        hub.join("r", &fast, "fast".into());
        let mut seen = Vec::new();
        for i in 0..4 {
            say(&hub, &room, None, "pub", &i.to_string());
            seen.extend(drain(&mut fast_rx));
        }
        assert!(seen.contains(&"* slow left r (slow consumer)\n".to_owned()));
    }

    #[test]
    fn idle_room_is_swept_and_recreated_with_a_new_epoch() {
        let hub = hub(4);
        let (a, _ra) = hub.subscribe(Transport::Tcp, false, None);
        let room = hub.join("r", &a, "a".into());
        let epoch = room.epoch();
        hub.leave(&room, &a, None);
        assert_eq!(hub.sweep(), 0, "still held by a connection");
        drop(room);
        assert_eq!(hub.sweep(), 1);
        assert!(hub.rooms_page(None, 10, |_| true).0.is_empty());
        let again = hub.join("r", &a, "a".into());
        assert_ne!(again.epoch(), epoch);
        assert_eq!(again.member_count(), 1);
    }

    #[test]
    fn room_with_history_survives_the_sweep() {
        let hub = hub(4);
        let room = hub.room("r");
        say(&hub, &room, None, "x", "kept");
        drop(room);
        assert_eq!(hub.sweep(), 0);
        assert_eq!(hub.existing_room("r").unwrap().history_len(), 1);
    }

    #[test]
    fn join_since_replays_exactly_the_missed_messages_before_live_ones() {
        let hub = hub(16);
        let room = hub.room("r");
        let first = say(&hub, &room, None, "p", "1").id.unwrap();
        say(&hub, &room, None, "p", "2");
        say(&hub, &room, None, "p", "3");
        let (a, mut ra) = hub.subscribe(Transport::Tcp, false, None);
        hub.join_since("r", &a, "a".into(), Some(first));
        say(&hub, &room, None, "p", "4");
        assert_eq!(drain(&mut ra), ["p: 2\n", "p: 3\n", "p: 4\n"]);
    }

    #[test]
    fn an_idempotency_key_publishes_once() {
        let hub = hub(16);
        let room = hub.room("r");
        let (a, mut ra) = hub.subscribe(Transport::Tcp, false, None);
        hub.join("r", &a, "a".into());
        let first = hub
            .publish(&room, None, "p".into(), "x", Some("k1"))
            .unwrap();
        let again = hub
            .publish(&room, None, "p".into(), "x", Some("k1"))
            .unwrap();
        assert!(matches!(first, Published::New(..)));
        let Published::New(first, _) = first else {
            panic!("first publish is new")
        };
        assert!(matches!(again, Published::Duplicate(id) if Some(id) == first.id));
        assert_eq!(drain(&mut ra), ["p: x\n"]);
        assert_eq!(room.history_len(), 1);
    }

    #[test]
    fn cursor_from_another_epoch_is_a_reset_gap() {
        let hub = hub(16);
        let room = hub.room("r");
        say(&hub, &room, None, "p", "1");
        let stale = MessageId {
            epoch: room.epoch().wrapping_add(1),
            seq: 1,
        };
        let page = room.page(Some(stale), 10);
        assert_eq!(page.gap, Some(Gap::Reset));
        assert_eq!(page.events.len(), 1);
        let fresh = room.page(page.last_id, 10);
        assert_eq!(fresh.gap, None);
        assert!(fresh.events.is_empty());
    }

    /// A cursor at sequence 0 has seen nothing: from `00000000-0` or from an empty room of
    /// another epoch (another node's, say) the whole history comes with no gap, unless some
    /// of it was really trimmed.
    #[test]
    fn a_cursor_before_the_first_message_is_no_gap() {
        let hub = hub(16);
        let room = hub.room("r");
        for t in ["1", "2"] {
            say(&hub, &room, None, "p", t);
        }
        let other_epoch = room.epoch().wrapping_add(1).max(1);
        for start in [
            MessageId { epoch: 0, seq: 0 },
            MessageId {
                epoch: other_epoch,
                seq: 0,
            },
        ] {
            let page = room.page(Some(start), 10);
            assert_eq!(page.gap, None, "{start}");
            assert_eq!(page.events.len(), 2, "{start}");
        }
        let trimmed = keeping(1);
        let room = trimmed.room("r");
        for t in ["1", "2"] {
            say(&trimmed, &room, None, "p", t);
        }
        let page = room.page(Some(MessageId { epoch: 0, seq: 0 }), 10);
        assert_eq!(page.gap, Some(Gap::Expired));
        assert_eq!(page.events.len(), 1);
    }

    #[test]
    fn expired_history_is_an_expired_gap() {
        let hub = keeping(2);
        let room = hub.room("r");
        let first = say(&hub, &room, None, "p", "1").id.unwrap();
        for t in ["2", "3", "4"] {
            say(&hub, &room, None, "p", t);
        }
        let page = room.page(Some(first), 10);
        assert_eq!(page.gap, Some(Gap::Expired));
        let texts: Vec<_> = page.events.iter().map(|e| &*e.text).collect();
        assert_eq!(texts, ["3", "4"]);
    }

    #[test]
    fn nicks_are_unique_case_insensitively() {
        let hub = hub(4);
        let (one, _r1) = hub.subscribe(Transport::Tcp, false, None);
        let (two, _r2) = hub.subscribe(Transport::Tcp, false, None);
        assert!(hub.claim_nick(&one, "Alice", None).is_ok());
        assert!(hub.claim_nick(&one, "alice", None).is_ok());
        assert_eq!(
            hub.claim_nick(&two, "ALICE", None),
            Err(HubError::NickTaken("ALICE".into()))
        );
        hub.release_nick(one.id, "alice");
        assert!(hub.claim_nick(&two, "ALICE", None).is_ok());
    }

    #[test]
    fn a_direct_message_reaches_the_nick_holder_only() {
        let hub = hub(4);
        let (bob, mut bob_rx) = hub.subscribe(Transport::Ws, true, None);
        hub.claim_nick(&bob, "bob", None).unwrap();
        hub.direct("ann".into(), 1, "BOB", "psst").unwrap();
        let Some(Delivery::Event(ev)) = bob_rx.try_recv() else {
            panic!("bob got nothing")
        };
        assert_eq!((&*ev.nick, &*ev.text), ("ann", "psst"));
        assert_eq!(
            hub.direct("ann".into(), 1, "carol", "x"),
            Err(HubError::NoSuchUser("carol".into()))
        );
        drop(bob_rx);
        assert!(hub.direct("ann".into(), 1, "bob", "x").is_err(), "gone");
    }
}
