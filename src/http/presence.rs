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

/// `GET /rooms` query: a token, and the page.
#[derive(Debug, Deserialize)]
pub(crate) struct RoomsQuery {
    token: Option<String>,
    /// Continue after this room (the previous page's `next`).
    after: Option<String>,
    /// Rooms per page, 1 to `MAX_ROOMS_PAGE` [default: 100].
    limit: Option<usize>,
}

/// Largest `GET /rooms` page.
const MAX_ROOMS_PAGE: usize = 1000;

/// `GET /rooms`: a page of the rooms the caller may see (presence or subscribe), in name
/// order, with member counts and latest ids; `next` names where the next page starts.
pub(crate) async fn rooms(
    State(shared): State<Arc<Context>>,
    Query(query): Query<RoomsQuery>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    let who = super::principal(&shared, &headers, query.token.as_deref())?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_ROOMS_PAGE).contains(&limit) {
        return Err(AppError::bad_request(format!(
            "limit must be 1 to {MAX_ROOMS_PAGE}"
        )));
    }
    let auth = shared.hub.auth();
    let (page, next) = shared
        .hub
        .rooms_page(query.after.as_deref(), limit, |name| {
            let may = auth.actions(&who, name);
            may.allows(Action::Presence) || may.allows(Action::Subscribe)
        });
    let rooms: Vec<_> = page
        .iter()
        .map(|room| {
            json!({
                "name": &**room.name(),
                "members": room.member_count(),
                "last_id": room.latest().map(|id| id.to_string()),
            })
        })
        .collect();
    Ok(Json(json!({ "rooms": rooms, "next": next.as_deref() })))
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
