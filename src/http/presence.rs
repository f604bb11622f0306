//! Who is where, over plain HTTP: `GET /rooms` and `GET /rooms/{room}/presence`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;

use super::openapi::{AuthRefusals, MemberInfo, PresenceReply, Refusals, RoomInfo, RoomsPage};
use super::{AppError, Path, Query};
use crate::protocol::names::check_room;
use crate::session::{Caller, DEFAULT_PAGE, MAX_PAGE};
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
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::bad_request(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let caller = Caller {
        hub: &shared.hub,
        principal: &who,
        addr: None,
    };
    let (page, next) = caller.rooms(query.after.as_deref(), limit);
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
    let who = super::principal(&shared, &headers, query.token.as_deref())?;
    let caller = Caller {
        hub: &shared.hub,
        principal: &who,
        addr: None,
    };
    let members: Vec<_> = caller
        .members(&room)
        .await
        .map_err(|e| AppError::refused(&who, e))?
        .into_iter()
        .map(|m| MemberInfo {
            nick: m.nick.to_string(),
            transport: m.transport.as_str().to_owned(),
        })
        .collect();
    Ok(Json(PresenceReply { room, members }))
}
