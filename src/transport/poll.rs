//! Plain HTTP: publish (`POST /rooms/{room}/messages`), history pages and long-polling
//! (`GET /rooms/{room}/messages?since=&limit=&wait=`), room list and presence.
//!
//! A long-poll is not a member: it waits on the room's `Notify`, enabled before history is
//! checked so that a message published in between still wakes it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::json;

use crate::http::AppError;
use crate::hub::{MessageId, Page, Room};
use crate::protocol::names::{check_nick, check_room};
use crate::server::Shared;

/// Nick of HTTP publishers that give none.
const ANONYMOUS: &str = "anonymous";
/// Longest long-poll.
const MAX_WAIT_SECS: u64 = 60;
/// Largest history page.
const MAX_LIMIT: usize = 1_000;

/// JSON body of a publish.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    text: String,
    #[serde(default)]
    nick: Option<String>,
}

/// Query of a publish.
#[derive(Debug, Deserialize)]
pub(crate) struct PublishQuery {
    nick: Option<String>,
}

/// `POST /rooms/{room}/messages`: `text/plain` body (nick in `X-Nick` or `?nick=`) or JSON
/// `{"text": …, "nick": …}`. An `Idempotency-Key` header makes retries safe.
pub(crate) async fn publish(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    Query(query): Query<PublishQuery>,
    req: Request,
) -> Result<Response, AppError> {
    check_room(&room).map_err(AppError::bad_request)?;
    if let Err(wait) = shared.publish_rate.check(addr.ip()) {
        return Err(AppError::rate_limited(wait));
    }
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let limit = shared.config.ws_max_message;
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| AppError::too_large(limit))?;
    let (text, nick) = parse_body(&headers, &body)?;
    let nick = nick
        .or_else(|| header_str(&headers, "x-nick"))
        .or(query.nick)
        .unwrap_or_else(|| ANONYMOUS.to_owned());
    check_nick(&nick).map_err(AppError::bad_request)?;
    if text.trim().is_empty() {
        return Err(AppError::bad_request("the message text is empty"));
    }
    let key = header_str(&headers, "idempotency-key");
    if key.as_ref().is_some_and(|k| k.len() > 200) {
        return Err(AppError::bad_request(
            "Idempotency-Key longer than 200 bytes",
        ));
    }
    let room = shared.hub.room(&room);
    let published = shared
        .hub
        .publish(&room, None, nick.into(), &text, key.as_deref())
        .map_err(AppError::unavailable)?;
    // 201 only once the message is durable.
    let acked = published.durable().await.map_err(AppError::unavailable)?;
    let status = if acked.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = json!({
        "id": acked.id.to_string(),
        "room": &**room.name(),
        "duplicate": acked.duplicate,
    });
    Ok((status, Json(body)).into_response())
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<(String, Option<String>), AppError> {
    let content_type = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or_default();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        let parsed: PublishBody = serde_json::from_slice(body)
            .map_err(|e| AppError::bad_request(format!("invalid JSON body: {e}")))?;
        Ok((parsed.text, parsed.nick))
    } else if mime.is_empty()
        || mime == "text/plain"
        // `curl --data 'hi'` labels its raw body as a form; take it as the text it is.
        || mime == "application/x-www-form-urlencoded"
    {
        let text = std::str::from_utf8(body)
            .map_err(|_| AppError::bad_request("the body is not valid UTF-8"))?;
        Ok((text.to_owned(), None))
    } else {
        Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type {mime} is not supported: send text/plain or application/json"),
        ))
    }
}

/// Query of a history read.
#[derive(Debug, Deserialize)]
pub(crate) struct MessagesQuery {
    since: Option<String>,
    limit: Option<usize>,
    wait: Option<u64>,
    last: Option<usize>,
}

/// `GET /rooms/{room}/messages`: history after `since` (from the oldest kept without it), at
/// most `limit` (default 100); with `wait=S`, holds up to S seconds for the first new message;
/// `last=N` instead gives the newest N.
/// A room that does not exist is an empty room: rooms are created on first use.
pub(crate) async fn messages(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    Query(query): Query<MessagesQuery>,
) -> Result<Response, AppError> {
    check_room(&room).map_err(AppError::bad_request)?;
    let since = MessageId::parse_opt(query.since.as_deref()).map_err(AppError::bad_request)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    if let Some(last) = query.last {
        if query.since.is_some() || query.wait.is_some() {
            return Err(AppError::bad_request(
                "last cannot be combined with since or wait",
            ));
        }
        if !(1..=MAX_LIMIT).contains(&last) {
            return Err(AppError::bad_request(format!(
                "last must be 1 to {MAX_LIMIT}"
            )));
        }
        let found = shared.hub.room_to_read(&room);
        let page = found.as_ref().map_or_else(empty_page, |r| Page {
            events: r.last(last),
            gap: None,
            more: false,
            last_id: r.latest(),
        });
        return Ok(page_response(&room, None, &page, found.map(|r| r.cursor())));
    }
    let wait = Duration::from_secs(query.wait.unwrap_or(0));
    if wait.as_secs() > MAX_WAIT_SECS {
        return Err(AppError::bad_request(format!(
            "wait must be 0 to {MAX_WAIT_SECS} seconds"
        )));
    }
    // A long-poll creates the room so that it can wait on it.
    let found = if wait.is_zero() {
        shared.hub.room_to_read(&room)
    } else {
        Some(shared.hub.room(&room))
    };
    let page = match &found {
        Some(r) if !wait.is_zero() => long_poll(&shared, r, since, limit, wait).await,
        Some(r) => r.page(since, limit),
        None => empty_page(),
    };
    Ok(page_response(
        &room,
        since,
        &page,
        found.map(|r| r.cursor()),
    ))
}

