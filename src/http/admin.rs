//! Management calls for backends holding an API key: list connections, remove a user (every
//! connection they hold), close a room (every member is disconnected). Each is answered 401
//! without a key and 403 with a token instead of a key.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{AppError, Path};
use crate::auth::Principal;
use crate::context::Context;
use crate::event::Disconnect;
use crate::hub::Subscriber;
use crate::protocol::names::{check_nick, check_room};

/// Optional body of a kick or close: why, for the log and the answer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Why {
    #[serde(default)]
    reason: Option<String>,
}

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

fn reason(body: Option<Json<Why>>) -> String {
    body.and_then(|Json(w)| w.reason)
        .map(|r| {
            r.chars()
                .filter(|c| !c.is_control())
                .take(MAX_REASON_CHARS)
                .collect()
        })
        .unwrap_or_default()
}

fn disconnect(subs: &[Arc<Subscriber>]) -> usize {
    for sub in subs {
        sub.kick(Disconnect::Kicked);
    }
    subs.len()
}

/// `GET /admin/connections`: every connection, with its nick, verified user, transport and
/// address.
pub(crate) async fn connections(
    State(shared): State<Arc<Context>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    operator(&shared, &headers)?;
    let mut list: Vec<_> = shared
        .hub
        .connections()
        .into_iter()
        .filter(|h| !h.sub.is_gone())
        .map(|h| {
            json!({
                "id": h.sub.id,
                "nick": &*h.nick,
                "user": h.user.as_deref(),
                "transport": h.sub.transport.as_str(),
                "addr": h.sub.addr.map(|a| a.to_string()),
            })
        })
        .collect();
    list.sort_by_key(|c| c["id"].as_u64());
    Ok(Json(json!({ "connections": list })))
}

/// `POST /admin/users/{nick}/kick`: disconnects every connection holding `nick`, each told
/// "removed by an operator" (WebSocket close 4003); 404 when nobody holds it.
pub(crate) async fn kick(
    State(shared): State<Arc<Context>>,
    Path(nick): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Why>>,
) -> Result<Json<serde_json::Value>, AppError> {
    operator(&shared, &headers)?;
    check_nick(&nick).map_err(AppError::bad_request)?;
    let reason = reason(body);
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
    Ok(Json(
        json!({"nick": nick, "kicked": kicked, "reason": reason}),
    ))
}

/// `POST /admin/rooms/{room}/close`: disconnects every member of `room` on this node.
pub(crate) async fn close_room(
    State(shared): State<Arc<Context>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Why>>,
) -> Result<Json<serde_json::Value>, AppError> {
    operator(&shared, &headers)?;
    check_room(&room).map_err(AppError::bad_request)?;
    let reason = reason(body);
    let members = shared
        .hub
        .existing_room(&room)
        .map(|r| r.subscribers())
        .unwrap_or_default();
    let disconnected = disconnect(&members);
    tracing::info!(%room, disconnected, %reason, "room closed by an operator");
    Ok(Json(
        json!({"room": room, "disconnected": disconnected, "reason": reason}),
    ))
}
