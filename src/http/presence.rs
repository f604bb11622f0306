//! Who is where, over plain HTTP: `GET /rooms` and `GET /rooms/{room}/presence`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::openapi::{AuthRefusals, MemberInfo, PresenceReply, Refusals, RoomInfo, RoomsPage};
use super::{AppError, Path, Query};
use crate::auth::Action;
use crate::protocol::names::check_room;
use crate::transport::context::Context;

/// A token in the query, for browsers.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TokenQuery {
    /// A token, for clients that cannot set `Authorization`.
    token: Option<String>,
}

/// `GET /rooms` query: a token, and the page.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RoomsQuery {
    /// A token, for clients that cannot set `Authorization`.
    token: Option<String>,
    /// Continue after this room (the previous page's `next`).
    after: Option<String>,
    /// Rooms per page [default: 100].
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Largest `GET /rooms` page.
const MAX_ROOMS_PAGE: usize = 1000;

/// `GET /rooms`: a page of the rooms the caller may see (presence or subscribe), in name
/// order, with member counts and latest ids; `next` names where the next page starts.
#[utoipa::path(
    get,
    path = "/rooms",
    tag = "rooms",
    summary = "List rooms, a page at a time",
    params(RoomsQuery),
    responses(
        (status = 200, description = "A page of rooms in name order", body = RoomsPage),
        Refusals,
        AuthRefusals,
    )
)]
pub(crate) async fn rooms(
    State(shared): State<Arc<Context>>,
    Query(query): Query<RoomsQuery>,
    headers: HeaderMap,
) -> Result<Json<RoomsPage>, AppError> {
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
        .map(|room| RoomInfo {
            name: room.name().to_string(),
            members: room.member_count(),
            last_id: room.latest().map(|id| id.to_string()),
        })
        .collect();
    Ok(Json(RoomsPage {
        rooms,
        next: next.as_deref().map(str::to_owned),
    }))
}

/// `GET /rooms/{room}/presence`: members across every transport.
#[utoipa::path(
    get,
    path = "/rooms/{room}/presence",
    tag = "rooms",
    summary = "Who is in a room",
    params(super::openapi::RoomPath, TokenQuery),
    responses(
        (status = 200, description = "Its members, on every transport and node", body = PresenceReply),
        Refusals,
        AuthRefusals,
    )
)]
pub(crate) async fn presence(
    State(shared): State<Arc<Context>>,
    Path(room): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Json<PresenceReply>, AppError> {
    check_room(&room).map_err(AppError::bad_name)?;
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
        .map(|m| MemberInfo {
            nick: m.nick.to_string(),
            transport: m.transport.as_str().to_owned(),
        })
        .collect();
    Ok(Json(PresenceReply { room, members }))
}
