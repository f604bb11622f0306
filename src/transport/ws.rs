//! WebSocket: the handshake (our own, so we choose the subprotocol, apply the Origin policy
//! and answer malformed requests with a reason), the `/ws` chat in plain and structured
//! modes, and the `/echo` endpoint the conformance suite drives.
//!
//! A connection is one task. It waits on whichever comes first: a frame from the client, a
//! batch from its hub queue, a kick, or shutdown. A batch is fed to the socket and flushed
//! once, so a burst leaves in one write; the flush also watches kick and shutdown so a client
//! that stopped reading cannot pin the task.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::chat::DEFAULT_ROOM;
use super::ws_socket::{Deflate, WsLimits, WsMessage, WsSocket, negotiate_deflate};
use crate::hub::{
    Delivery, Disconnect, Hub, Lookback, MessageId, Published, Room, Subscriber, Transport,
};
use crate::protocol::envelope::{self, ClientFrame, ErrorCode, SUBPROTOCOL, ServerFrame};
use crate::protocol::names::{check_nick, check_room};
use crate::server::Shared;
use crate::store::StoreError;

/// Close codes we send (RFC 6455 section 7.4.1).
mod close {
    pub(super) const GOING_AWAY: u16 = 1001;
    pub(super) const UNSUPPORTED_DATA: u16 = 1003;
    pub(super) const POLICY_VIOLATION: u16 = 1008;
}

/// Query parameters of `/ws`.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatQuery {
    room: Option<String>,
    nick: Option<String>,
    format: Option<String>,
    since: Option<String>,
}

/// A refused handshake: a status and the reason, as plain text.
fn refuse(status: StatusCode, reason: impl Into<String>) -> Response {
    let reason = reason.into();
    tracing::info!(%status, %reason, "websocket handshake refused");
    let mut res = (status, reason).into_response();
    if status == StatusCode::UPGRADE_REQUIRED {
        res.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
    }
    res
}

/// What a valid handshake agreed on.
struct Handshake {
    accept: String,
    protocol: Option<&'static str>,
    deflate: Option<(String, Deflate)>,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

impl Handshake {
    /// Checks an upgrade request (RFC 6455 section 4.2.1) and the Origin policy.
    #[allow(clippy::result_large_err)]
    fn check(shared: &Shared, req: &mut Request, offer_protocol: bool) -> Result<Self, Response> {
        let headers = req.headers();
        let has_token = |name: header::HeaderName, token: &str| {
            headers.get_all(name).iter().any(|v| {
                v.to_str()
                    .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                    .unwrap_or(false)
            })
        };
        if !has_token(header::UPGRADE, "websocket") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "expected a WebSocket upgrade (Upgrade: websocket)",
            ));
        }
        if !has_token(header::CONNECTION, "upgrade") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "expected Connection: Upgrade",
            ));
        }
        match headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
        {
            Some(b"13") => {}
            Some(_) => {
                return Err(refuse(
                    StatusCode::UPGRADE_REQUIRED,
                    "unsupported Sec-WebSocket-Version; this server speaks 13",
                ));
            }
            None => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "missing Sec-WebSocket-Version",
                ));
            }
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| valid_key(k))
            .ok_or_else(|| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "missing or malformed Sec-WebSocket-Key (must be 16 bytes, base64)",
                )
            })?;
        if let Err(origin) = check_origin(shared, headers) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!("origin {origin} is not allowed (see allowed_origins)"),
            ));
        }
        let protocol = offer_protocol
            .then(|| {
                headers
                    .get_all(header::SEC_WEBSOCKET_PROTOCOL)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .any(|p| p.trim() == SUBPROTOCOL)
                    .then_some(SUBPROTOCOL)
            })
            .flatten();
        let deflate = if shared.config.ws_deflate {
            headers
                .get(header::SEC_WEBSOCKET_EXTENSIONS)
                .and_then(|v| v.to_str().ok())
                .and_then(negotiate_deflate)
        } else {
            None
        };
        let accept = accept_key(key);
        let on_upgrade = hyper::upgrade::on(req);
        Ok(Self {
            accept,
            protocol,
            deflate,
            on_upgrade,
        })
    }

    /// Sends 101 and runs `handler` on the upgraded connection, tracked for shutdown.
    fn upgrade<F, Fut>(self, shared: &Arc<Shared>, limits: WsLimits, handler: F) -> Response
    where
        F: FnOnce(WsSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut res = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        if let Some(protocol) = self.protocol {
            res = res.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        let deflate = match self.deflate {
            Some((header_value, deflate)) => {
                res = res.header(header::SEC_WEBSOCKET_EXTENSIONS, header_value);
                Some(deflate)
            }
            None => None,
        };
        let on_upgrade = self.on_upgrade;
        shared.tasks.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => handler(WsSocket::server(upgraded, limits, deflate)).await,
                Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
            }
        });
        res.body(Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 section 4.2.2).
