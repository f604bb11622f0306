//! One MQTT connection, over TCP or WebSocket, in one task: it reads packets, drains the
//! subscriber's queue into PUBLISH packets within the client's window, and writes.
//!
//! Topics are rooms. A subscription joins every room its filter matches (wildcards through
//! the hub's topic index, which also tells it of rooms made later), so it gets each room's
//! messages from the room's own fan-out, in the room's order. A publish goes through
//! `Session::publish_to`, paced like every transport's; its PUBACK or PUBREC waits until the
//! message is durable, in a task of its own that answers in order through the queue.
//!
//! Here: the CONNECT, admission and the read/deliver/write loop. `publish` (publishes, acks,
//! retained messages, the will), `subscribe` (subscriptions as joins, `$SYS`, resuming a
//! parked session), `deliver` (batches into PUBLISH packets within the window), `end` (the
//! reason said, the session parked).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod deliver;
mod end;
mod publish;
mod subscribe;

use super::codec::{self, Connect, Inbound, Outbound, Publish, Reason, Version};
use super::state::{Parked, Retained};
use super::window::Window;
use super::{Pipe, sys};
use crate::auth::{Action, Principal};
use crate::event::{Disconnect, Event, EventKind, MessageId, now_ms};
use crate::hub::pace::Verdict;
use crate::hub::topics::Watcher;
use crate::hub::{Delivery, Published, Subscriber, Transport};
use crate::protocol::envelope::ErrorCode;
use crate::protocol::names::check_nick;
use crate::protocol::topic;
use crate::session::{Dialect, Hello, Refusal, Session};
use crate::transport::context::Context;
use crate::transport::link::{self, Link, Step};
use crate::transport::writer::Outbox;
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
    out: BytesMut,
    filters: BTreeMap<String, (u8, bool)>,
    rooms: HashMap<Arc<str>, Joined>,
    pending: VecDeque<Arc<Event>>,
    /// Outgoing QoS 1 and 2 messages until acknowledged, within the client's window.
    window: Window<Arc<Event>>,
    received: HashSet<u16>,
    client_max_packet: usize,
    /// To the ack task, started with the first QoS 1 or 2 publish.
    acks: Option<mpsc::Sender<Ack>>,
    /// New rooms for wildcard filters, made with the first one (`watcher`).
    new_rooms: Option<mpsc::Receiver<Arc<str>>>,
    watcher: Option<Watcher>,
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

/// The next new room for a wildcard filter; never, before the first wildcard.
async fn next_room(rooms: &mut Option<mpsc::Receiver<Arc<str>>>) -> Option<Arc<str>> {
    match rooms {
        Some(rooms) => rooms.recv().await,
        None => std::future::pending().await,
    }
}

/// Serves one MQTT connection from its CONNECT to its end.
pub(crate) async fn serve<P: Pipe>(mut pipe: P, addr: SocketAddr, ctx: Arc<Context>) {
    let mut buf = BytesMut::with_capacity(512);
    let Some(connect) = read_connect(&mut pipe, &mut buf, &ctx, addr).await else {
        return;
    };
    let Some((mut conn, mut outbox)) = admit(&mut pipe, *connect, addr, &ctx).await else {
        return;
    };
    let mut driven = Driven {
        conn: &mut conn,
        pipe: &mut pipe,
        buf: &mut buf,
        sys_tick: tokio::time::interval(sys::EVERY),
        end: None,
    };
    driven.sys_tick.reset();
    // Packets that came in the CONNECT's read, and the CONNACK.
    match driven.settle_read().await {
        Step::Continue => {
            link::drive(&mut driven, &mut outbox).await;
        }
        Step::Cut(reason) => driven.end = Some(End::Cut(reason)),
        Step::Done | Step::Gone => {}
    }
    let end = driven.end.unwrap_or(End::Gone);
    tracing::debug!(client_id = conn.client_id, %addr, ?end, "mqtt connection closed");
    conn.finish(&mut pipe, end).await;
}

