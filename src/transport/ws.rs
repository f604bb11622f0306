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
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::link::{self, Link, Step};
use super::writer::{BATCH, Outbox, Output};
use super::ws_socket::{Deflate, WsLimits, WsMessage, WsSocket, negotiate_deflate};
use crate::auth::{Action, Principal};
use crate::hub::Delivery;
use crate::hub::{Disconnect, MessageId, Transport};
use crate::protocol::envelope::{self, ErrorCode, SUBPROTOCOL};
use crate::protocol::names::{check_nick, check_room};
use crate::session::{self, DEFAULT_ROOM, Dialect, Flow, Hello, Session};
use crate::transport::context::Context;
use crate::wire::{self, Emit, Wire};

/// Close codes we send (RFC 6455 section 7.4.1).
mod close {
    pub(super) const NORMAL: u16 = 1000;
    pub(super) const GOING_AWAY: u16 = 1001;
    pub(super) const UNSUPPORTED_DATA: u16 = 1003;
    pub(super) const POLICY_VIOLATION: u16 = 1008;
    /// The token expired and was not refreshed (application range, RFC 6455 section 7.4.2).
    pub(super) const TOKEN_EXPIRED: u16 = 4001;
    /// An operator removed the connection.
    pub(super) const KICKED: u16 = 4003;
}

/// Query parameters of `/ws`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ChatQuery {
    /// The room to join (default `chat`).
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = r"^(?!\.\.?(/|$))[\p{L}\p{N}_.\-]+(/(?!\.\.?(/|$))[\p{L}\p{N}_.\-]+)*$"
    )]
    pub(crate) room: Option<String>,
    /// The nick to take (else the token's name, else one is given).
    #[param(min_length = 1, max_length = 32, pattern = r"^[\p{L}\p{N}_.\-]+$")]
    pub(crate) nick: Option<String>,
    /// `json` for the structured protocol (as the `switchboard.v1` subprotocol gives), `text`
    /// for the seed's plain lines (the default).
    #[param(pattern = "^(json|text)$")]
    format: Option<String>,
    /// Resume after this message id (`EPOCH-SEQ`): what was missed is sent first.
    #[param(pattern = "^[0-9a-fA-F]{1,8}-[0-9]{1,19}$")]
    pub(crate) since: Option<String>,
    /// A token, for clients that cannot set `Authorization` (browsers' WebSocket).
    token: Option<String>,
}

/// A refused handshake, with why. `crate::http` answers it as the JSON error every HTTP
/// refusal has (`IntoResponse`), so this module builds no HTTP error bodies of its own.
#[derive(Debug)]
pub(crate) enum Refused {
    /// 400: not an upgrade, or a bad key, version header or query parameter.
    BadRequest(String),
    /// 400: a room or nick name that breaks the naming rules (`bad_name`).
    BadName(String),
    /// 401: no credential where one is needed, or one that does not verify.
    Unauthorized(String),
    /// 403: the credential lacks the grant, or the page's origin is not allowed.
    Forbidden(String),
    /// 426: a WebSocket version other than 13.
    UpgradeRequired(String),
    /// 503: a connection cap is reached.
    Full(crate::transport::limits::Full),
}

/// A refused handshake's answer (`kind` is a `Refused` variant), and a log line.
fn refuse(kind: fn(String) -> Refused, reason: impl Into<String>) -> Response {
    let refused = kind(reason.into());
    tracing::info!(?refused, "websocket handshake refused");
    refused.into_response()
}

/// A handshake refused because a connection cap is reached: 503 naming which.
fn refuse_full(full: crate::transport::limits::Full) -> Response {
    tracing::info!(reason = %full, "websocket handshake refused");
    Refused::Full(full).into_response()
}