fn accept_key(key: &str) -> String {
    sockudo_ws::handshake::generate_accept_key(key)
}

/// A key is 16 random bytes in base64: 24 characters ending in `==`.
fn valid_key(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The Origin policy. Requests without `Origin` come from non-browser clients and pass. A
/// browser origin passes when it is listed in `allowed_origins` (or the list holds `*`), when
/// it names the host the request was sent to, or when it is localhost/127.0.0.1/[::1]. `null`
/// (a page opened from disk, as the seed's chat page is) passes only while HTTP listens on a
/// loopback address, where no remote site can reach it anyway.
fn check_origin(shared: &Shared, headers: &HeaderMap) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| "(not text)".to_owned())?;
    let allowed = &shared.config.allowed_origins;
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    if origin == "null" {
        let loopback = shared.config.http.is_some_and(|a| a.ip().is_loopback());
        return if loopback {
            Ok(())
        } else {
            Err(origin.to_owned())
        };
    }
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .ok_or_else(|| origin.to_owned())?;
    let host_of = |authority: &str| -> String {
        let host = if let Some(rest) = authority.strip_prefix('[') {
            rest.split(']').next().unwrap_or("")
        } else {
            authority.split(':').next().unwrap_or("")
        };
        host.to_ascii_lowercase()
    };
    let origin_host = host_of(authority);
    if matches!(origin_host.as_str(), "localhost" | "127.0.0.1" | "::1") {
        return Ok(());
    }
    let same_host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.eq_ignore_ascii_case(authority));
    if same_host {
        Ok(())
    } else {
        Err(origin.to_owned())
    }
}

fn limits(shared: &Shared, max_message: usize) -> WsLimits {
    WsLimits {
        max_message,
        ping_interval_secs: shared.config.ws_ping_interval.as_secs() as u32,
        pong_timeout_secs: shared.config.ws_pong_timeout.as_secs() as u32,
    }
}

/// `GET /echo`: every message back unchanged, text as text and binary as binary.
pub(crate) async fn echo(State(shared): State<Arc<Shared>>, mut req: Request) -> Response {
    let handshake = match Handshake::check(&shared, &mut req, false) {
        Ok(h) => h,
        Err(res) => return res,
    };
    let limits = limits(&shared, shared.config.ws_echo_max_message);
    let stop = super::stop_signal(&shared);
    handshake.upgrade(&shared, limits, move |mut ws| async move {
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => {
                    ws.close(close::GOING_AWAY, "server shutting down").await;
                    return;
                }
                m = ws.recv() => m,
            };
            match message {
                Some(Ok(m @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => {
                    if ws.feed(m).await.is_err() || ws.flush().await.is_err() {
                        return;
                    }
                }
                Some(Ok(WsMessage::Control)) => {}
                Some(Ok(WsMessage::Close)) | None => return,
                Some(Err(error)) => {
                    tracing::debug!(%error, "echo connection ended");
                    return;
                }
            }
        }
    })
}

