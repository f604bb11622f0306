//! Publishing over plain HTTP: `POST /rooms/{room}/messages` to a room and
//! `POST /users/{nick}/messages` to one user. Both take a `text/plain` body (nick in `X-Nick`
//! or `?nick=`) or JSON `{"text": …, "nick": …}`.
//!
//! Who is sending decides the name shown: a backend with an API key names anyone and has no
//! rate limit; a token publishes under its verified name; an anonymous sender gets its nick
//! only if nobody connected holds it (or one that looks the same), it is not reserved and no
//! verified user uses it, and is rate-limited per IP.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::openapi::{
    AuthRefusals, BodyRefusals, DirectReply, ErrorBody, PublishBody, PublishedReply, Refusals,
};
use super::{AppError, Path, Query};
use crate::auth::Principal;
use crate::event::Author;
use crate::hub::HubError;
use crate::protocol::names::{check_nick, check_room};
use crate::session::{Caller, NameRefused, Refused};
use crate::transport::context::Context;

/// Nick of anonymous HTTP publishers that give none.
const ANONYMOUS: &str = "anonymous";
/// Nick of API-key publishers that give none.
const BACKEND: &str = "api";

/// Query of a publish.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PublishQuery {
    /// The sender's nick, for a `text/plain` body (also `X-Nick`).
    #[param(min_length = 1, max_length = 32, pattern = r"^[\p{L}\p{N}_.\-]+$")]
    nick: Option<String>,
    /// A token, for clients that cannot set `Authorization`.
    token: Option<String>,
}

/// A message as an HTTP client posts it.
struct Posted {
    text: String,
    author: Author,
    headers: HeaderMap,
    principal: Principal,
}

/// Where a post goes.
#[derive(Clone, Copy)]
enum Target<'a> {
    Room(&'a str),
    User,
}

/// Checks credentials, the sender's right to post to `target` and the rate limit, before
/// reading anything more; then reads the body (bounded) and the sender's name (see the
/// module comment).
async fn read_posted(
    shared: &Context,
    addr: SocketAddr,
    query: PublishQuery,
    req: Request,
    target: Target<'_>,
) -> Result<Posted, AppError> {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let who = super::principal(shared, &headers, query.token.as_deref())?;
    let caller = Caller {
        hub: &shared.hub,
        principal: &who,
        addr: Some(addr),
    };
    match target {
        Target::Room(room) => caller
            .may_publish(room)
            .map_err(|e| AppError::refused(&who, e))?,
        Target::User => {
            if !shared.hub.auth().may_direct(&who) {
                return Err(AppError::unauthorized(
                    "direct messages need a token or an API key on this server",
                ));
            }
            caller.pace().map_err(|e| AppError::refused(&who, e))?;
        }
    }
    let limit = shared.config.ws_max_message;
    // One deadline for the whole body: at the default 64 KiB cap and 10 s, a body slower
    // than 6.4 KiB/s on average is refused instead of holding its connection.
    let timeout = shared.config.limits.http_body_timeout;
    let body = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| AppError::body_timeout(timeout))?
        .map_err(|_| AppError::too_large(limit))?;
    let PublishBody {
        text,
        nick,
        nick_key,
    } = parse_body(&headers, &body)?;
    let nick_key = nick_key.or_else(|| header_str(&headers, "x-nick-key"));
    let header_nick = match headers.get("x-nick") {
        // Header values are bytes; a nick in any script arrives as UTF-8.
        Some(v) => Some(
            String::from_utf8(v.as_bytes().to_vec())
                .map_err(|_| AppError::bad_request("X-Nick is not valid UTF-8"))?,
        ),
        None => None,
    };
    // Every name given is checked, including one another wins over.
    for given in [&nick, &header_nick, &query.nick].into_iter().flatten() {
        check_nick(given).map_err(AppError::bad_name)?;
    }
    let nick = nick.or(header_nick).or(query.nick);
    if text.trim().is_empty() {
        return Err(AppError::refused(&who, Refused::Empty));
    }
    let author = author(shared, &who, nick, nick_key.as_deref())?;
    Ok(Posted {
        text,
        author,
        headers,
        principal: who,
    })
}

/// The name a message is shown under (see the module comment).
fn author(
    shared: &Context,
    who: &Principal,
    nick: Option<String>,
    nick_key: Option<&str>,
) -> Result<Author, AppError> {
    crate::session::author(&shared.hub, who, nick, nick_key, (ANONYMOUS, BACKEND)).map_err(|e| {
        match e {
            NameRefused::NotYours(_) => AppError::forbidden(e.to_string()),
            NameRefused::Taken(_) => {
                AppError::new(StatusCode::CONFLICT, "nick_taken", e.to_string())
            }
        }
    })
}

