//! Management calls for backends holding an API key: list connections, remove a user (every
//! connection they hold), close a room (every member is disconnected). Each is answered 401
//! without a key and 403 with a token instead of a key.

use std::sync::Arc;

use super::openapi::{
    AuthRefusals, Closed, ConnectionInfo, Connections, ErrorBody, Kicked, Refusals, Why,
};
use super::{AppError, Path};
use crate::auth::Principal;
use crate::event::Disconnect;
use crate::hub::Subscriber;
use crate::metrics::{METRICS, Snapshot};
use crate::protocol::names::{check_nick, check_room};
use crate::transport::context::Context;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};

/// Longest reason kept, in characters.
const MAX_REASON_CHARS: usize = 200;

fn operator(shared: &Context, headers: &HeaderMap) -> Result<(), AppError> {
    match super::principal(shared, headers, None)? {
        Principal::Backend => Ok(()),
        Principal::Anonymous => Err(AppError::unauthorized(
            "management calls need an API key (X-API-Key)",
        )),
        Principal::User(_) => Err(AppError::forbidden(
            "management calls need an API key, not a user token",
        )),
    }
}

/// The reason in an optional JSON body (`{"reason": …}`, `null` or nothing), cleaned of
/// control characters and cut to `MAX_REASON_CHARS`; a body that is not that is a 400.
fn reason(body: Result<Bytes, BytesRejection>) -> Result<String, AppError> {
    let body = body.map_err(|e| AppError::bad_request(format!("body: {}", e.body_text())))?;
    let expected = |e: &dyn std::fmt::Display| {
        AppError::bad_request(format!("body: expected {{\"reason\": \"…\"}}: {e}"))
    };
    let why: Option<Why> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        // Through a `Value`, because serde reads a struct from an array too (`[]`, `["x"]`).
        match serde_json::from_slice(&body).map_err(|e| expected(&e))? {
            serde_json::Value::Null => None,
            object @ serde_json::Value::Object(_) => {
                Some(serde_json::from_value(object).map_err(|e| expected(&e))?)
            }
            other => return Err(expected(&format_args!("got {}", json_kind(&other)))),
        }
    };
    Ok(why
        .and_then(|w| w.reason)
        .map(|r| {
            r.chars()
                .filter(|c| !c.is_control())
                .take(MAX_REASON_CHARS)
                .collect()
        })
        .unwrap_or_default())
}

/// A JSON value's kind, for an error message.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn disconnect(subs: &[Arc<Subscriber>]) -> usize {
    for sub in subs {
        sub.kick(Disconnect::Kicked);
    }
    subs.len()
}

/// `GET /admin/connections`: every connection, with its nick, verified user, transport and
/// address.
#[utoipa::path(
    get,
    path = "/admin/connections",
    tag = "admin",
    summary = "List every connection",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Every connection, by id", body = Connections),
        Refusals,
        AuthRefusals,
    )
)]
pub(crate) async fn connections(
    State(shared): State<Arc<Context>>,
    headers: HeaderMap,
) -> Result<Json<Connections>, AppError> {
    operator(&shared, &headers)?;
    let mut list: Vec<_> = shared
        .hub
        .connections()
        .into_iter()
        .filter(|h| !h.sub.is_gone())
        .map(|h| ConnectionInfo {
            id: h.sub.id,
            nick: h.nick.to_string(),
            user: h.user.as_deref().map(str::to_owned),
            transport: h.sub.transport.as_str().to_owned(),
            addr: h.sub.addr.map(|a| a.to_string()),
        })
        .collect();
    list.sort_by_key(|c| c.id);
    Ok(Json(Connections { connections: list }))
}

/// `POST /admin/users/{nick}/kick`: disconnects every connection holding `nick`, each told
/// "removed by an operator" (WebSocket close 4003); 404 when nobody holds it.
#[utoipa::path(
    post,
    path = "/admin/users/{nick}/kick",
    tag = "admin",
    summary = "Disconnect every connection holding a nick",
    security(("api_key" = [])),
    params(super::openapi::NickPath),
    request_body(content = Option<Why>, content_type = "application/json"),
    responses(
        (status = 200, description = "Removed", body = Kicked),
        (status = 404, description = "Nobody holds the nick", body = ErrorBody),
        Refusals,
        AuthRefusals,
    )
)]
pub(crate) async fn kick(
    State(shared): State<Arc<Context>>,
    Path(nick): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Kicked>, AppError> {
    operator(&shared, &headers)?;
    check_nick(&nick).map_err(AppError::bad_name)?;
    let reason = reason(body)?;
    let holders = shared.hub.holders(&nick);
    if holders.is_empty() {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "no_such_user",
            format!("nobody connected holds {nick}"),
        ));
    }
    let kicked = disconnect(&holders);
    tracing::info!(%nick, kicked, %reason, "user removed by an operator");
    Ok(Json(Kicked {
        nick,
        kicked,
        reason,
    }))
}

