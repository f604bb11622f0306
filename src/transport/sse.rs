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
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::chat::DEFAULT_ROOM;
use super::limits::Permit;
use super::ws::claim_nick;
use crate::http::AppError;
use crate::hub::{Delivery, Disconnect, Hub, MessageId, Room, Subscriber, Transport};
use crate::protocol::names::{check_nick, check_room};
use crate::server::Shared;

/// A comment line every this often keeps proxies and load balancers from timing out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a browser waits before reconnecting, told once at the start.
const RETRY_MS: u64 = 2_000;

/// Query of `/events`.
#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    room: Option<String>,
    nick: Option<String>,
    since: Option<String>,
}

/// `GET /events`.
pub(crate) async fn events(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let room = query.room.unwrap_or_else(|| DEFAULT_ROOM.to_owned());
    check_room(&room).map_err(AppError::bad_request)?;
    if let Some(nick) = &query.nick {
        check_nick(nick).map_err(AppError::bad_request)?;
    }
    // A browser's reconnect carries Last-Event-ID, which is newer than a `since` in the URL.
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let since = MessageId::parse_opt(last_event_id.or(query.since.as_deref()))
        .map_err(AppError::bad_request)?;
    let permit = shared
        .limiter
        .try_acquire(addr.ip())
        .ok_or_else(AppError::server_full)?;

    let hub = Arc::clone(&shared.hub);
    let (sub, rx) = hub.subscribe(Transport::Sse, true, Some(addr));
    let nick = claim_nick(&hub, &sub, query.nick.as_deref());
    let (room, cursor) = hub.join_since(&room, &sub, Arc::clone(&nick), since);
    tracing::debug!(id = sub.id, %addr, %nick, room = %room.name(), ?since, "sse connected");

    let stream = EventStream {
        member: Member {
            hub,
            sub,
            room,
            nick,
            _permit: permit,
        },
        rx,
        batch: Vec::new(),
        shutdown: super::stop_signal(&shared),
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

/// Leaves the room when the response body is dropped (client gone, server stopping).
struct Member {
    hub: Arc<Hub>,
    sub: Arc<Subscriber>,
    room: Arc<Room>,
    nick: Arc<str>,
    _permit: Permit,
}

impl Drop for Member {
    fn drop(&mut self) {
        let reason = self.sub.kick_reason().map(Disconnect::as_str);
        self.hub.leave(&self.room, self.sub.id, reason);
        self.hub.release_nick(self.sub.id, &self.nick);
        tracing::debug!(id = self.sub.id, "sse closed");
    }
}

struct EventStream {
    member: Member,
    rx: mpsc::Receiver<Delivery>,
    batch: Vec<Delivery>,
    shutdown: CancellationToken,
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
            let joined = serde_json::json!({
                "type": "joined",
                "room": &**self.member.room.name(),
                "nick": &*self.member.nick,
                "cursor": self.cursor.to_string(),
            });
            // Without `since`, the cursor is where this stream starts; with it, any replayed
            // message's own id follows and takes over.
            let hello = format!(
                "retry: {RETRY_MS}\nid: {}\nevent: joined\ndata: {joined}\n\n",
                self.cursor
            );
            return Some((Ok(Bytes::from(hello)), self));
        }
        let sub = Arc::clone(&self.member.sub);
        let chunk = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => {
                self.done = true;
                close_event("server shutting down")
            }
            _ = sub.kicked() => {
                self.done = true;
                close_event(sub.kick_reason().unwrap_or(Disconnect::SlowConsumer).as_str())
            }
            n = self.rx.recv_many(&mut self.batch, 64) => {
                if n == 0 {
                    return None;
                }
                encode(&mut self.batch)
            }
            _ = self.keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
            _ = super::sleep_until(self.ends_at) => return None,
        };
        self.keep_alive.reset();
        Some((Ok(chunk), self))
    }
}

/// The last event before the server ends the stream.
fn close_event(reason: &str) -> Bytes {
    Bytes::from(format!(
        "event: close\ndata: {}\n\n",
        serde_json::json!({"type": "close", "reason": reason})
    ))
}

/// Joins a batch into one chunk, so hyper writes it at once.
fn encode(batch: &mut Vec<Delivery>) -> Bytes {
    if let [Delivery::Event(event)] = batch.as_slice() {
        let one = event.sse().clone();
        batch.clear();
        return one;
    }
    let mut out = BytesMut::new();
    for delivery in batch.drain(..) {
        match delivery {
            Delivery::Event(event) => out.extend_from_slice(event.sse()),
            Delivery::Direct(bytes) => out.extend_from_slice(&bytes),
            Delivery::Replay(replay) => {
                if let Some(gap) = replay.gap_json() {
                    out.extend_from_slice(b"event: gap\ndata: ");
                    out.extend_from_slice(&gap);
                    out.extend_from_slice(b"\n\n");
                }
                for event in &replay.events {
                    out.extend_from_slice(event.sse());
                }
            }
        }
    }
    out.freeze()
}
