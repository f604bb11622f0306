//! Who is where, over plain HTTP: `GET /rooms` and `GET /rooms/{room}/presence`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;

use super::AppError;
use crate::context::Context;
use crate::protocol::names::check_room;

/// `GET /rooms`: every room with its member count and latest id.
pub(crate) async fn rooms(State(shared): State<Arc<Context>>) -> Json<serde_json::Value> {
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
    State(shared): State<Arc<Context>>,
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
