//! One MQTT connection, over TCP or WebSocket, in one task: it reads packets, drains the
//! subscriber's queue into PUBLISH packets within the client's window, and writes.
//!
//! Topics are rooms. A subscription joins every room its filter matches (wildcards through
//! the hub's topic index, which also tells it of rooms made later), so it gets each room's
//! messages from the room's own fan-out, in the room's order. A publish goes through
//! `Session::publish_to`, paced like every transport's; its PUBACK or PUBREC waits until the
//! message is durable, in a task of its own that answers in order through the queue.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec::{self, Connect, Inbound, Outbound, Publish, Reason, Version};
use super::state::{Parked, Retained};
use super::{Link, sys};
use crate::auth::{Action, Principal};
use crate::context::Context;
use crate::event::{Disconnect, Event, EventKind, Form, MessageId, now_ms};
use crate::hub::pace::Verdict;
use crate::hub::topics::Watcher;
use crate::hub::{Delivery, Published, Subscriber, Transport};
use crate::protocol::envelope::ErrorCode;
use crate::protocol::topic;
use crate::session::{Refusal, Session};
use crate::transport::writer::{Outbox, Wake};
use crate::wire::Wire;

/// QoS 1 and 2 publishes a client may have unacknowledged (our Receive Maximum).
pub(crate) const RECEIVE_MAXIMUM: u16 = 64;
/// The most QoS 1 and 2 messages in flight to one client, whatever it allows.
const MAX_INFLIGHT: usize = 64;
/// Subscriptions one connection may hold; past it SUBACK says quota exceeded.
const MAX_FILTERS: usize = 256;
/// New rooms a wildcard subscriber may have waiting to be joined.
const NEW_ROOMS: usize = 1024;
/// A write buffer past this is released once written, and the read buffer whenever it is
/// empty, so that a quiet connection holds neither (an allocation costs far less than the
/// read or write it goes with).
const KEEP_BUFFER: usize = 1024;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// DISCONNECT; `true` when the will is to be published anyway.
    Disconnected(bool),
    /// The peer closed or the socket failed.
    Gone,
    /// Cut by the hub or the server, for this reason.
    Cut(Disconnect),
    /// A protocol violation or refusal, answered with this reason (5.0) before closing.
    Violation(Reason),
}

/// An answer for the ack task, which keeps answers in the order publishes arrived.
enum Ack {
    /// Encoded already (a refusal, a PUBREC repeated, a PUBCOMP).
    Now(Bytes),
    /// PUBACK (QoS 1) or PUBREC (QoS 2) once the message is durable.
    Durable(Published, u16, u8),
}

/// A room this connection is in, and how its messages are delivered.
#[derive(Debug, Clone, Copy)]
struct Joined {
    qos: u8,
    /// 5.0 no-local: the client's own messages are not sent back.
    no_local: bool,
    /// The last message given to the client: where a parked session resumes.
    last: Option<MessageId>,
}