/// Reads the CONNECT, within the header timeout; anything else first ends the connection.
async fn read_connect<P: Pipe>(
    pipe: &mut P,
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
                let _ = tokio::time::timeout(Duration::from_secs(1), pipe.write(&out)).await;
                return None;
            }
            Err(error) => {
                tracing::debug!(%addr, %error, "mqtt connect refused");
                return None;
            }
        }
        match tokio::time::timeout_at(deadline, pipe.read(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return None,
            Err(_) => {
                tracing::debug!(%addr, "mqtt connect timed out");
                return None;
            }
        }
    }
}

/// How long a client that asked for no keep-alive may stay silent (`idle_timeout`).
fn silent_limit(ctx: &Context) -> Option<Duration> {
    ctx.config.idle_timeout
}

fn connack(session_present: bool, reason: Reason) -> Outbound<'static> {
    Outbound::ConnAck {
        session_present,
        reason,
        receive_maximum: RECEIVE_MAXIMUM,
        max_packet: 0,
        assigned_id: None,
        server_keep_alive: None,
    }
}

/// Largest will payload taken at CONNECT, in bytes (a status line, not a message).
pub(crate) const MAX_WILL_BYTES: usize = 4 * 1024;

/// Who the client is: `key` as the user name makes the password an API key; otherwise the
/// password is a token; no password is anonymous.
/// Failed passwords are throttled per address (`Auth::principal_at`): past the burst the
/// answer is "quota exceeded" (5.0) / "server unavailable" (3.1.1), unchecked.
fn principal(ctx: &Context, connect: &Connect, addr: SocketAddr) -> Result<Principal, Reason> {
    let password = connect.password.as_deref();
    let (token, key) = match connect.username.as_deref() {
        Some("key") => (None, password),
        _ => (password, None),
    };
    ctx.hub
        .auth()
        .principal_at(Some(addr.ip()), token, key)
        .map_err(|e| match e {
            crate::auth::AuthError::Throttled(_) => Reason::QuotaExceeded,
            _ => Reason::BadCredentials,
        })
}

/// Checks what the CONNECT carries before anything is taken: credentials, the client id, the
/// will's size. The reason for the CONNACK when refused.
fn check(ctx: &Context, connect: &Connect, addr: SocketAddr) -> Result<Principal, Reason> {
    let principal = principal(ctx, connect, addr).inspect_err(|reason| {
        tracing::debug!(%addr, ?reason, "mqtt credentials refused");
    })?;
    if connect.client_id.len() > 128 || (connect.client_id.is_empty() && !connect.clean) {
        return Err(Reason::ClientIdInvalid);
    }
    // A will is a publish said at the end, by a client that may reconnect and say another:
    // its size is capped on its own, far below a message's.
    if let Some(will) = &connect.will
        && will.payload.len() > MAX_WILL_BYTES
    {
        tracing::info!(%addr, bytes = will.payload.len(), "mqtt will over the size limit refused");
        return Err(Reason::PacketTooLarge);
    }
    Ok(principal)
}

/// Checks credentials and the client id, takes the id over, enters the session
/// (`Session::connect_as`), resumes or clears what was parked, and answers CONNACK. `None`
/// when refused (the CONNACK said why).
async fn admit<P: Pipe>(
    pipe: &mut P,
    connect: Connect,
    addr: SocketAddr,
    ctx: &Arc<Context>,
) -> Option<(Conn, Outbox)> {
    let principal = match check(ctx, &connect, addr) {
        Ok(principal) => principal,
        Err(reason) => {
            let mut out = BytesMut::new();
            codec::encode(connect.version, &connack(false, reason), &mut out);
            let _ = pipe.write(&out).await;
            return None;
        }
    };
    let (sub, rx) = ctx.hub.subscribe(Transport::Mqtt, true, Some(addr));
    let assigned = connect
        .client_id
        .is_empty()
        .then(|| format!("auto-{}", sub.id));
    let client_id = assigned.clone().unwrap_or(connect.client_id.clone());
    let gone = ctx.mqtt.claim(&client_id, &sub).await;
    let hello = Hello {
        transport: Transport::Mqtt,
        dialect: Dialect::Quiet,
        addr: Some(addr),
        nick: check_nick(&client_id).is_ok().then_some(&*client_id),
        principal,
    };
    let session = Session::connect_as(&ctx.hub, ctx.tasks.clone(), hello, Arc::clone(&sub), "");
    let parked = if connect.clean {
        let _ = ctx.mqtt.park(&client_id, None);
        None
    } else {
        ctx.mqtt.unpark(&client_id)
    };
    let outbox = Outbox::new(
        rx,
        Arc::clone(&sub),
        crate::transport::stop_signal(ctx),
        Wire::Mqtt,
    );
    let mut conn = Conn::new(ctx, &connect, client_id, session, sub, gone);
    let welcome = Outbound::ConnAck {
        session_present: parked.is_some(),
        reason: Reason::Success,
        receive_maximum: RECEIVE_MAXIMUM,
        max_packet: ctx.config.mqtt_max_packet as u32,
        assigned_id: assigned.as_deref(),
        server_keep_alive: (connect.keep_alive == 0)
            .then(|| silent_limit(ctx))
            .flatten()
            .map(|idle| idle.as_secs().clamp(1, u64::from(u16::MAX)) as u16),
    };
    conn.write(&welcome);
    if let Some(parked) = parked {
        conn.resume(parked);
    }
    Some((conn, outbox))
}

