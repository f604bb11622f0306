//! The HTTP side of `serve` (axum): routes and their handlers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
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
        .route("/healthz", get(healthz))
        .with_state(shared)
}

/// Liveness: answers while the server accepts work, with what it is holding.
async fn healthz(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "connections": shared.limiter.open(),
        "rooms": shared.hub.rooms().len(),
    }))
}
