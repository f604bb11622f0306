//! The HTTP side of `serve` (axum): routes and their handlers.

use std::sync::Arc;

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::server::Shared;
use crate::transport;

/// The chat page, embedded so the binary needs no files beside it.
const INDEX_HTML: &str = include_str!("../web/index.html");

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
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ws", get(transport::ws::chat))
        .route("/echo", get(transport::ws::echo))
        .route("/events", get(transport::sse::events))
        .route("/rooms", get(transport::poll::rooms))
        .route(
            "/rooms/{room}/messages",
            get(transport::poll::messages).post(transport::poll::publish),
        )
        .route("/rooms/{room}/presence", get(transport::poll::presence))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(shared)
}

/// Health: `200 ok` while the server accepts work, with what it is holding. In a cluster,
/// `503 degraded` while this node cannot receive the Redis bus (it still serves its clients,
/// but cannot publish or hear other nodes), so a load balancer can steer new clients away.
async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let redis = shared.hub.cluster().map(|c| c.is_up());
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
async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::METRICS.render(&shared.hub),
    )
}

async fn not_found() -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint (see docs/PROTOCOL.md)",
    )
}

/// An HTTP error answered as JSON: `{"error": message, "code": code}`.
#[derive(Debug)]
pub(crate) struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl AppError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 with what is wrong.
    pub(crate) fn bad_request(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message.to_string())
    }

    /// 413 for a body over the limit.
    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body larger than {limit} bytes"),
        )
    }

    /// 429 with `Retry-After`.
    pub(crate) fn rate_limited(wait: Duration) -> Self {
        crate::metrics::METRICS.refuse("rate_limited");
        Self {
            retry_after: Some(wait),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many messages; slow down",
            )
        }
    }

    /// 503 when a message cannot be stored.
    pub(crate) fn unavailable(error: crate::store::StoreError) -> Self {
        crate::metrics::METRICS.refuse("storage");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("message not stored: {error}"),
        )
    }

    /// 503 when the connection limits are reached.
    pub(crate) fn server_full() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_full",
            "server full",
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        tracing::debug!(status = %self.status, code = self.code, message = %self.message, "http error");
        let body = Json(serde_json::json!({"error": self.message, "code": self.code}));
        let mut res = (self.status, body).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}
