//! Who is where, over plain HTTP: `GET /rooms` and `GET /rooms/{room}/presence`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{AppError, Path, Query};
use crate::auth::Action;
use crate::context::Context;
use crate::protocol::names::check_room;

/// A token in the query, for browsers.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

/// `GET /rooms`: every room the caller may see (presence or subscribe) with its member count
/// and latest id.
pub(crate) async fn rooms(
    State(shared): State<Arc<Context>>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    let who = super::principal(&shared, &headers, query.token.as_deref())?;
    let auth = shared.hub.auth();
    let rooms: Vec<_> = shared
        .hub
        .rooms()
        .into_iter()
        .filter(|(name, _)| {
            let may = auth.actions(&who, name);
            may.allows(Action::Presence) || may.allows(Action::Subscribe)
        })
        .map(|(name, members)| {
            let last_id = shared
                .hub
                .existing_room(&name)
                .and_then(|r| r.latest())
                .map(|id| id.to_string());
            json!({"name": &*name, "members": members, "last_id": last_id})
        })
        .collect();
    Ok(Json(json!({ "rooms": rooms })))
}

/// `GET /rooms/{room}/presence`: members across every transport.
pub(crate) async fn presence(
    State(shared): State<Arc<Context>>,
    Path(room): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    check_room(&room).map_err(AppError::bad_request)?;
    super::allowed(
        &shared,
        &headers,
        query.token.as_deref(),
        &room,
        Action::Presence,
    )?;
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