/// One connection's MQTT state.
pub(crate) struct Conn {
    ctx: Arc<Context>,
    version: Version,
    client_id: String,
    session: Session,
    sub: Arc<Subscriber>,
    outbox: Outbox,
    out: BytesMut,
    filters: BTreeMap<String, (u8, bool)>,
    rooms: HashMap<Arc<str>, Joined>,
    pending: VecDeque<Arc<Event>>,
    inflight: HashMap<u16, Arc<Event>>,
    released: HashSet<u16>,
    received: HashSet<u16>,
    next_pkid: u16,
    window: usize,
    client_max_packet: usize,
    acks: mpsc::Sender<Ack>,
    new_rooms: mpsc::Receiver<Arc<str>>,
    watcher: Watcher,
    keep_alive: Option<Duration>,
    last_read: Instant,
    persistent: Option<Option<u64>>,
    will: Option<codec::Will>,
    stop: CancellationToken,
    /// Cancelled when this connection lets go of its client id (`Mqtt::release`).
    gone: CancellationToken,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Serves one MQTT connection from its CONNECT to its end.
pub(crate) async fn serve<L: Link>(mut link: L, addr: SocketAddr, ctx: Arc<Context>) {
    let mut buf = BytesMut::with_capacity(512);
    let Some(connect) = read_connect(&mut link, &mut buf, &ctx, addr).await else {
        return;
    };
    let Some(mut conn) = admit(&mut link, *connect, addr, &ctx).await else {
        return;
    };
    let end = conn.run(&mut link, &mut buf).await;
    tracing::debug!(client_id = conn.client_id, %addr, ?end, "mqtt connection closed");
    conn.finish(&mut link, end).await;
}

/// Reads the CONNECT, within the header timeout; anything else first ends the connection.
async fn read_connect<L: Link>(
    link: &mut L,
    buf: &mut BytesMut,
    ctx: &Context,
    addr: SocketAddr,
) -> Option<Box<Connect>> {
    let deadline = Instant::now() + ctx.config.limits.http_header_timeout;
    let max = ctx.config.mqtt_max_packet;
    loop {
        match codec::decode(None, buf, max) {
            Ok(Some(Inbound::Connect(connect))) => return Some(connect),
            Ok(Some(_)) => return None,
            Ok(None) => {}
            Err(codec::DecodeError::Version(level)) => {
                tracing::debug!(%addr, level, "mqtt protocol level refused");
                let mut out = BytesMut::new();
                codec::encode(
                    Version::V4,
                    &connack(false, Reason::UnsupportedVersion),
                    &mut out,
                );
                let _ = tokio::time::timeout(Duration::from_secs(1), link.write(&out)).await;
                return None;
            }
            Err(error) => {
                tracing::debug!(%addr, %error, "mqtt connect refused");
                return None;
            }
        }
        match tokio::time::timeout_at(deadline, link.read(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return None,
            Err(_) => {
                tracing::debug!(%addr, "mqtt connect timed out");
                return None;
            }
        }
    }
}

fn connack(session_present: bool, reason: Reason) -> Outbound<'static> {
    Outbound::ConnAck {
        session_present,
        reason,
        receive_maximum: RECEIVE_MAXIMUM,
        max_packet: 0,
        assigned_id: None,
    }
}

/// Who the client is: `key` as the user name makes the password an API key; otherwise the
/// password is a token; no password is anonymous.
fn principal(ctx: &Context, connect: &Connect) -> Result<Principal, Reason> {
    let password = connect.password.as_deref();
    let (token, key) = match connect.username.as_deref() {
        Some("key") => (None, password),
        _ => (password, None),
    };
    ctx.hub
        .auth()
        .principal(token, key)
        .map_err(|_| Reason::BadCredentials)
}

/// Checks credentials and the client id, takes the id over, resumes or clears its session,
/// and answers CONNACK. `None` when refused (the CONNACK said why).
async fn admit<L: Link>(
    link: &mut L,
    connect: Connect,
    addr: SocketAddr,
    ctx: &Arc<Context>,
) -> Option<Conn> {
    let version = connect.version;
    let refuse = |reason: Reason| {
        let mut out = BytesMut::new();
        codec::encode(version, &connack(false, reason), &mut out);
        out
    };
    let principal = match principal(ctx, &connect) {
        Ok(p) => p,
        Err(reason) => {
            tracing::debug!(%addr, "mqtt credentials refused");
            let _ = link.write(&refuse(reason)).await;
            return None;
        }
    };
    if connect.client_id.len() > 128 || (connect.client_id.is_empty() && !connect.clean) {
        let _ = link.write(&refuse(Reason::ClientIdInvalid)).await;
        return None;
    }
    let (sub, rx) = ctx.hub.subscribe(Transport::Mqtt, true, Some(addr));
    let assigned = connect
        .client_id
        .is_empty()
        .then(|| format!("auto-{}", sub.id));
    let client_id = assigned.clone().unwrap_or(connect.client_id.clone());
    let gone = ctx.mqtt.claim(&client_id, &sub).await;
    let nick = crate::protocol::names::check_nick(&client_id)
        .is_ok()
        .then_some(&*client_id);
    let session = Session::open(
        Arc::clone(&ctx.hub),
        Arc::clone(&sub),
        Wire::Mqtt,
        nick,
        principal,
        ctx.tasks.clone(),
    );
    let parked = if connect.clean {
        let _ = ctx.mqtt.park(&client_id, None);
        None
    } else {
        ctx.mqtt.unpark(&client_id)
    };
    let mut conn = Conn::new(ctx, &connect, client_id, session, sub, rx, gone);
    let mut out = BytesMut::new();
    codec::encode(
        version,
        &Outbound::ConnAck {
            session_present: parked.is_some(),
            reason: Reason::Success,
            receive_maximum: RECEIVE_MAXIMUM,
            max_packet: ctx.config.mqtt_max_packet as u32,
            assigned_id: assigned.as_deref(),
        },
        &mut out,
    );
    conn.out = out;
    if let Some(parked) = parked {
        conn.resume(parked);
    }
    Some(conn)
}

impl Conn {
    fn new(
        ctx: &Arc<Context>,
        connect: &Connect,
        client_id: String,
        session: Session,
        sub: Arc<Subscriber>,
        rx: mpsc::Receiver<Delivery>,
        gone: CancellationToken,
    ) -> Self {
        let stop = crate::transport::stop_signal(ctx);
        let (acks, acks_rx) = mpsc::channel(usize::from(RECEIVE_MAXIMUM));
        ctx.tasks
            .spawn(answer_acks(acks_rx, Arc::clone(&sub), connect.version));
        let (rooms_tx, new_rooms) = mpsc::channel(NEW_ROOMS);
        let persistent = match (connect.version, connect.session_expiry) {
            (Version::V4, _) => (!connect.clean).then_some(None),
            (Version::V5, None | Some(0)) => None,
            (Version::V5, Some(u32::MAX)) => Some(None),
            (Version::V5, Some(secs)) => Some(Some(u64::from(secs) * 1000)),
        };
        let keep_alive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        Conn {
            ctx: Arc::clone(ctx),
            version: connect.version,
            client_id,
            session,
            outbox: Outbox::new(rx, Arc::clone(&sub), stop.clone(), Wire::Mqtt),
            watcher: Watcher {
                sub: Arc::downgrade(&sub),
                rooms: rooms_tx,
            },
            sub,
            out: BytesMut::new(),
            filters: BTreeMap::new(),
            rooms: HashMap::new(),
            pending: VecDeque::new(),
            inflight: HashMap::new(),
            released: HashSet::new(),
            received: HashSet::new(),
            next_pkid: 0,
            window: usize::from(connect.receive_maximum.unwrap_or(u16::MAX)).min(MAX_INFLIGHT),
            client_max_packet: connect.max_packet.map_or(usize::MAX, |m| m as usize),
            acks,
            new_rooms,
            keep_alive,
            last_read: Instant::now(),
            persistent,
            will: connect.will.clone(),
            stop,
            gone,
        }
    }
}

impl Conn {
    /// Reads, delivers and writes until the connection ends.
    async fn run<L: Link>(&mut self, link: &mut L, buf: &mut BytesMut) -> End {
        let mut sys_tick = tokio::time::interval(sys::EVERY);
        sys_tick.reset();
        // Packets that came in the CONNECT's read.
        if let Err(end) = self.on_bytes(buf).await {
            return end;
        }
        loop {
            self.pump();
            if !self.out.is_empty()
                && let Err(end) = self.flush(link).await
            {
                return end;
            }
            let idle_at = self.keep_alive.map(|k| self.last_read + k);
            let drained = self.pending.is_empty();
            let sys = self.has_sys();
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return End::Cut(Disconnect::Shutdown),
                _ = self.sub.kicked() => {
                    return End::Cut(self.sub.kick_reason().unwrap_or(Disconnect::SlowConsumer));
                }
                _ = crate::transport::sleep_until(idle_at) => return End::Cut(Disconnect::TimedOut),
                read = link.read(buf) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        return End::Gone;
                    }
                    self.last_read = Instant::now();
                    if let Err(end) = self.on_bytes(buf).await {
                        return end;
                    }
                }
                wake = self.outbox.wait(), if drained => match wake {
                    Wake::Batch => self.take(),
                    Wake::Closed => return End::Gone,
                    Wake::End(reason) => return End::Cut(reason),
                },
                Some(room) = self.new_rooms.recv() => self.join_new(room),
                _ = sys_tick.tick(), if sys => self.send_sys(None),
            }
        }
    }

    /// Writes what is buffered, giving up if the client is cut or the server stops.
    async fn flush<L: Link>(&mut self, link: &mut L) -> Result<(), End> {
        let written = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Err(End::Cut(Disconnect::Shutdown)),
            _ = self.sub.kicked() => {
                return Err(End::Cut(self.sub.kick_reason().unwrap_or(Disconnect::SlowConsumer)));
            }
            written = link.write(&self.out) => written,
        };
        self.out.clear();
        if self.out.capacity() > KEEP_BUFFER {
            self.out = BytesMut::new();
        }
        written.map_err(|_| End::Gone)
    }

    /// Acts on every whole packet in `buf`.
    async fn on_bytes(&mut self, buf: &mut BytesMut) -> Result<(), End> {
        loop {
            let packet =
                match codec::decode(Some(self.version), buf, self.ctx.config.mqtt_max_packet) {
                    Ok(Some(packet)) => packet,
                    Ok(None) => {
                        if buf.is_empty() {
                            *buf = BytesMut::new();
                        }
                        return Ok(());
                    }
                    Err(error) => {
                        tracing::debug!(client_id = self.client_id, %error, "mqtt packet refused");
                        return Err(End::Violation(match error {
                            codec::DecodeError::TooLarge(_) => Reason::PacketTooLarge,
                            _ => Reason::Malformed,
                        }));
                    }
                };
            self.on_packet(packet).await?;
        }
    }

    async fn on_packet(&mut self, packet: Inbound) -> Result<(), End> {
        match packet {
            Inbound::Publish(publish) => return self.on_publish(publish).await,
            Inbound::PubAck(pkid) => {
                self.inflight.remove(&pkid);
            }
            Inbound::PubRec(pkid) => {
                self.inflight.remove(&pkid);
                self.released.insert(pkid);
                self.write(&Outbound::PubRel(pkid));
            }
            Inbound::PubComp(pkid) => {
                self.released.remove(&pkid);
            }
            Inbound::PubRel(pkid) => {
                self.received.remove(&pkid);
                self.ack_now(&Outbound::PubComp(pkid)).await;
            }
            Inbound::Subscribe { pkid, filters } => self.on_subscribe(pkid, filters),
            Inbound::Unsubscribe { pkid, filters } => self.on_unsubscribe(pkid, &filters),
            Inbound::PingReq => self.write(&Outbound::PingResp),
            Inbound::Disconnect { with_will } => return Err(End::Disconnected(with_will)),
            Inbound::Connect(_) => {
                tracing::debug!(client_id = self.client_id, "second CONNECT");
                return Err(End::Violation(Reason::ProtocolError));
            }
            Inbound::Unexpected(what) => {
                tracing::debug!(client_id = self.client_id, what, "unexpected mqtt packet");
                return Err(End::Violation(Reason::ProtocolError));
            }
        }
        Ok(())
    }

    /// Encodes one packet into the write buffer.
    fn write(&mut self, packet: &Outbound<'_>) {
        codec::encode(self.version, packet, &mut self.out);
    }

    /// Queues an answer behind the acks still waiting on durability, so answers keep the
    /// order of the publishes they answer.
    async fn ack_now(&mut self, packet: &Outbound<'_>) {
        let mut bytes = BytesMut::new();
        codec::encode(self.version, packet, &mut bytes);
        let _ = self.acks.send(Ack::Now(bytes.freeze())).await;
    }

    async fn on_publish(&mut self, p: Publish) -> Result<(), End> {
        if p.qos == 2 && self.received.contains(&p.pkid) {
            // A repeat of a QoS 2 message already taken: answered again, published once.
            self.ack_now(&Outbound::PubRec(p.pkid, Reason::Success))
                .await;
            return Ok(());
        }
        if p.qos == 2 && self.received.len() >= usize::from(RECEIVE_MAXIMUM) {
            return Err(End::Violation(Reason::ReceiveMaximumExceeded));
        }
        let Ok(text) = std::str::from_utf8(&p.payload) else {
            return self
                .refuse(
                    &p,
                    Reason::PayloadFormatInvalid,
                    "payload is not UTF-8 text",
                )
                .await;
        };
        if p.topic.starts_with('$') {
            return self
                .refuse(&p, Reason::TopicNameInvalid, "$ topics are the server's")
                .await;
        }
        self.wait_pace().await?;
        if text.is_empty() {
            // An empty retained message clears the topic's; an empty one is not a message.
            if p.retain
                && self.session.may(&p.topic, Action::Publish)
                && let Err(error) = self.ctx.mqtt.retain(&p.topic, None)
            {
                tracing::warn!(%error, "retained message not cleared");
            }
            return self.accept(&p, None).await;
        }
        match self.session.publish_to(&p.topic, text) {
            Ok(published) => {
                if p.retain {
                    self.keep_retained(&p, text, &published);
                }
                self.accept(&p, Some(published)).await
            }
            Err(refusal) => {
                let reason = refusal_reason(&refusal);
                self.refuse(&p, reason, &refusal.message).await
            }
        }
    }

    /// Waits out the publish limits (MQTT has no "retry later": the client is read no
    /// further until it may publish again); one that keeps pushing is cut as a flood.
    async fn wait_pace(&mut self) -> Result<(), End> {
        for _ in 0..4 {
            match self.session.pace() {
                Verdict::Allow => return Ok(()),
                Verdict::Wait(wait) => tokio::time::sleep(wait).await,
                Verdict::Flood => break,
            }
        }
        Err(End::Cut(Disconnect::Flooding))
    }

    /// Keeps a retained message, within `max_rooms` topics in all (a topic outlives its
    /// room, so the room cap alone would not bound them).
    fn keep_retained(&self, p: &Publish, text: &str, published: &Published) {
        let mqtt = &self.ctx.mqtt;
        if mqtt.retained_count() >= self.ctx.config.limits.max_rooms && !mqtt.is_retained(&p.topic)
        {
            tracing::warn!(
                topic = p.topic,
                "retained message not kept: too many retained topics"
            );
            return;
        }
        let id = match published {
            Published::New(event, _) => event.id.map(|id| id.to_string()),
            _ => None,
        };
        let retained = Retained {
            text: text.to_owned(),
            qos: p.qos,
            id,
        };
        if let Err(error) = self.ctx.mqtt.retain(&p.topic, Some(&retained)) {
            tracing::warn!(%error, topic = p.topic, "retained message not kept");
        }
    }

    /// Acknowledges a publish: QoS 1 and 2 once the message is durable.
    async fn accept(&mut self, p: &Publish, published: Option<Published>) -> Result<(), End> {
        if p.qos == 2 {
            self.received.insert(p.pkid);
        }
        match (p.qos, published) {
            (0, _) => {}
            (qos, Some(published)) => {
                let _ = self.acks.send(Ack::Durable(published, p.pkid, qos)).await;
            }
            (1, None) => {
                self.ack_now(&Outbound::PubAck(p.pkid, Reason::Success))
                    .await
            }
            (_, None) => {
                self.ack_now(&Outbound::PubRec(p.pkid, Reason::Success))
                    .await
            }
        }
        Ok(())
    }

    /// Refuses a publish: 5.0 says why in its ack (a QoS 0 one is dropped); 3.1.1 has no
    /// way to, so the connection is closed, as its specification allows.
    async fn refuse(
        &mut self,
        p: &Publish,
        reason: Reason,
        why: impl std::fmt::Display,
    ) -> Result<(), End> {
        tracing::debug!(client_id = self.client_id, topic = p.topic, %why, "mqtt publish refused");
        if self.version == Version::V4 {
            return Err(End::Violation(reason));
        }
        match p.qos {
            0 => {}
            1 => self.ack_now(&Outbound::PubAck(p.pkid, reason)).await,
            _ => self.ack_now(&Outbound::PubRec(p.pkid, reason)).await,
        }
        Ok(())
    }
}