/// What a valid handshake agreed on.
struct Handshake {
    /// `Sec-WebSocket-Accept` for an HTTP/1.1 upgrade; `None` for HTTP/2's extended CONNECT
    /// (RFC 8441), which is answered 200 and has no key.
    accept: Option<String>,
    protocol: Option<&'static str>,
    deflate: Option<(String, Deflate)>,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

impl Handshake {
    /// Checks an upgrade request (RFC 6455 section 4.2.1) and the Origin policy.
    #[allow(clippy::result_large_err)]
    /// `offer` is the subprotocol this endpoint speaks, accepted when the client offers it.
    fn check(
        shared: &Context,
        req: &mut Request,
        offer: Option<&'static str>,
    ) -> Result<Self, Response> {
        let over_h2 = req.method() == axum::http::Method::CONNECT;
        let websocket_protocol = req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str() == "websocket");
        if over_h2 && !websocket_protocol {
            return Err(refuse(
                Refused::BadRequest,
                "CONNECT here is only for WebSockets over HTTP/2 (:protocol websocket, RFC 8441)",
            ));
        }
        let headers = req.headers();
        let accept = if over_h2 {
            check_version(headers)?;
            None
        } else {
            Some(accept_key(upgrade_key(headers)?))
        };
        // An extended CONNECT (HTTP/2) names its authority in the URI, not in `Host`.
        let target = crate::auth::origin::authority(req.uri(), headers).unwrap_or(None);
        if let Err(origin) = crate::auth::origin::check(
            &shared.config.allowed_origins,
            shared.config.http.is_some_and(|a| a.ip().is_loopback()),
            target,
            headers,
        ) {
            return Err(refuse(
                Refused::Forbidden,
                format!("origin {origin} is not allowed (see --allowed-origin)"),
            ));
        }
        let protocol = offer.filter(|offered| {
            headers
                .get_all(header::SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|p| p.trim() == *offered)
        });
        let deflate = if shared.config.ws_deflate {
            headers
                .get(header::SEC_WEBSOCKET_EXTENSIONS)
                .and_then(|v| v.to_str().ok())
                .and_then(negotiate_deflate)
        } else {
            None
        };
        let on_upgrade = hyper::upgrade::on(req);
        Ok(Self {
            accept,
            protocol,
            deflate,
            on_upgrade,
        })
    }

    /// Sends 101 and runs `handler` on the upgraded connection, tracked for shutdown.
    fn upgrade<F, Fut>(self, shared: &Arc<Context>, limits: WsLimits, handler: F) -> Response
    where
        F: FnOnce(WsSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut res = match self.accept {
            Some(accept) => Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::UPGRADE, "websocket")
                .header(header::CONNECTION, "Upgrade")
                .header(header::SEC_WEBSOCKET_ACCEPT, accept),
            // HTTP/2: a 200 to the extended CONNECT opens the stream as the WebSocket.
            None => Response::builder().status(StatusCode::OK),
        };
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

/// Checks the upgrade request's headers (RFC 6455 section 4.2.1) and returns its key.
#[allow(clippy::result_large_err)]
fn upgrade_key(headers: &HeaderMap) -> Result<&str, Response> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if !has_token(header::UPGRADE, "websocket") {
        return Err(refuse(
            Refused::BadRequest,
            "expected a WebSocket upgrade (Upgrade: websocket)",
        ));
    }
    if !has_token(header::CONNECTION, "upgrade") {
        return Err(refuse(Refused::BadRequest, "expected Connection: Upgrade"));
    }
    check_version(headers)?;
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| valid_key(k))
        .ok_or_else(|| {
            refuse(
                Refused::BadRequest,
                "missing or malformed Sec-WebSocket-Key (must be 16 bytes, base64)",
            )
        })
}