fn empty_page() -> Page {
    Page {
        events: Vec::new(),
        gap: None,
        more: false,
        last_id: None,
    }
}

async fn long_poll(
    shared: &Shared,
    room: &Arc<Room>,
    since: Option<MessageId>,
    limit: usize,
    wait: Duration,
) -> Page {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let changed = room.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let page = room.page(since, limit);
        if !page.events.is_empty() || page.gap.is_some() || tokio::time::Instant::now() >= deadline
        {
            return page;
        }
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shared.shutdown.cancelled() => return page,
        }
    }
}

/// Builds the JSON answer from each event's cached envelope, without re-encoding them.
fn page_response(
    room: &str,
    since: Option<MessageId>,
    page: &Page,
    cursor: Option<MessageId>,
) -> Response {
    let mut out = BytesMut::with_capacity(
        64 + page
            .events
            .iter()
            .map(|e| e.json().len() + 1)
            .sum::<usize>(),
    );
    out.put_slice(b"{\"room\":");
    out.put_slice(json!(room).to_string().as_bytes());
    out.put_slice(b",\"messages\":[");
    for (i, event) in page.events.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(event.json());
    }
    // Where to continue from: after the last message returned, else where the client was
    // (unless that cursor could not be placed), else the room's latest.
    let next = page
        .events
        .last()
        .and_then(|e| e.id)
        .or(if page.gap.is_none() { since } else { None })
        .or(page.last_id);
    let tail = json!({
        "next": next.map(|id| id.to_string()),
        "cursor": cursor.map(|id| id.to_string()),
        "last_id": page.last_id.map(|id| id.to_string()),
        "gap": page.gap.map(|g| g.as_str()),
        "more": page.more,
    });
    let tail = tail.to_string();
    out.put_slice(b"],");
    out.put_slice(&tail.as_bytes()[1..]);
    ([(header::CONTENT_TYPE, "application/json")], out.freeze()).into_response()
}

/// `GET /rooms`: every room with its member count and latest id.
pub(crate) async fn rooms(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let rooms: Vec<_> = shared
        .hub
        .rooms()
        .into_iter()
        .map(|(name, members)| {
            let last_id = shared
                .hub
                .existing_room(&name)
                .and_then(|r| r.latest())
                .map(|id| id.to_string());
            json!({"name": &*name, "members": members, "last_id": last_id})
        })
        .collect();
    Json(json!({ "rooms": rooms }))
}

/// `GET /rooms/{room}/presence`: members across every transport.
pub(crate) async fn presence(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    check_room(&room).map_err(AppError::bad_request)?;
    let members: Vec<_> = shared
        .hub
        .members(&room)
        .await
        .map_err(|e| {
            AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("cannot list members: {e}"),
            )
        })?
        .into_iter()
        .map(|m| json!({"nick": &*m.nick, "transport": m.transport.as_str()}))
        .collect();
    Ok(Json(json!({"room": room, "members": members})))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::long_poll;
    use crate::config::Config;
    use crate::hub::{Hub, HubConfig};
    use crate::server::Shared;
    use crate::store::{self, Retention};
    use crate::transport::limits::{Limiter, RateLimiter};

    fn shared() -> Shared {
        Shared {
            hub: Hub::new(HubConfig {
                queue_capacity: 16,
                history: store::memory(Retention::default()),
                cluster: None,
            }),
            config: Config::default(),
            limiter: Limiter::new(10, 10),
            publish_rate: RateLimiter::new(0.0, 1.0),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn long_poll_answers_empty_exactly_when_the_wait_is_over() {
        let shared = shared();
        let room = shared.hub.room("r");
        let started = Instant::now();
        let page = long_poll(&shared, &room, None, 10, Duration::from_secs(30)).await;
        assert!(page.events.is_empty());
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn long_poll_answers_at_the_moment_of_the_publish() {
        let shared = Arc::new(shared());
        let room = shared.hub.room("r");
        let started = Instant::now();
        let waiting = {
            let (shared, room) = (Arc::clone(&shared), Arc::clone(&room));
            tokio::spawn(async move {
                long_poll(&shared, &room, None, 10, Duration::from_secs(30)).await
            })
        };
        tokio::time::sleep(Duration::from_secs(7)).await;
        shared
            .hub
            .publish(&room, None, "p".into(), "now", None)
            .expect("memory store accepts");
        let page = waiting.await.expect("long-poll task");
        assert_eq!(page.events.len(), 1);
        assert_eq!(&*page.events[0].text, "now");
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn long_poll_returns_at_once_when_history_already_has_news() {
        let shared = shared();
        let room = shared.hub.room("r");
        shared
            .hub
            .publish(&room, None, "p".into(), "old", None)
            .expect("memory store accepts");
        let started = Instant::now();
        let page = long_poll(&shared, &room, None, 10, Duration::from_secs(30)).await;
        assert_eq!(page.events.len(), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