/// The reason code for a session's refusal.
fn refusal_reason(refusal: &Refusal) -> Reason {
    match refusal.code {
        ErrorCode::BadName => Reason::TopicNameInvalid,
        ErrorCode::Forbidden | ErrorCode::Unauthorized => Reason::NotAuthorized,
        ErrorCode::LimitReached | ErrorCode::RateLimited => Reason::QuotaExceeded,
        ErrorCode::Unavailable => Reason::ServerUnavailable,
        _ => Reason::Unspecified,
    }
}

/// Answers publishes in the order they came: each PUBACK or PUBREC once its message is
/// durable, through the connection's own queue (so it is bounded and ordered like the rest).
async fn answer_acks(mut acks: mpsc::Receiver<Ack>, sub: Arc<Subscriber>, version: Version) {
    while let Some(ack) = acks.recv().await {
        let bytes = match ack {
            Ack::Now(bytes) => bytes,
            Ack::Durable(published, pkid, qos) => {
                let reason = match published.durable().await {
                    Ok(_) => Reason::Success,
                    Err(error) => {
                        tracing::warn!(%error, "mqtt publish not stored; not acknowledged");
                        // 3.1.1 cannot refuse: no ack, so the client sends it again.
                        if version == Version::V4 {
                            continue;
                        }
                        Reason::Unspecified
                    }
                };
                let mut out = BytesMut::new();
                let packet = match qos {
                    1 => Outbound::PubAck(pkid, reason),
                    _ => Outbound::PubRec(pkid, reason),
                };
                codec::encode(version, &packet, &mut out);
                out.freeze()
            }
        };
        sub.offer(Delivery::direct(bytes));
    }
}