/// `GET /ws`: the chat. Plain mode is the seed's (text in, `nick: text` out, sender
/// included); structured mode (`Sec-WebSocket-Protocol: switchboard.v1` or `?format=json`)
/// speaks JSON envelopes.
pub(crate) async fn chat(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Query(query): Query<ChatQuery>,
    mut req: Request,
) -> Response {
    let room = query.room.unwrap_or_else(|| DEFAULT_ROOM.to_owned());
    if let Err(e) = check_room(&room) {
        return refuse(StatusCode::BAD_REQUEST, e.to_string());
    }
    if let Some(nick) = &query.nick
        && let Err(e) = check_nick(nick)
    {
        return refuse(StatusCode::BAD_REQUEST, e.to_string());
    }
    let since = match MessageId::parse_opt(query.since.as_deref()) {
        Ok(since) => since,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let json_query = match query.format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("unknown format {other:?}: expected json or text"),
            );
        }
    };
    let handshake = match Handshake::check(&shared, &mut req, true) {
        Ok(h) => h,
        Err(res) => return res,
    };
    let structured = json_query || handshake.protocol.is_some();
    let Some(permit) = shared.limiter.try_acquire(addr.ip()) else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "server full");
    };
    let limits = limits(&shared, shared.config.ws_max_message);
    let shared2 = Arc::clone(&shared);
    handshake.upgrade(&shared, limits, move |ws| async move {
        let _permit = permit;
        let session = Session::start(
            shared2,
            addr,
            structured,
            query.nick.as_deref(),
            &room,
            since,
        );
        session.run(ws).await;
    })
}

/// One WebSocket chat connection.
struct Session {
    shared: Arc<Shared>,
    /// This connection's child of the server's shutdown token (see `super::stop_signal`).
    stop: CancellationToken,
    sub: Arc<Subscriber>,
    rx: tokio::sync::mpsc::Receiver<Delivery>,
    nick: Arc<str>,
    rooms: Vec<Arc<Room>>,
    structured: bool,
}

/// How a batch write ended.
enum Sent {
    /// Written and flushed.
    Done,
    /// Abandoned because the client was kicked or the server is stopping.
    Interrupted,
    /// The write failed: the peer is gone.
    PeerGone,
}

/// What woke the connection task.
enum Wake {
    Frame(Option<Result<WsMessage, super::ws_socket::WsError>>),
    Queue(usize),
    Kicked,
    Shutdown,
}

impl Session {
    fn start(
        shared: Arc<Shared>,
        addr: SocketAddr,
        structured: bool,
        nick: Option<&str>,
        room: &str,
        since: Option<MessageId>,
    ) -> Self {
        let hub = &shared.hub;
        let (sub, rx) = hub.subscribe(Transport::Ws, true, Some(addr));
        let nick = claim_nick(hub, &sub, nick);
        if structured {
            // Queued before joining so that it is the first frame the client reads.
            let welcome = ServerFrame::Welcome {
                nick: &nick,
                rooms: vec![room],
            };
            sub.offer(Delivery::direct(welcome.encode()));
        }
        let (room, cursor) = hub.join_since(room, &sub, Arc::clone(&nick), since);
        tracing::debug!(id = sub.id, %addr, %nick, structured, "websocket chat connected");
        if structured {
            let members = room.members();
            let joined = ServerFrame::Joined {
                reference: None,
                room: room.name(),
                members: members.iter().map(|m| &*m.nick).collect(),
                cursor: cursor.to_string(),
            };
            sub.offer(Delivery::direct(joined.encode()));
        }
        Self {
            stop: super::stop_signal(&shared),
            shared,
            sub,
            rx,
            nick,
            rooms: vec![room],
            structured,
        }
    }

    /// Queues a server frame for this client alone, in order with its room events.
    fn direct(&self, frame: ServerFrame<'_>) {
        self.sub.offer(Delivery::direct(frame.encode()));
    }

    fn error(&self, reference: Option<&str>, code: ErrorCode, message: String) {
        tracing::debug!(id = self.sub.id, ?code, %message, "structured client error");
        self.direct(ServerFrame::Error {
            reference,
            code,
            message,
        });
    }