/// `Sec-WebSocket-Version` must be 13 (RFC 6455 section 4.2.1; RFC 8441 section 5).
#[allow(clippy::result_large_err)]
fn check_version(headers: &HeaderMap) -> Result<(), Response> {
    match headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
    {
        Some(b"13") => {}
        Some(_) => {
            return Err(refuse(
                Refused::UpgradeRequired,
                "unsupported Sec-WebSocket-Version; this server speaks 13",
            ));
        }
        None => {
            return Err(refuse(Refused::BadRequest, "missing Sec-WebSocket-Version"));
        }
    }
    Ok(())
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

fn limits(shared: &Context, max_message: usize) -> WsLimits {
    WsLimits {
        max_message,
        ping_interval_secs: shared.config.ws_ping_interval.as_secs() as u32,
        pong_timeout_secs: shared.config.ws_pong_timeout.as_secs() as u32,
    }
}

/// `GET /echo`: every message back unchanged, text as text and binary as binary.
pub(crate) async fn echo(State(shared): State<Arc<Context>>, mut req: Request) -> Response {
    let handshake = match Handshake::check(&shared, &mut req, None) {
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

/// `GET /mqtt`: MQTT over WebSocket (subprotocol `mqtt`, binary frames; a packet may span
/// frames and a frame may hold several).
pub(crate) async fn mqtt(
    State(shared): State<Arc<Context>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    let handshake = match Handshake::check(&shared, &mut req, Some("mqtt")) {
        Ok(h) => h,
        Err(res) => return res,
    };
    let permit = match shared.limiter.try_acquire(addr.ip()) {
        Ok(permit) => permit,
        Err(full) => return refuse_full(full),
    };
    let limits = limits(&shared, shared.config.mqtt_max_packet + 16);
    let ctx = Arc::clone(&shared);
    handshake.upgrade(&shared, limits, move |ws| async move {
        let _permit = permit;
        super::mqtt::handle_ws(ws, addr, ctx).await;
    })
}

/// `GET /ws`: the chat. Plain mode is the seed's (text in, `nick: text` out, sender
/// included); structured mode (`Sec-WebSocket-Protocol: switchboard.v1` or `?format=json`)
/// speaks JSON envelopes.
pub(crate) async fn chat(
    State(shared): State<Arc<Context>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    query: Result<Query<ChatQuery>, axum::extract::rejection::QueryRejection>,
    mut req: Request,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => return refuse(Refused::BadRequest, e.body_text()),
    };
    let room = query.room.unwrap_or_else(|| DEFAULT_ROOM.to_owned());
    if let Err(e) = check_room(&room) {
        return refuse(Refused::BadName, e.to_string());
    }
    if let Some(nick) = &query.nick
        && let Err(e) = check_nick(nick)
    {
        return refuse(Refused::BadName, e.to_string());
    }
    let since = match MessageId::parse_opt(query.since.as_deref()) {
        Ok(since) => since,
        Err(e) => return refuse(Refused::BadRequest, e.to_string()),
    };
    let json_query = match query.format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return refuse(
                Refused::BadRequest,
                format!("unknown format {other:?}: expected json or text"),
            );
        }
    };
    let (token, api_key) = crate::auth::presented(req.headers(), query.token.as_deref());
    let who = match shared.hub.auth().principal(token, api_key) {
        Ok(who) => who,
        Err(e) => {
            return refuse(Refused::Unauthorized, format!("credentials refused: {e}"));
        }
    };
    if !shared.hub.auth().allows(&who, &room, Action::Subscribe) {
        // Anonymous: a token might help; otherwise the token lacks the grant.
        let kind: fn(String) -> Refused = match who {
            Principal::Anonymous => Refused::Unauthorized,
            _ => Refused::Forbidden,
        };
        return refuse(kind, format!("not allowed to subscribe in {room}"));
    }
    let handshake = match Handshake::check(&shared, &mut req, Some(SUBPROTOCOL)) {
        Ok(h) => h,
        Err(res) => return res,
    };
    let structured = json_query || handshake.protocol.is_some();
    let permit = match shared.limiter.try_acquire(addr.ip()) {
        Ok(permit) => permit,
        Err(full) => return refuse_full(full),
    };
    let limits = limits(&shared, shared.config.ws_max_message);
    // Joined before the 101 goes out, so that a client whose handshake has completed misses
    // nothing published after it; if the upgrade then fails, dropping the session leaves.
    let connection = Connection::start(
        Arc::clone(&shared),
        addr,
        structured,
        query.nick.as_deref(),
        who,
        &room,
        since,
    );
    handshake.upgrade(&shared, limits, move |ws| async move {
        let _permit = permit;
        connection.run(ws).await;
    })
}

/// One WebSocket chat connection: its session, and the outbox its writer drains.
struct Connection {
    session: Session,
    outbox: Outbox,
    structured: bool,
}

/// The socket as the writer driver's output. Uncompressed, a batch becomes whole frames
/// written with vectored writes (`WsSocket::write_frames`; a room event's frame is shared);
/// compressed, each delivery's units are fed to the library as messages, then flushed once. Units
/// emitted outside a batch (a goodbye) wait in `pending`; WebSocket has none, it closes.
struct FrameOutput<'a> {
    ws: &'a mut WsSocket,
    pending: Vec<Bytes>,
}

impl Emit for FrameOutput<'_> {
    fn emit(&mut self, unit: &Bytes, _: Option<MessageId>) {
        self.pending.push(unit.clone());
    }
}

impl FrameOutput<'_> {
    async fn feed(&mut self, frame: Bytes) -> std::io::Result<()> {
        self.ws
            .feed(WsMessage::Text(frame))
            .await
            .map_err(std::io::Error::other)
    }
}

impl Output for FrameOutput<'_> {
    async fn flush(&mut self) -> std::io::Result<()> {
        for frame in std::mem::take(&mut self.pending) {
            self.feed(frame).await?;
        }
        self.ws.flush().await.map_err(std::io::Error::other)
    }

    fn discard(&mut self) {
        self.pending.clear();
    }

    async fn write(&mut self, wire: Wire, batch: &mut Vec<Delivery>) -> std::io::Result<()> {
        if self.ws.takes_frames() && self.pending.is_empty() {
            let written = write_frames(self.ws, wire, batch).await;
            batch.clear();
            return written;
        }
        for delivery in batch.drain(..) {
            for frame in wire::units(wire, delivery) {
                self.feed(frame).await?;
            }
        }
        self.flush().await
    }
}