/// The granted-QoS reason for `qos`.
fn granted(qos: u8) -> Reason {
    match qos {
        0 => Reason::GrantedQos0,
        1 => Reason::GrantedQos1,
        _ => Reason::GrantedQos2,
    }
}

/// The cursor before a room's first message: joining with it replays all the room holds.
fn room_start(ctx: &Context, room: &str) -> Option<MessageId> {
    ctx.hub.existing_room(room).map(|r| MessageId {
        epoch: r.epoch(),
        seq: 0,
    })
}

impl Conn {
    fn on_subscribe(&mut self, pkid: u16, filters: Vec<(String, u8, bool)>) {
        let mut reasons = Vec::with_capacity(filters.len());
        let mut accepted = Vec::new();
        for (filter, qos, no_local) in filters {
            let qos = qos.min(2);
            let reason = if self.filters.len() >= MAX_FILTERS && !self.filters.contains_key(&filter)
            {
                Reason::QuotaExceeded
            } else {
                self.subscribe(&filter, qos, no_local, None)
            };
            if reason == granted(qos) {
                accepted.push((filter, qos));
            }
            reasons.push(reason);
        }
        self.write(&Outbound::SubAck {
            pkid,
            reasons: &reasons,
        });
        for (filter, qos) in accepted {
            self.send_retained(&filter, qos);
            if filter.starts_with("$SYS") {
                self.send_sys(Some(&filter));
            }
        }
    }