    async fn run(mut self, mut ws: WsSocket) {
        let mut batch = Vec::new();
        let (code, reason) = loop {
            let wake = tokio::select! {
                biased;
                _ = self.stop.cancelled() => Wake::Shutdown,
                _ = self.sub.kicked() => Wake::Kicked,
                n = self.rx.recv_many(&mut batch, 64) => Wake::Queue(n),
                frame = ws.recv() => Wake::Frame(frame),
            };
            match wake {
                Wake::Shutdown => break (Some(close::GOING_AWAY), "server shutting down"),
                Wake::Kicked => {
                    let reason = self.sub.kick_reason().unwrap_or(Disconnect::SlowConsumer);
                    break (Some(close::POLICY_VIOLATION), reason.as_str());
                }
                Wake::Queue(0) => break (None, ""),
                Wake::Queue(_) => match self.send_batch(&mut ws, &mut batch).await {
                    // The loop's next turn sees the kick or the shutdown and closes.
                    Sent::Done | Sent::Interrupted => {}
                    Sent::PeerGone => break (None, ""),
                },
                Wake::Frame(None) | Wake::Frame(Some(Ok(WsMessage::Close))) => break (None, ""),
                Wake::Frame(Some(Err(error))) => {
                    tracing::debug!(id = self.sub.id, %error, "websocket read ended");
                    break (None, "");
                }
                Wake::Frame(Some(Ok(WsMessage::Control))) => {}
                Wake::Frame(Some(Ok(WsMessage::Binary(_)))) => {
                    break (
                        Some(close::UNSUPPORTED_DATA),
                        "binary messages are not supported on /ws",
                    );
                }
                Wake::Frame(Some(Ok(WsMessage::Text(bytes)))) => {
                    // The library has validated UTF-8 already.
                    let text = String::from_utf8_lossy(&bytes);
                    if self.structured {
                        self.handle_frame(&text);
                    } else {
                        let not_sent =
                            |e: StoreError| Bytes::from(format!("ERR message not sent: {e}"));
                        match self.publish(0, &text, None) {
                            Some(Err(e)) => {
                                self.sub.offer(Delivery::direct(not_sent(e)));
                            }
                            Some(Ok(published)) => published.report_failure(&self.sub, not_sent),
                            None => {}
                        }
                    }
                }
            }
        };
        if let Some(code) = code {
            ws.close(code, reason).await;
        }
        let reason =
            matches!(code, Some(close::GOING_AWAY | close::POLICY_VIOLATION)).then_some(reason);
        for room in &self.rooms {
            self.shared.hub.leave(room, self.sub.id, reason);
        }
        self.shared.hub.release_nick(self.sub.id, &self.nick);
        tracing::debug!(id = self.sub.id, "websocket chat closed");
    }

    /// Sends a batch in one flush, giving up if the connection is kicked or the server stops
    /// while the write waits on a client that does not read.
    async fn send_batch(&self, ws: &mut WsSocket, batch: &mut Vec<Delivery>) -> Sent {
        if let Some(Delivery::Event(event)) = batch.first() {
            crate::metrics::METRICS.observe_delivery(event.time_ms);
        }
        let write = async {
            for delivery in batch.drain(..) {
                match delivery {
                    Delivery::Event(event) => ws.feed(WsMessage::Text(self.encode(&event))).await?,
                    Delivery::Direct(bytes) => ws.feed(WsMessage::Text(*bytes)).await?,
                    Delivery::Replay(replay) => {
                        let gap = if self.structured {
                            replay.gap_json()
                        } else {
                            replay.gap_text().map(Bytes::from)
                        };
                        if let Some(gap) = gap {
                            ws.feed(WsMessage::Text(gap)).await?;
                        }
                        for event in &replay.events {
                            ws.feed(WsMessage::Text(self.encode(event))).await?;
                        }
                    }
                }
            }
            ws.flush().await
        };
        tokio::select! {
            biased;
            _ = self.sub.kicked() => Sent::Interrupted,
            _ = self.stop.cancelled() => Sent::Interrupted,
            written = write => match written {
                Ok(()) => Sent::Done,
                Err(error) => {
                    tracing::debug!(id = self.sub.id, %error, "websocket write failed");
                    Sent::PeerGone
                }
            },
        }
    }

    /// The event's shared payload for this connection's mode.
    fn encode(&self, event: &crate::hub::Event) -> Bytes {
        if self.structured {
            event.json().clone()
        } else {
            event.plain().clone()
        }
    }

    fn publish(
        &self,
        room: usize,
        text: &str,
        key: Option<&str>,
    ) -> Option<Result<Published, StoreError>> {
        let room = self.rooms.get(room)?;
        Some(
            self.shared
                .hub
                .publish(room, Some(self.sub.id), Arc::clone(&self.nick), text, key),
        )
    }

    fn room_index(&self, name: &str) -> Option<usize> {
        self.rooms.iter().position(|r| &**r.name() == name)
    }