/// `POST /rooms/{room}/messages`. An `Idempotency-Key` header makes retries safe; the answer
/// is `201` once the message is durable (`200` for a repeated key).
#[utoipa::path(
    post,
    path = "/rooms/{room}/messages",
    tag = "rooms",
    summary = "Publish a message",
    description = "The body is the text (`text/plain`; the nick in `X-Nick` or `?nick=`) or JSON. \
                   Answered once the message is durable.",
    params(
        super::openapi::RoomPath,
        PublishQuery,
        ("Idempotency-Key" = Option<String>, Header, max_length = 200, description = "A retry with the same key publishes nothing and answers 200 with the first id"),
        super::openapi::SenderHeaders,
    ),
    request_body(content(
        (super::openapi::MessageText = "text/plain"),
        (PublishBody = "application/json"),
    )),
    responses(
        (status = 201, description = "Published and stored", body = PublishedReply),
        (status = 200, description = "A repeated Idempotency-Key: nothing new published", body = PublishedReply),
        Refusals,
        AuthRefusals,
        BodyRefusals,
    )
)]
pub(crate) async fn publish(
    State(shared): State<Arc<Context>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    Query(query): Query<PublishQuery>,
    req: Request,
) -> Result<Response, AppError> {
    check_room(&room).map_err(AppError::bad_name)?;
    let posted = read_posted(&shared, addr, query, req, Target::Room(&room)).await?;
    let key = header_str(&posted.headers, "idempotency-key");
    let caller = Caller {
        hub: &shared.hub,
        principal: &posted.principal,
        addr: Some(addr),
    };
    let acked = caller
        .publish(&room, posted.author, &posted.text, key.as_deref(), None)
        .await
        .map_err(|e| AppError::refused(&posted.principal, e))?;
    let status = if acked.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = PublishedReply {
        id: acked.id.to_string(),
        room,
        duplicate: acked.duplicate,
    };
    Ok((status, Json(body)).into_response())
}

/// `POST /users/{nick}/messages`: a direct message to whoever holds `nick` on this node,
/// `201 {"to": nick}` once it is in their queue, `404` when nobody holds it.
#[utoipa::path(
    post,
    path = "/users/{nick}/messages",
    tag = "users",
    summary = "Send a direct message",
    description = "To whoever holds the nick on this node, on any transport. Not stored.",
    params(
        super::openapi::NickPath,
        PublishQuery,
        super::openapi::SenderHeaders,
    ),
    request_body(content(
        (super::openapi::MessageText = "text/plain"),
        (PublishBody = "application/json"),
    )),
    responses(
        (status = 201, description = "In the recipient's queue", body = DirectReply),
        (status = 404, description = "Nobody holds the nick", body = ErrorBody),
        Refusals,
        AuthRefusals,
        BodyRefusals,
    )
)]
pub(crate) async fn direct(
    State(shared): State<Arc<Context>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(to): Path<String>,
    Query(query): Query<PublishQuery>,
    req: Request,
) -> Result<Response, AppError> {
    check_nick(&to).map_err(AppError::bad_name)?;
    let posted = read_posted(&shared, addr, query, req, Target::User).await?;
    // An HTTP sender has no subscriber of its own.
    const NO_SUBSCRIBER: u64 = 0;
    match shared
        .hub
        .direct(posted.author, NO_SUBSCRIBER, &to, &posted.text)
    {
        Ok(()) => Ok((StatusCode::CREATED, Json(DirectReply { to })).into_response()),
        Err(e @ HubError::NoSuchUser(_)) => Err(AppError::new(
            StatusCode::NOT_FOUND,
            "no_such_user",
            e.to_string(),
        )),
        Err(e) => Err(AppError::bad_request(e)),
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<PublishBody, AppError> {
    let content_type = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or_default();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        serde_json::from_slice(body)
            .map_err(|e| AppError::bad_request(format!("invalid JSON body: {e}")))
    } else if mime.is_empty()
        || mime == "text/plain"
        // `curl --data 'hi'` labels its raw body as a form; take it as the text it is.
        || mime == "application/x-www-form-urlencoded"
    {
        let text = std::str::from_utf8(body)
            .map_err(|_| AppError::bad_request("the body is not valid UTF-8"))?;
        Ok(PublishBody {
            text: text.to_owned(),
            nick: None,
            nick_key: None,
        })
    } else {
        Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type {mime} is not supported: send text/plain or application/json"),
        ))
    }
}