    /// Adds one subscription, joining the rooms it matches; `resume` holds a parked
    /// session's cursors (rooms without one are replayed from their start: they were made
    /// while it was away). Returns the SUBACK reason.
    fn subscribe(
        &mut self,
        filter: &str,
        qos: u8,
        no_local: bool,
        resume: Option<&BTreeMap<String, String>>,
    ) -> Reason {
        if topic::parse(filter).is_err() {
            return Reason::TopicFilterInvalid;
        }
        if filter.starts_with('$') {
            if !filter.starts_with("$SYS") {
                return Reason::TopicFilterInvalid;
            }
        } else if topic::is_wildcard(filter) {
            let rooms = self
                .ctx
                .hub
                .watch_topics(filter, self.sub.id, self.watcher.clone());
            for room in rooms {
                if self.session.may(&room, Action::Subscribe) {
                    let since = match resume {
                        Some(cursors) => {
                            cursor_in(cursors, &room).or_else(|| room_start(&self.ctx, &room))
                        }
                        None => None,
                    };
                    let _ = self.join(&room, qos, no_local, since);
                }
            }
        } else {
            if !self.session.may(filter, Action::Subscribe) {
                return Reason::NotAuthorized;
            }
            let since = resume.and_then(|c| cursor_in(c, filter));
            if let Err(error) = self.join(filter, qos, no_local, since) {
                tracing::debug!(client_id = self.client_id, %error, "mqtt subscribe refused");
                return Reason::QuotaExceeded;
            }
        }
        self.filters.insert(filter.to_owned(), (qos, no_local));
        granted(qos)
    }

