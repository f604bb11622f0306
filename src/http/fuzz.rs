//! The HTTP side of `crate::fuzz`: query strings as each endpoint parses them.

use axum::extract::Query;
use axum::http::Uri;

use super::AppError;
use crate::hub::MessageId;
use crate::protocol::names::{check_nick, check_room};

/// Parses `data` as the query of every endpoint; a rejection must become the JSON error.
pub(crate) fn fuzz_query(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/?{query}").parse::<Uri>() else {
        return;
    };
    let since = |s: &Option<String>| {
        let _ = MessageId::parse_opt(s.as_deref());
    };
    let names = |room: &Option<String>, nick: &Option<String>| {
        if let Some(room) = room {
            let _ = check_room(room);
        }
        if let Some(nick) = nick {
            let _ = check_nick(nick);
        }
    };
    match Query::<super::history::MessagesQuery>::try_from_uri(&uri) {
        Ok(Query(q)) => since(&q.since),
        Err(e) => drop(AppError::from(e)),
    }
    match Query::<super::events::EventsQuery>::try_from_uri(&uri) {
        Ok(Query(q)) => {
            since(&q.since);
            names(&q.room, &q.nick);
        }
        Err(e) => drop(AppError::from(e)),
    }
    match Query::<crate::transport::ws::ChatQuery>::try_from_uri(&uri) {
        Ok(Query(q)) => {
            since(&q.since);
            names(&q.room, &q.nick);
        }
        Err(e) => drop(AppError::from(e)),
    }
    if let Err(e) = Query::<super::publish::PublishQuery>::try_from_uri(&uri) {
        drop(AppError::from(e));
    }
    if let Err(e) = Query::<super::presence::RoomsQuery>::try_from_uri(&uri) {
        drop(AppError::from(e));
    }
}