impl Conn {
    fn new(
        ctx: &Arc<Context>,
        connect: &Connect,
        client_id: String,
        session: Session,
        sub: Arc<Subscriber>,
        gone: CancellationToken,
    ) -> Self {
        let stop = crate::transport::stop_signal(ctx);
        let persistent = match (connect.version, connect.session_expiry) {
            (Version::V4, _) => (!connect.clean).then_some(None),
            (Version::V5, None | Some(0)) => None,
            (Version::V5, Some(u32::MAX)) => Some(None),
            (Version::V5, Some(secs)) => Some(Some(u64::from(secs) * 1000)),
        };
        // A client that asks for no keep-alive is held to the idle timeout instead (5.0 is
        // told so in the CONNACK), so that silent sockets cannot hold descriptors for ever.
        let keep_alive = match connect.keep_alive {
            0 => silent_limit(ctx).map(|idle| idle * 3 / 2),
            secs => Some(Duration::from_millis(u64::from(secs) * 1500)),
        };
        Conn {
            ctx: Arc::clone(ctx),
            version: connect.version,
            client_id,
            session,
            watcher: None,
            sub,
            out: BytesMut::new(),
            filters: BTreeMap::new(),
            rooms: HashMap::new(),
            pending: VecDeque::new(),
            received: HashSet::new(),
            window: Window::new(
                usize::from(connect.receive_maximum.unwrap_or(u16::MAX)).min(MAX_INFLIGHT),
            ),
            client_max_packet: connect.max_packet.map_or(usize::MAX, |m| m as usize),
            acks: None,
            new_rooms: None,
            keep_alive,
            last_read: Instant::now(),
            persistent,
            will: connect.will.clone(),
            stop,
            gone,
        }
    }
}

/// A connection's side of the connection driver (`link::drive`): packets in, the queue's
/// messages out as PUBLISH packets within the client's window. How it ended, when it ended
/// on its own, is kept in `end` for `Conn::finish`.
struct Driven<'a, P> {
    conn: &'a mut Conn,
    pipe: &'a mut P,
    buf: &'a mut BytesMut,
    sys_tick: tokio::time::Interval,
    end: Option<End>,
}

/// What woke an MQTT connection.
enum Input {
    Read(std::io::Result<usize>),
    /// Silent past its keep-alive.
    Idle,
    /// A new room for a wildcard filter.
    NewRoom(Option<Arc<str>>),
    /// Time to send `$SYS` again.
    Sys,
}

impl<P: Pipe> Driven<'_, P> {
    /// Acts on every whole packet read, then writes.
    async fn settle_read(&mut self) -> Step {
        match self.conn.on_bytes(self.buf).await {
            Ok(()) => self.settle().await,
            Err(end) => self.ended(end),
        }
    }

    /// Encodes what the window allows and writes what is buffered.
    async fn settle(&mut self) -> Step {
        self.conn.pump();
        if self.conn.out.is_empty() {
            return Step::Continue;
        }
        match self.conn.flush(self.pipe).await {
            Ok(()) => Step::Continue,
            Err(end) => self.ended(end),
        }
    }

    /// The step for an end: the server's cuts go through the driver (`Link::close`), the rest
    /// are kept for `Conn::finish`.
    fn ended(&mut self, end: End) -> Step {
        if let End::Cut(reason) = end {
            return Step::Cut(reason);
        }
        self.end = Some(end);
        Step::Gone
    }
}