    /// Joins `room` (or raises its QoS if in it already).
    fn join(
        &mut self,
        room: &str,
        qos: u8,
        no_local: bool,
        since: Option<MessageId>,
    ) -> Result<(), crate::hub::RoomError> {
        if let Some(joined) = self.rooms.get_mut(room) {
            joined.qos = joined.qos.max(qos);
            return Ok(());
        }
        let cursor = self.session.join(room, since)?;
        self.rooms.insert(
            room.into(),
            Joined {
                qos,
                no_local,
                last: Some(since.unwrap_or(cursor)),
            },
        );
        Ok(())
    }

    /// A room made after a wildcard subscription that matches it: joined from its start.
    fn join_new(&mut self, room: Arc<str>) {
        let Some(qos) = self.qos_for(&room) else {
            return;
        };
        if self.session.may(&room, Action::Subscribe) {
            let since = room_start(&self.ctx, &room);
            let _ = self.join(&room, qos.0, qos.1, since);
        }
    }

    /// The highest QoS among this connection's filters matching `room`, and no-local.
    fn qos_for(&self, room: &str) -> Option<(u8, bool)> {
        self.filters
            .iter()
            .filter(|(f, _)| topic::parse(f).is_ok_and(|l| topic::matches(&l, room)))
            .map(|(_, q)| *q)
            .max()
    }

    fn on_unsubscribe(&mut self, pkid: u16, filters: &[String]) {
        let mut reasons = Vec::with_capacity(filters.len());
        for filter in filters {
            if self.filters.remove(filter).is_none() {
                reasons.push(Reason::NoSubscriptionExisted);
                continue;
            }
            if topic::is_wildcard(filter) {
                self.ctx.hub.unwatch_topics(filter, self.sub.id);
            }
            reasons.push(Reason::Success);
        }
        let left: Vec<Arc<str>> = self
            .rooms
            .keys()
            .filter(|room| self.qos_for(room).is_none())
            .cloned()
            .collect();
        for room in left {
            self.rooms.remove(&room);
            self.session.part(&room);
        }
        self.write(&Outbound::UnsubAck {
            pkid,
            reasons: &reasons,
        });
    }

    /// Retained messages for a new subscription, marked as retained, at most at its QoS.
    fn send_retained(&mut self, filter: &str, qos: u8) {
        let Ok(levels) = topic::parse(filter) else {
            return;
        };
        let retained = self
            .ctx
            .mqtt
            .retained(topic::prefix(filter), |t| topic::matches(&levels, t));
        for (topic, message) in retained {
            let mut qos = message.qos.min(qos);
            let pkid = if qos > 0 && self.inflight.len() < self.window {
                let event = Arc::new(Event::new(
                    EventKind::Message,
                    topic.as_str().into(),
                    message.id.as_deref().and_then(|id| id.parse().ok()),
                    "".into(),
                    message.text.as_str().into(),
                    None,
                ));
                let pkid = self.next_pkid();
                self.inflight.insert(pkid, event);
                pkid
            } else {
                qos = 0;
                0
            };
            let id = (self.version == Version::V5)
                .then(|| message.id.clone())
                .flatten();
            self.write(&Outbound::Publish {
                topic: &topic,
                payload: message.text.as_bytes(),
                qos,
                pkid,
                retain: true,
                dup: false,
                id,
            });
        }
    }

