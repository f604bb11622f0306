//! The HTTP side of `serve` (axum): routes and their handlers.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::server::Shared;

/// All HTTP routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
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
