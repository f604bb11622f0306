//! Management calls for backends holding an API key: list connections, remove a user (every
//! connection they hold), close a room (every member is disconnected). Each is answered 401
//! without a key and 403 with a token instead of a key.

use std::sync::Arc;

use super::openapi::{
    AuthRefusals, Closed, ConnectionInfo, Connections, ErrorBody, Kicked, Refusals, Why,
};
use super::{AppError, Path};
use crate::auth::Principal;
use crate::context::Context;
use crate::event::Disconnect;
use crate::hub::Subscriber;
use crate::protocol::names::{check_nick, check_room};
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
    let why: Option<Why> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            AppError::bad_request(format!("body: expected {{\"reason\": \"…\"}}: {e}"))
        })?
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
    params(("nick" = String, Path, min_length = 1, max_length = 32, pattern = r"^[\p{L}\p{N}_.\-]+$")),
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
    check_nick(&nick).map_err(AppError::bad_request)?;
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
    params(("room" = String, Path, min_length = 1, max_length = 64, pattern = r"^(?!\.\.?(/|$))[\p{L}\p{N}_.\-]+(/(?!\.\.?(/|$))[\p{L}\p{N}_.\-]+)*$")),
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
    check_room(&room).map_err(AppError::bad_request)?;
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