    fn has_sys(&self) -> bool {
        self.filters
            .range::<str, _>((
                std::ops::Bound::Included("$SYS"),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .is_some_and(|(f, _)| f.starts_with("$SYS"))
    }

    /// The `$SYS` figures matching `only`, or every `$SYS` filter held.
    fn send_sys(&mut self, only: Option<&str>) {
        let filters: Vec<String> = match only {
            Some(filter) => vec![filter.to_owned()],
            None => self
                .filters
                .keys()
                .filter(|f| f.starts_with("$SYS"))
                .cloned()
                .collect(),
        };
        for (topic, value) in sys::figures(&self.ctx) {
            let wanted = filters
                .iter()
                .any(|f| topic::parse(f).is_ok_and(|l| topic::matches(&l, topic)));
            if wanted {
                self.write(&Outbound::Publish {
                    topic,
                    payload: value.as_bytes(),
                    qos: 0,
                    pkid: 0,
                    retain: true,
                    dup: false,
                    id: None,
                });
            }
        }
    }

    /// A free packet id for an outgoing QoS 1 or 2 message.
    fn next_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            let id = self.next_pkid;
            if !self.inflight.contains_key(&id) && !self.released.contains(&id) {
                return id;
            }
        }
    }

    /// Moves a batch from the queue: messages of joined rooms to `pending`, answers (acks
    /// from the ack task) straight into the write buffer.
    fn take(&mut self) {
        let own = self.sub.id;
        let Conn {
            outbox,
            pending,
            out,
            rooms,
            ..
        } = self;
        let mut keep = |event: &Arc<Event>| {
            let wanted = matches!(event.kind, EventKind::Message)
                && rooms
                    .get(&event.room)
                    .is_some_and(|j| !(j.no_local && event.origin == Some(own)));
            if wanted {
                pending.push_back(Arc::clone(event));
            }
        };
        for delivery in outbox.take() {
            match delivery {
                Delivery::Event(event) => keep(&event),
                Delivery::Direct(bytes) => out.extend_from_slice(&bytes),
                Delivery::Replay(replay) => replay.events.iter().for_each(&mut keep),
            }
        }
    }

    /// Encodes pending messages while the client's window has room: a QoS 0 message is the
    /// event's shared packet (made once for every subscriber of its version); QoS 1 and 2
    /// take a packet id and wait in `inflight` for their ack.
    fn pump(&mut self) {
        while let Some(event) = self.pending.front() {
            let Some(joined) = self.rooms.get(&event.room).copied() else {
                self.pending.pop_front();
                continue;
            };
            if event.text.len() + event.room.len() + 64 > self.client_max_packet {
                tracing::debug!(
                    client_id = self.client_id,
                    "message larger than the client takes; skipped"
                );
                self.pending.pop_front();
                continue;
            }
            let pkid = match joined.qos {
                0 => 0,
                _ if self.inflight.len() + self.released.len() >= self.window => return,
                _ => self.next_pkid(),
            };
            let Some(event) = self.pending.pop_front() else {
                return;
            };
            if pkid == 0 {
                let form = match self.version {
                    Version::V4 => (Form::Mqtt, shared_v4 as fn(&Event) -> Bytes),
                    Version::V5 => (Form::Mqtt5, shared_v5 as fn(&Event) -> Bytes),
                };
                self.out.extend_from_slice(event.encoded(form.0, form.1));
            } else {
                codec::encode(
                    self.version,
                    &publish_of(&event, joined.qos, pkid, self.version),
                    &mut self.out,
                );
                self.inflight.insert(pkid, Arc::clone(&event));
            }
            if let Some(joined) = self.rooms.get_mut(&event.room) {
                joined.last = event.id.or(joined.last);
            }
        }
    }
}

/// The cursor a parked session holds for `room`.
fn cursor_in(cursors: &BTreeMap<String, String>, room: &str) -> Option<MessageId> {
    cursors.get(room).and_then(|c| c.parse().ok())
}

/// PUBLISH for `event`; 5.0 carries its id as the user property `id`.
fn publish_of(event: &Event, qos: u8, pkid: u16, version: Version) -> Outbound<'_> {
    Outbound::Publish {
        topic: &event.room,
        payload: event.text.as_bytes(),
        qos,
        pkid,
        retain: false,
        dup: false,
        id: match version {
            Version::V5 => event.id.map(|id| id.to_string()),
            Version::V4 => None,
        },
    }
}

/// An event's QoS 0 PUBLISH for 3.1.1, shared by every such subscriber.
fn shared_v4(event: &Event) -> Bytes {
    let mut out = BytesMut::new();
    codec::encode(Version::V4, &publish_of(event, 0, 0, Version::V4), &mut out);
    out.freeze()
}

/// An event's QoS 0 PUBLISH for 5.0, shared by every such subscriber.
fn shared_v5(event: &Event) -> Bytes {
    let mut out = BytesMut::new();
    codec::encode(Version::V5, &publish_of(event, 0, 0, Version::V5), &mut out);
    out.freeze()
}