/// Writes a batch as whole frames. Room events' frames are borrowed from the events into a
/// list on the stack (nothing allocated or reference-counted per receiver); an answer or a
/// replay among them is framed apart, after what came before it is written, so order holds.
async fn write_frames(ws: &mut WsSocket, wire: Wire, batch: &[Delivery]) -> std::io::Result<()> {
    let mut run: [&[u8]; BATCH] = [&[]; BATCH];
    let mut len = 0;
    for delivery in batch {
        if let Some(frame) = wire::ws_event_frame(wire, delivery) {
            if len == BATCH {
                ws.write_frames(&run).await.map_err(std::io::Error::other)?;
                len = 0;
            }
            run[len] = frame;
            len += 1;
            continue;
        }
        if len > 0 {
            ws.write_frames(&run[..len])
                .await
                .map_err(std::io::Error::other)?;
            len = 0;
        }
        let mut own = Vec::new();
        wire::ws_frames(wire, delivery, &mut own);
        let own: Vec<&[u8]> = own.iter().map(|frame| &frame[..]).collect();
        ws.write_frames(&own).await.map_err(std::io::Error::other)?;
    }
    if len == 0 {
        return Ok(());
    }
    ws.write_frames(&run[..len])
        .await
        .map_err(std::io::Error::other)
}

impl Connection {
    fn start(
        shared: Arc<Context>,
        addr: SocketAddr,
        structured: bool,
        nick: Option<&str>,
        who: Principal,
        room: &str,
        since: Option<MessageId>,
    ) -> Self {
        let (wire, dialect) = match structured {
            true => (Wire::Json, Dialect::Structured),
            false => (Wire::Plain, Dialect::Plain),
        };
        let hello = Hello {
            transport: Transport::Ws,
            dialect,
            addr: Some(addr),
            nick,
            principal: who,
        };
        let (mut session, rx) = Session::connect(&shared.hub, shared.tasks.clone(), hello, room);
        if let Err(e) = session.enter(room, since) {
            session.refuse(None, ErrorCode::LimitReached, e);
        }
        let sub = Arc::clone(session.subscriber());
        Self {
            outbox: Outbox::new(rx, sub, super::stop_signal(&shared), wire),
            session,
            structured,
        }
    }

    async fn run(self, ws: WsSocket) {
        let Connection {
            session,
            mut outbox,
            structured,
        } = self;
        let mut chat = Chat {
            ws,
            session,
            structured,
        };
        let reason = link::drive(&mut chat, &mut outbox).await;
        chat.session.end(reason);
    }
}

/// A chat connection's side of the driver: text frames in, a batch of frames out.
struct Chat {
    ws: WsSocket,
    session: Session,
    structured: bool,
}

impl Link for Chat {
    type Input = Option<Result<WsMessage, super::ws_socket::WsError>>;

    async fn recv(&mut self) -> Self::Input {
        self.ws.recv().await
    }

    async fn act(&mut self, frame: Self::Input) -> Step {
        match frame {
            None | Some(Ok(WsMessage::Close)) => Step::Gone,
            Some(Err(error)) => {
                tracing::debug!(id = self.session.subscriber().id, %error, "websocket read ended");
                Step::Gone
            }
            Some(Ok(WsMessage::Control)) => Step::Continue,
            Some(Ok(WsMessage::Binary(_))) => {
                self.ws
                    .close(
                        close::UNSUPPORTED_DATA,
                        "binary messages are not supported on /ws",
                    )
                    .await;
                Step::Gone
            }
            // After `/quit` the goodbye notice is queued: the driver sends it, then closes.
            Some(Ok(WsMessage::Text(bytes))) => match self.handle_text(&bytes) {
                Flow::Quit => Step::Done,
                Flow::Continue => Step::Continue,
            },
        }
    }

    async fn deliver(&mut self, outbox: &mut Outbox) -> Step {
        let mut out = FrameOutput {
            ws: &mut self.ws,
            pending: Vec::new(),
        };
        link::sent(outbox.send(&mut out).await)
    }

    async fn close(&mut self, _: &Outbox, reason: Option<Disconnect>) {
        let Some(reason) = reason else {
            return self.ws.close(close::NORMAL, "bye").await;
        };
        let code = match reason {
            Disconnect::Shutdown => close::GOING_AWAY,
            Disconnect::TokenExpired => close::TOKEN_EXPIRED,
            Disconnect::Kicked => close::KICKED,
            Disconnect::SlowConsumer
            | Disconnect::TimedOut
            | Disconnect::Flooding
            | Disconnect::Replaced => close::POLICY_VIOLATION,
        };
        self.ws.close(code, reason.as_str()).await;
    }
}

impl Chat {
    /// Lowers a text frame into a request for the session; `Flow::Quit` after `/quit`.
    fn handle_text(&mut self, bytes: &[u8]) -> Flow {
        // The library has validated UTF-8 already.
        let text = String::from_utf8_lossy(bytes);
        if self.structured {
            let frame = envelope::parse(&text);
            self.session.apply(session::Request::from_frame(&frame))
        } else {
            let input = crate::protocol::command::parse(&text);
            self.session.apply(session::Request::from_plain(&input))
        }
    }
}
