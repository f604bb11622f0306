//! The HTTP side of `serve` (axum): the router, the page, health and metrics. Handlers live
//! by resource: `publish` (rooms and users), `history` (pages, long-polls), `presence`; the
//! WebSocket and SSE endpoints are transports (`crate::transport::{ws, sse}`).

mod error;
mod events;
mod history;
mod presence;
mod publish;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::context::Context;
use crate::transport;

pub(crate) use error::AppError;

use crate::auth::{self, Action, Principal};

/// Who an HTTP client is: an API key, a token (header or `?token=`), or anonymous. A key or
/// token that does not check out is a 401, never a silent downgrade to anonymous.
pub(crate) fn principal(
    shared: &Context,
    headers: &axum::http::HeaderMap,
    query_token: Option<&str>,
) -> Result<Principal, AppError> {
    let (token, api_key) = auth::presented(headers, query_token);
    shared
        .hub
        .auth()
        .principal(token, api_key)
        .map_err(|e| AppError::unauthorized(format!("credentials refused: {e}")))
}

/// `principal`, then a check that it may do `action` in `room`.
pub(crate) fn allowed(
    shared: &Context,
    headers: &axum::http::HeaderMap,
    query_token: Option<&str>,
    room: &str,
    action: Action,
) -> Result<Principal, AppError> {
    let who = principal(shared, headers, query_token)?;
    if shared.hub.auth().allows(&who, room, action) {
        Ok(who)
    } else {
        Err(AppError::not_allowed(&who, room, action))
    }
}

/// The chat page, embedded so the binary needs no files beside it.
const INDEX_HTML: &str = include_str!("../../web/index.html");

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
}

/// All HTTP routes.
pub(crate) fn router(shared: Arc<Context>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ws", get(transport::ws::chat))
        .route("/echo", get(transport::ws::echo))
        .route("/events", get(events::events))
        .route("/rooms", get(presence::rooms))
        .route(
            "/rooms/{room}/messages",
            get(history::messages).post(publish::publish),
        )
        .route("/rooms/{room}/presence", get(presence::presence))
        .route("/users/{nick}/messages", post(publish::direct))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(shared)
}

/// Health: `200 ok` while the server accepts work, with what it is holding. In a cluster,
/// `503 degraded` while this node cannot receive the Redis bus (it still serves its clients,
/// but cannot publish or hear other nodes), so a load balancer can steer new clients away.
async fn healthz(State(shared): State<Arc<Context>>) -> impl IntoResponse {
    let redis = shared.hub.broker().map(|b| b.is_up());
    let status = match redis {
        Some(false) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    let mut body = json!({
        "status": if status == StatusCode::OK { "ok" } else { "degraded" },
        "connections": shared.limiter.open(),
        "rooms": shared.hub.rooms().len(),
    });
    if let Some(up) = redis {
        body["redis"] = json!(if up { "up" } else { "down" });
    }
    (status, Json(body))
}

/// Prometheus exposition of `crate::metrics`.
async fn metrics(State(shared): State<Arc<Context>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::METRICS.render(shared.hub.stats()),
    )
}

async fn not_found() -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint (see docs/PROTOCOL.md)",
    )
}