impl Conn {
    /// Takes up a parked session: its subscriptions, each room resumed after its cursor.
    fn resume(&mut self, parked: Parked) {
        for (filter, qos) in &parked.filters {
            let _ = self.subscribe(filter, *qos, false, Some(&parked.cursors));
        }
        tracing::debug!(
            client_id = self.client_id,
            filters = parked.filters.len(),
            "mqtt session resumed"
        );
    }

    /// The session as parked: per room, the cursor before the first message not yet
    /// acknowledged (those in flight are sent again on resume).
    fn parked(&self, expires_ms: Option<u64>) -> Parked {
        let mut cursors: BTreeMap<String, MessageId> = self
            .rooms
            .iter()
            .filter_map(|(room, joined)| Some((room.to_string(), joined.last?)))
            .collect();
        for event in self.inflight.values() {
            let Some(id) = event.id else { continue };
            let before = MessageId {
                epoch: id.epoch,
                seq: id.seq.saturating_sub(1),
            };
            cursors
                .entry(event.room.to_string())
                .and_modify(|c| {
                    if c.epoch == before.epoch && c.seq > before.seq {
                        *c = before;
                    }
                })
                .or_insert(before);
        }
        Parked {
            filters: self
                .filters
                .iter()
                .map(|(f, (q, _))| (f.clone(), *q))
                .collect(),
            cursors: cursors
                .into_iter()
                .map(|(room, id)| (room, id.to_string()))
                .collect(),
            expires_ms: expires_ms.map(|ms| now_ms().saturating_add(ms)),
        }
    }

    /// Ends the connection: says why (5.0), publishes the will unless the client said
    /// goodbye, parks or forgets the session, and lets go of the client id.
    async fn finish<L: Link>(mut self, link: &mut L, end: End) {
        let reason = match end {
            End::Disconnected(_) | End::Gone => None,
            End::Violation(reason) => Some(reason),
            End::Cut(cut) => Some(match cut {
                Disconnect::Shutdown => Reason::ShuttingDown,
                Disconnect::TimedOut => Reason::KeepAliveTimeout,
                Disconnect::SlowConsumer => Reason::QuotaExceeded,
                Disconnect::Flooding => Reason::MessageRateTooHigh,
                Disconnect::Replaced => Reason::SessionTakenOver,
                Disconnect::Kicked | Disconnect::TokenExpired => Reason::AdministrativeAction,
            }),
        };
        // What is buffered (the CONNACK, say, when the first packets already break the
        // rules) goes out, then 5.0's reason; bounded in time, as the client may not read.
        if let Some(reason) = reason {
            self.write(&Outbound::Disconnect(reason));
        }
        if !self.out.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), link.write(&self.out)).await;
        }
        if !matches!(end, End::Disconnected(false))
            && let Some(will) = self.will.take()
        {
            self.publish_will(will);
        }
        self.session.end(match end {
            End::Cut(cut) => Some(cut),
            _ => None,
        });
        for filter in self.filters.keys().filter(|f| topic::is_wildcard(f)) {
            self.ctx.hub.unwatch_topics(filter, self.sub.id);
        }
        // Within `max_rooms` parked sessions in all: each client id may park one.
        let room_for_one = self.ctx.mqtt.is_parked(&self.client_id)
            || self.ctx.mqtt.parked() < self.ctx.config.limits.max_rooms;
        if self.persistent.is_some() && !room_for_one {
            tracing::warn!(
                client_id = self.client_id,
                "mqtt session not parked: too many parked"
            );
        }
        let parked = self
            .persistent
            .filter(|_| room_for_one)
            .map(|expires| self.parked(expires));
        if let Err(error) = self.ctx.mqtt.park(&self.client_id, parked.as_ref()) {
            tracing::warn!(%error, client_id = self.client_id, "mqtt session not parked");
        }
        let Conn {
            ctx,
            client_id,
            session,
            sub,
            gone,
            ..
        } = self;
        drop(session);
        ctx.mqtt.release(&client_id, sub.id, &gone);
    }

    /// Publishes the will as if the client had (not paced: it is said once).
    fn publish_will(&mut self, will: codec::Will) {
        let Ok(text) = String::from_utf8(will.payload.to_vec()) else {
            return;
        };
        if text.is_empty() || will.topic.starts_with('$') {
            return;
        }
        match self.session.publish_to(&will.topic, &text) {
            Ok(published) => {
                tracing::debug!(
                    client_id = self.client_id,
                    topic = will.topic,
                    "mqtt will published"
                );
                if will.retain {
                    let p = Publish {
                        topic: will.topic.clone(),
                        payload: will.payload.clone(),
                        qos: will.qos,
                        retain: true,
                        dup: false,
                        pkid: 0,
                    };
                    self.keep_retained(&p, &text, &published);
                }
            }
            Err(refusal) => {
                tracing::debug!(
                    client_id = self.client_id,
                    message = refusal.message,
                    "mqtt will refused"
                );
            }
        }
    }
}
