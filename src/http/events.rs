//! Server-Sent Events: `GET /events?room=R`, one room's events as `text/event-stream`.
//!
//! The client is a member of the room like any other (presence sees it). Resume: the
//! `Last-Event-ID` header (sent by browsers when they reconnect) or `?since=ID` joins with a
//! cursor, so the replay and the live stream meet without gap or duplicate (`Room::add`).
//! The response body is a stream that drains the subscriber's queue; hyper pulls from it only
//! as fast as the socket drains, so a reader that stops fills its queue and is cut by the hub.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use super::{AppError, Query};
use crate::auth::Action;
use crate::hub::{MessageId, Transport};
use crate::protocol::names::{check_nick, check_room};
use crate::session::{DEFAULT_ROOM, Dialect, Hello, Session};
use crate::transport::context::Context;
use crate::transport::limits::Permit;
use crate::transport::writer::Outbox;
use crate::wire::{self, Emit, Wire};

/// A comment line every this often keeps proxies and load balancers from timing out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a browser waits before reconnecting, told once at the start.
const RETRY_MS: u64 = 2_000;

/// Query of `/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// The room [default: lobby].
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = r"^(?!\.\.?(/|$))[\p{L}\p{N}_.\-]+(/(?!\.\.?(/|$))[\p{L}\p{N}_.\-]+)*$"
    )]
    pub(crate) room: Option<String>,
    /// The nick to hold (`-2`… is added when it is taken) [default: generated].
    #[param(min_length = 1, max_length = 32, pattern = r"^[\p{L}\p{N}_.\-]+$")]
    pub(crate) nick: Option<String>,
    /// Resume after this id (`Last-Event-ID` wins).
    #[param(pattern = "^[0-9a-fA-F]{1,8}-[0-9]{1,19}$")]
    pub(crate) since: Option<String>,
    /// A token (EventSource cannot set headers).
    token: Option<String>,
}

/// `GET /events`.
#[utoipa::path(
    get,
    path = "/events",
    tag = "rooms",
    summary = "Receive a room's events as Server-Sent Events",
    description = "`event: joined` first (its `id:` is the cursor), then message, join, leave, nick, \
                   crowd, gap, direct and close events whose data is the structured protocol's JSON.",
    params(EventsQuery, ("Last-Event-ID" = Option<String>, Header, description = "Sent by browsers when they reconnect")),
    responses(
        (status = 200, description = "The stream, until the client leaves", content_type = "text/event-stream", body = String),
        super::openapi::Refusals,
        super::openapi::AuthRefusals,
    )
)]
pub(crate) async fn events(
    State(shared): State<Arc<Context>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let room = query.room.unwrap_or_else(|| DEFAULT_ROOM.to_owned());
    check_room(&room).map_err(AppError::bad_name)?;
    if let Some(nick) = &query.nick {
        check_nick(nick).map_err(AppError::bad_name)?;
    }
    // A browser's reconnect carries Last-Event-ID, which is newer than a `since` in the URL.
    let last_event_id = match headers.get("last-event-id") {
        Some(v) if !v.is_empty() => Some(v.to_str().map_err(|_| {
            AppError::bad_request("Last-Event-ID is not an id (expected e.g. 1a2b3c4d-17)")
        })?),
        _ => None,
    };
    let since = MessageId::parse_opt(last_event_id.or(query.since.as_deref()))
        .map_err(AppError::bad_request)?;
    let who = super::allowed(
        &shared,
        &headers,
        query.token.as_deref(),
        &room,
        Action::Subscribe,
    )?;
    let permit = shared
        .limiter
        .try_acquire(addr.ip())
        .map_err(AppError::full)?;

    let hello = Hello {
        transport: Transport::Sse,
        dialect: Dialect::Quiet,
        addr: Some(addr),
        nick: query.nick.as_deref(),
        principal: who,
    };
    let (mut session, rx) = Session::connect(&shared.hub, shared.tasks.clone(), hello, &room);
    let cursor = session.enter(&room, since).map_err(AppError::room)?;
    let sub = Arc::clone(session.subscriber());
    let stream = EventStream {
        outbox: Outbox::new(rx, sub, crate::transport::stop_signal(&shared), Wire::Sse),
        session,
        _permit: permit,
        out: SseOutput::default(),
        keep_alive: tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE),
        ends_at: shared
            .config
            .sse_max_lifetime
            .map(|life| tokio::time::Instant::now() + life),
        cursor,
        started: false,
        done: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(stream, EventStream::next));
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

/// The response body's state. Dropping it (client gone, server stopping) drops the session,
/// which leaves the room.
struct EventStream {
    session: Session,
    outbox: Outbox,
    _permit: Permit,
    out: SseOutput,
    keep_alive: tokio::time::Interval,
    /// When the stream ends so the client reconnects (with `Last-Event-ID`) and can land on
    /// another node; `None` keeps it open.
    ends_at: Option<tokio::time::Instant>,
    /// Where the live stream starts; sent first as an `id:` so that even a browser that gets
    /// no message before reconnecting resumes from here.
    cursor: MessageId,
    started: bool,
    done: bool,
}

impl EventStream {
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            return Some((Ok(self.hello()), self));
        }
        let chunk = tokio::select! {
            biased;
            // Encoding only: hyper writes the chunk as fast as the socket drains.
            pulled = self.outbox.pull(&mut self.session, &mut self.out) => match pulled? {
                Ok(()) => self.out.take(),
                Err(reason) => {
                    self.done = true;
                    wire::goodbye(Wire::Sse, reason)?
                }
            },
            _ = self.keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
            _ = crate::transport::sleep_until(self.ends_at) => return None,
        };
        self.keep_alive.reset();
        Some((Ok(chunk), self))
    }

    /// The first block: the reconnect delay, the cursor as `id:`, and `event: joined`.
    fn hello(&self) -> Bytes {
        let room = self.session.rooms().first().map(|r| Arc::clone(r.name()));
        let joined = serde_json::json!({
            "type": "joined",
            "room": room.as_deref(),
            "nick": &**self.session.nick(),
            "cursor": self.cursor.to_string(),
            // Sent with this client's HTTP publishes (`X-Nick-Key`), it lets them use the nick
            // this stream holds, which nobody else may.
            "nick_key": self.session.nick_key(),
        });
        // Without `since`, the cursor is where this stream starts; with it, any replayed
        // message's own id follows and takes over.
        Bytes::from(format!(
            "retry: {RETRY_MS}\nid: {}\nevent: joined\ndata: {joined}\n\n",
            self.cursor
        ))
    }
}

/// A batch joined into one chunk, so hyper writes it at once. A batch of one event is its
/// shared block itself, not a copy.
#[derive(Debug, Default)]
struct SseOutput {
    one: Option<Bytes>,
    buf: BytesMut,
}

impl SseOutput {
    fn take(&mut self) -> Bytes {
        match self.one.take() {
            Some(one) => one,
            // A fresh buffer each time: a reused one would keep every chunk's allocation
            // alive for the connection's life.
            None => std::mem::take(&mut self.buf).freeze(),
        }
    }
}

impl Emit for SseOutput {
    fn emit(&mut self, unit: &Bytes, _: Option<MessageId>) {
        if self.buf.is_empty() && self.one.is_none() {
            self.one = Some(unit.clone());
            return;
        }
        if let Some(one) = self.one.take() {
            self.buf.extend_from_slice(&one);
        }
        self.buf.extend_from_slice(unit);
    }
}