    fn handle_frame(&mut self, text: &str) {
        let frame = match envelope::parse(text) {
            Ok(frame) => frame,
            Err(message) => return self.error(None, ErrorCode::BadFrame, message),
        };
        let reference = frame.reference().map(str::to_owned);
        let reference = reference.as_deref();
        match frame {
            ClientFrame::Publish {
                room, text, key, ..
            } => {
                let index = match room.as_deref() {
                    Some(name) => self.room_index(name),
                    None if self.rooms.len() == 1 => Some(0),
                    None => None,
                };
                let Some(index) = index else {
                    let message = match room {
                        Some(name) => format!("not in room {name}; join it first"),
                        None => "several rooms joined; say which with \"room\"".to_owned(),
                    };
                    return self.error(reference, ErrorCode::NotJoined, message);
                };
                let room = Arc::clone(self.rooms[index].name());
                match self.publish(index, &text, key.as_deref()) {
                    None => {}
                    Some(Err(e)) => {
                        self.error(
                            reference,
                            ErrorCode::Unavailable,
                            format!("message not sent: {e}"),
                        );
                    }
                    Some(Ok(published)) => {
                        // The ack waits until the message is durable, without holding up
                        // this connection's other traffic.
                        let sub = Arc::clone(&self.sub);
                        let reference = reference.map(str::to_owned);
                        self.shared.tasks.spawn(async move {
                            let reference = reference.as_deref();
                            let frame = match published.durable().await {
                                Ok(acked) => ServerFrame::Ack {
                                    reference,
                                    room: &room,
                                    id: acked.id.to_string(),
                                    duplicate: acked.duplicate,
                                },
                                Err(e) => ServerFrame::Error {
                                    reference,
                                    code: ErrorCode::Unavailable,
                                    message: format!("message not stored: {e}"),
                                },
                            };
                            sub.offer(Delivery::direct(frame.encode()));
                        });
                    }
                }
            }
            ClientFrame::Join { room, since, .. } => {
                if let Err(e) = check_room(&room) {
                    return self.error(reference, ErrorCode::BadName, e.to_string());
                }
                let since = match MessageId::parse_opt(since.as_deref()) {
                    Ok(since) => since,
                    Err(e) => return self.error(reference, ErrorCode::BadFrame, e.to_string()),
                };
                let cursor = match self.room_index(&room) {
                    None => {
                        let (joined, cursor) = self.shared.hub.join_since(
                            &room,
                            &self.sub,
                            Arc::clone(&self.nick),
                            since,
                        );
                        self.rooms.push(joined);
                        cursor
                    }
                    Some(index) => {
                        if let Some(since) = since {
                            self.rooms[index].replay(&self.sub, Lookback::Since(since));
                        }
                        self.rooms[index].cursor()
                    }
                };
                let index = self.room_index(&room).unwrap_or(0);
                let members = self.rooms[index].members();
                self.direct(ServerFrame::Joined {
                    reference,
                    room: &room,
                    members: members.iter().map(|m| &*m.nick).collect(),
                    cursor: cursor.to_string(),
                });
            }
            ClientFrame::Leave { room, .. } => {
                let Some(index) = self.room_index(&room) else {
                    return self.error(
                        reference,
                        ErrorCode::NotJoined,
                        format!("not in room {room}"),
                    );
                };
                let left = self.rooms.swap_remove(index);
                self.shared.hub.leave(&left, self.sub.id, None);
                self.direct(ServerFrame::Left {
                    reference,
                    room: &room,
                });
            }
        }
    }
}

/// Claims the asked-for nick, or it with a `-2`, `-3`… suffix when taken (so a reconnecting
/// browser whose old connection is not yet gone still gets in), or a generated one.
pub(crate) fn claim_nick(hub: &Hub, sub: &Subscriber, asked: Option<&str>) -> Arc<str> {
    if let Some(asked) = asked {
        if hub.claim_nick(sub.id, asked).is_ok() {
            return asked.into();
        }
        for n in 2..100 {
            let candidate = format!("{asked}-{n}");
            if check_nick(&candidate).is_ok() && hub.claim_nick(sub.id, &candidate).is_ok() {
                return candidate.into();
            }
        }
    }
    hub.claim_generated_nick(sub.id)
}
