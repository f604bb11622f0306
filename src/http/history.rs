//! History over plain HTTP: pages and long-polls (`GET /rooms/{room}/messages?since=&limit=&wait=`).
//!
//! A long-poll is not a member: it waits on the room's `Notify`, enabled before history is
//! checked so that a message published in between still wakes it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde_json::json;

use super::{AppError, Path, Query};
use crate::auth::Action;
use crate::hub::{MessageId, Page, Room};
use crate::protocol::names::check_room;
use crate::session::{Caller, Read};
use crate::transport::context::Context;
use crate::wire::{self, Wire};

/// Longest long-poll.
const MAX_WAIT_SECS: u64 = 60;
use crate::session::MAX_PAGE as MAX_LIMIT;

/// Query of a history read.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct MessagesQuery {
    /// Messages after this id (`EPOCH-SEQ`); from the oldest kept without it.
    #[param(pattern = "^[0-9a-fA-F]{1,8}-[0-9]{1,19}$")]
    pub(crate) since: Option<String>,
    /// At most this many [default: 100].
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// With nothing newer, hold the request up to this many seconds (a long-poll).
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u64>,
    /// Instead: the newest N, oldest first (with `since`: the newest N after it; not with a
    /// `wait`).
    #[param(minimum = 1, maximum = 1000)]
    last: Option<usize>,
    /// A token, for clients that cannot set `Authorization`.
    token: Option<String>,
}

/// `GET /rooms/{room}/messages`: history after `since` (from the oldest kept without it), at
/// most `limit` (default 100); with `wait=S`, holds up to S seconds for the first new message;
/// `last=N` instead gives the newest N.
/// A room that does not exist is an empty room: rooms are created on first use.
#[utoipa::path(
    get,
    path = "/rooms/{room}/messages",
    tag = "rooms",
    summary = "Read history, or long-poll for new messages",
    params(
        super::openapi::RoomPath,
        MessagesQuery,
    ),
    responses(
        (status = 200, description = "A page, oldest first; continue with since=next", body = super::openapi::HistoryPage),
        super::openapi::Refusals,
        super::openapi::AuthRefusals,
    )
)]
pub(crate) async fn messages(
    State(shared): State<Arc<Context>>,
    axum::extract::ConnectInfo(addr): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Path(room): Path<String>,
    Query(query): Query<MessagesQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    check_room(&room).map_err(AppError::bad_name)?;
    // Reading history needs `history`; a long-poll is a way of subscribing, so `subscribe`
    // is enough for it.
    let who = super::principal(&shared, &headers, query.token.as_deref())?;
    let may = shared.hub.auth().actions(&who, &room);
    let polling = query.wait.is_some_and(|w| w > 0);
    if !(may.allows(Action::History) || polling && may.allows(Action::Subscribe)) {
        return Err(AppError::not_allowed(&who, &room, Action::History));
    }
    let since = MessageId::parse_opt(query.since.as_deref()).map_err(AppError::bad_request)?;
    let limit = query.limit.unwrap_or(crate::session::DEFAULT_PAGE);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    if let Some(last) = query.last {
        if query.wait.is_some_and(|w| w > 0) {
            return Err(AppError::bad_request("last cannot be combined with wait"));
        }
        let reader = crate::hub::pace::Who::of(&who, Some(addr));
        return newest(&shared, &room, reader.as_ref(), last, since);
    }
    let wait = Duration::from_secs(query.wait.unwrap_or(0));
    if wait.as_secs() > MAX_WAIT_SECS {
        return Err(AppError::bad_request(format!(
            "wait must be 0 to {MAX_WAIT_SECS} seconds"
        )));
    }
    if wait.is_zero() {
        let caller = Caller {
            hub: &shared.hub,
            principal: &who,
            addr: Some(addr),
        };
        let Read { page, room: found } = caller
            .read(&room, since, limit)
            .map_err(|e| AppError::refused(&who, e))?;
        return Ok(page_response(
            &room,
            since,
            &page,
            found.map(|r| r.cursor()),
        ));
    }
    // A long-poll creates the room so that it can wait on it.
    let reader = crate::hub::pace::Who::of(&who, Some(addr));
    let found = shared
        .hub
        .open_room(&room, reader.as_ref())
        .map_err(AppError::room)?;
    let page = long_poll(&shared, &found, since, limit, wait)
        .await
        .within(shared.config.limits.reply_bytes);
    Ok(page_response(&room, since, &page, Some(found.cursor())))
}

/// `?last=N`: the newest N (after `since`, when given), oldest first.
fn newest(
    shared: &Context,
    room: &str,
    reader: Option<&crate::hub::pace::Who>,
    last: usize,
    since: Option<MessageId>,
) -> Result<Response, AppError> {
    if !(1..=MAX_LIMIT).contains(&last) {
        return Err(AppError::bad_request(format!(
            "last must be 1 to {MAX_LIMIT}"
        )));
    }
    let found = shared
        .hub
        .room_to_read(room, reader)
        .map_err(AppError::room)?;
    let mut page = found.as_ref().map_or_else(Page::empty, |r| {
        newest_page(r, last, shared.config.limits.reply_bytes)
    });
    // With `since` too: the newest `last` of those after it.
    if let Some(since) = since {
        page.events.retain(|e| {
            e.id.is_some_and(|id| id.epoch != since.epoch || id.seq > since.seq)
        });
    }
    Ok(page_response(room, None, &page, found.map(|r| r.cursor())))
}

/// The newest `last` messages that fit in `budget` bytes; `more` when some were left out.
fn newest_page(room: &Room, last: usize, budget: usize) -> Page {
    let mut events = room.last(last);
    let (_, more) = crate::hub::keep_newest(&mut events, budget);
    Page {
        events,
        gap: None,
        more,
        last_id: room.latest(),
    }
}

async fn long_poll(
    shared: &Context,
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
            .map(|e| wire::event(Wire::Json, e).len() + 1)
            .sum::<usize>(),
    );
    out.put_slice(b"{\"room\":");
    out.put_slice(json!(room).to_string().as_bytes());
    out.put_slice(b",\"messages\":[");
    for (i, event) in page.events.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(wire::event(Wire::Json, event));
    }
    let next = page.next(since);
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
    use crate::store::{self, Retention};
    use crate::transport::context::Context;
    use crate::transport::limits::Limiter;

    fn shared() -> Context {
        Context {
            hub: Hub::new(HubConfig {
                queue_capacity: 16,
                history: store::memory(Retention::default()),
                cluster: None,
                auth: crate::auth::Auth::open(),
                ..HubConfig::default()
            }),
            config: Config::default(),
            limiter: Limiter::new(10, 10),
            http_limiter: Limiter::new(10, 10),
            sockets: Limiter::new(10, 10),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            mqtt: crate::transport::mqtt::Mqtt::new(store::Keep::memory()),
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