impl<P: Pipe> Link for Driven<'_, P> {
    type Input = Input;

    async fn recv(&mut self) -> Input {
        let idle_at = self.conn.keep_alive.map(|k| self.conn.last_read + k);
        let sys = self.conn.has_sys();
        tokio::select! {
            biased;
            _ = crate::transport::sleep_until(idle_at) => Input::Idle,
            read = self.pipe.read(self.buf) => Input::Read(read),
            room = next_room(&mut self.conn.new_rooms) => Input::NewRoom(room),
            _ = self.sys_tick.tick(), if sys => Input::Sys,
        }
    }

    async fn act(&mut self, input: Input) -> Step {
        match input {
            Input::Idle => Step::Cut(Disconnect::TimedOut),
            Input::Read(Ok(n)) if n > 0 => {
                self.conn.last_read = Instant::now();
                self.settle_read().await
            }
            Input::Read(_) => self.ended(End::Gone),
            Input::NewRoom(room) => {
                if let Some(room) = room {
                    self.conn.join_new(room);
                }
                self.settle().await
            }
            Input::Sys => {
                self.conn.send_sys(None);
                self.settle().await
            }
        }
    }

    async fn deliver(&mut self, outbox: &mut Outbox) -> Step {
        self.conn.take(outbox);
        self.settle().await
    }

    /// Only notes the reason: `Conn::finish` says it (5.0) after the connection's own end.
    async fn close(&mut self, _: &Outbox, reason: Option<Disconnect>) {
        if let Some(reason) = reason {
            self.end = Some(End::Cut(reason));
        }
    }

    /// Messages wait in the queue while earlier ones wait for the client's window.
    fn ready(&self) -> bool {
        self.conn.pending.is_empty()
    }
}

impl Conn {
    /// Writes what is buffered, giving up if the client is cut or the server stops.
    async fn flush<P: Pipe>(&mut self, pipe: &mut P) -> Result<(), End> {
        let written = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Err(End::Cut(Disconnect::Shutdown)),
            _ = self.sub.kicked() => {
                return Err(End::Cut(self.sub.kick_reason().unwrap_or(Disconnect::SlowConsumer)));
            }
            written = pipe.write(&self.out) => written,
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
                self.window.acked(pkid);
            }
            Inbound::PubRec(pkid) => {
                self.window.received(pkid);
                self.write(&Outbound::PubRel(pkid));
            }
            Inbound::PubComp(pkid) => self.window.completed(pkid),
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

    /// The ack task's queue, the task started on first use: a connection that only
    /// subscribes never has one.
    fn acks(&mut self) -> &mpsc::Sender<Ack> {
        self.acks.get_or_insert_with(|| {
            let (acks, acks_rx) = mpsc::channel(usize::from(RECEIVE_MAXIMUM));
            self.ctx.tasks.spawn(publish::answer_acks(
                acks_rx,
                Arc::clone(&self.sub),
                self.version,
            ));
            acks
        })
    }

    /// Where the hub tells this connection of new rooms for its wildcard filters, made with
    /// the first one.
    fn watcher(&mut self) -> Watcher {
        let Conn {
            watcher,
            new_rooms,
            sub,
            ..
        } = self;
        watcher
            .get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel(NEW_ROOMS);
                *new_rooms = Some(rx);
                Watcher {
                    sub: Arc::downgrade(sub),
                    rooms: tx,
                }
            })
            .clone()
    }

    /// Queues an answer behind the acks still waiting on durability, so answers keep the
    /// order of the publishes they answer.
    async fn ack_now(&mut self, packet: &Outbound<'_>) {
        let mut bytes = BytesMut::new();
        codec::encode(self.version, packet, &mut bytes);
        let _ = self.acks().send(Ack::Now(bytes.freeze())).await;
    }
}