/// `POST /admin/rooms/{room}/close`: disconnects every member of `room` on this node.
#[utoipa::path(
    post,
    path = "/admin/rooms/{room}/close",
    tag = "admin",
    summary = "Disconnect every member of a room on this node",
    security(("api_key" = [])),
    params(super::openapi::RoomPath),
    request_body(content = Option<Why>, content_type = "application/json"),
    responses(
        (status = 200, description = "Closed", body = Closed),
        Refusals,
        AuthRefusals,
    )
)]
pub(crate) async fn close_room(
    State(shared): State<Arc<Context>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Closed>, AppError> {
    operator(&shared, &headers)?;
    check_room(&room).map_err(AppError::bad_name)?;
    let reason = reason(body)?;
    let members = shared
        .hub
        .existing_room(&room)
        .map(|r| r.subscribers())
        .unwrap_or_default();
    let disconnected = disconnect(&members);
    tracing::info!(%room, disconnected, %reason, "room closed by an operator");
    Ok(Json(Closed {
        room,
        disconnected,
        reason,
    }))
}

/// How often the dashboard's stream sends its figures.
const STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /admin/stats`: the dashboard's figures as Server-Sent Events, one `stats` event a
/// second: connections by transport, messages in and deliveries out per second, slow
/// consumers cut, delivery latency p50/p99 over the last second, rooms, queued events, the
/// store's refusals, Redis, and queued webhooks. It ends at shutdown.
#[utoipa::path(
    get,
    path = "/admin/stats",
    tag = "admin",
    summary = "Live server figures, a Server-Sent Event a second",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "`event: stats` with a JSON object, every second", content_type = "text/event-stream", body = String),
        Refusals,
        AuthRefusals,
    )
)]
pub(crate) async fn stats(
    State(shared): State<Arc<Context>>,
    headers: HeaderMap,
) -> Result<axum::response::Response, AppError> {
    use axum::response::IntoResponse as _;
    operator(&shared, &headers)?;
    let mut tick = tokio::time::interval(STATS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (shared, tick, None::<(std::time::Instant, Snapshot)>);
    let stream = futures_util::stream::unfold(state, |(shared, mut tick, before)| async move {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return None,
            _ = tick.tick() => {}
        }
        let now = (std::time::Instant::now(), METRICS.snapshot());
        let json = stats_json(&shared, &now, before.as_ref());
        let block = Bytes::from(format!("event: stats\ndata: {json}\n\n"));
        Some((
            Ok::<_, std::convert::Infallible>(block),
            (shared, tick, Some(now)),
        ))
    });
    let mut res = axum::body::Body::from_stream(stream).into_response();
    let h = res.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    Ok(res)
}

/// One `stats` event: totals now, and rates over the time since `before`.
fn stats_json(
    shared: &Context,
    (at, now): &(std::time::Instant, Snapshot),
    before: Option<&(std::time::Instant, Snapshot)>,
) -> String {
    let hub = shared.hub.stats();
    let connections: serde_json::Map<String, serde_json::Value> = now
        .connections
        .iter()
        .map(|(t, n)| ((*t).to_owned(), (*n).into()))
        .collect();
    let rate = |f: fn(&Snapshot) -> u64| {
        before.map(|(then, old)| {
            let secs = at.duration_since(*then).as_secs_f64().max(0.001);
            ((f(now).saturating_sub(f(old))) as f64 / secs * 10.0).round() / 10.0
        })
    };
    let store = match shared.config.store {
        crate::config::StoreKind::Sqlite => "sqlite",
        crate::config::StoreKind::Memory => "memory",
        crate::config::StoreKind::Redis => "redis",
    };
    serde_json::json!({
        "time": crate::event::now_ms(),
        "connections": connections,
        "connections_total": shared.limiter.open(),
        "messages_in_per_sec": rate(|s| s.published),
        "deliveries_per_sec": rate(|s| s.deliveries),
        "slow_consumers_per_sec": rate(|s| s.slow_consumers),
        "slow_consumers_total": now.slow_consumers,
        "latency_p50_ms": before.and_then(|(_, old)| now.latency_ms(old, 0.50)),
        "latency_p99_ms": before.and_then(|(_, old)| now.latency_ms(old, 0.99)),
        "rooms": hub.rooms,
        "queued_events": hub.queued,
        "store": store,
        "store_refusals_total": now.storage_refusals,
        "redis": shared.hub.broker().map(|b| if b.is_up() { "up" } else { "down" }),
        // Every figure here is this node's: a cluster has one dashboard per node.
        "node": shared.hub.broker().map(|b| b.node()),
        "webhooks_queued": now.webhooks_queued,
    })
    .to_string()
}
