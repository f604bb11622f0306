//! The unary calls: HTTP's publish, history page, presence and room list, answered with
//! gRPC statuses. Each checks the caller's grants first; a publish passes the identity's
//! rate limit and the room caps like every other.

use tonic::{Request, Response, Status};

use super::pb::{self, Member, PresenceReply, RoomsReply};
use super::{Encoded, Service, caller, cursor, not_allowed, room_name};
use crate::session::{Caller, DEFAULT_PAGE, MAX_PAGE, NameRefused, Refused};
use crate::wire::{self, Wire};

/// Nick of anonymous publishers that give none, and of API-key publishers.
const NAMES: (&str, &str) = ("anonymous", "api");

/// A page size: 0 is the default, past `MAX_PAGE` is refused.
fn limit(asked: u32) -> Result<usize, Status> {
    match asked as usize {
        0 => Ok(DEFAULT_PAGE),
        asked @ 1..=MAX_PAGE => Ok(asked),
        _ => Err(Status::invalid_argument(format!(
            "limit must be 0 (the default, {DEFAULT_PAGE}) to {MAX_PAGE}"
        ))),
    }
}

impl Service {
    pub(super) async fn publish_call(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishReply>, Status> {
        let who = caller(&request);
        let nick = super::nick(&request)?;
        let pb::PublishRequest { room, text, key } = request.into_inner();
        // A call whose deadline passed on the way in is not carried out: its caller has
        // given up on the answer, and a retry must not find the message posted already.
        if who
            .deadline
            .is_some_and(|at| at <= tokio::time::Instant::now())
        {
            return Err(Status::deadline_exceeded(
                "the call's deadline passed before it was served",
            ));
        }
        let hub = &self.shared.hub;
        room_name(&room)?;
        let caller = Caller {
            hub,
            principal: &who.principal,
            addr: who.addr,
        };
        let refused = |e| refused(&who.principal, e);
        caller.may_publish(&room).map_err(refused)?;
        let max = self.shared.config.ws_max_message;
        if text.len() > max {
            return Err(Status::invalid_argument(format!(
                "the message is {} bytes; the limit is {max}",
                text.len()
            )));
        }
        let author = crate::session::author(hub, &who.principal, nick, None, NAMES).map_err(
            |e| match e {
                NameRefused::NotYours(_) => Status::permission_denied(e.to_string()),
                NameRefused::Taken(_) => Status::already_exists(e.to_string()),
            },
        )?;
        let acked = caller
            .publish(&room, author, &text, Some(&key), who.deadline)
            .await
            .map_err(refused)?;
        Ok(Response::new(pb::PublishReply {
            id: acked.id.to_string(),
            duplicate: acked.duplicate,
        }))
    }

    pub(super) async fn history_call(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryReply>, Status> {
        let who = caller(&request);
        let pb::HistoryRequest { room, since, limit } = request.into_inner();
        room_name(&room)?;
        let since = cursor(&since)?;
        let limit = self::limit(limit)?;
        let caller = Caller {
            hub: &self.shared.hub,
            principal: &who.principal,
            addr: who.addr,
        };
        let page = caller
            .history(&room, since, limit)
            .map_err(|e| refused(&who.principal, e))?
            .page;
        let next = page.next(since);
        Ok(sized(pb::HistoryReply {
            messages: page
                .events
                .iter()
                .map(|ev| Encoded(wire::event(Wire::Grpc, ev).clone()))
                .collect(),
            gap: page.gap.map(|g| g.as_str().to_owned()).unwrap_or_default(),
            next: next.map(|id| id.to_string()).unwrap_or_default(),
            more: page.more,
        }))
    }

    pub(super) async fn presence_call(
        &self,
        request: Request<pb::PresenceRequest>,
    ) -> Result<Response<PresenceReply>, Status> {
        let who = caller(&request);
        let room = request.into_inner().room;
        room_name(&room)?;
        let caller = Caller {
            hub: &self.shared.hub,
            principal: &who.principal,
            addr: who.addr,
        };
        let members = caller
            .members(&room)
            .await
            .map_err(|e| refused(&who.principal, e))?
            .into_iter()
            .map(|m| Member {
                nick: m.nick.to_string(),
                transport: m.transport.as_str().to_owned(),
            })
            .collect();
        Ok(sized(PresenceReply { room, members }))
    }

    pub(super) async fn rooms_call(
        &self,
        request: Request<pb::RoomsRequest>,
    ) -> Result<Response<RoomsReply>, Status> {
        let who = caller(&request);
        let pb::RoomsRequest { after, limit } = request.into_inner();
        let limit = self::limit(limit)?;
        let after = Some(after.as_str()).filter(|a| !a.is_empty());
        let caller = Caller {
            hub: &self.shared.hub,
            principal: &who.principal,
            addr: who.addr,
        };
        let (page, next) = caller.rooms(after, limit);
        Ok(sized(RoomsReply {
            rooms: page
                .iter()
                .map(|room| pb::Room {
                    name: room.name().to_string(),
                    members: u32::try_from(room.member_count()).unwrap_or(u32::MAX),
                    last_id: room.latest().map(|id| id.to_string()).unwrap_or_default(),
                })
                .collect(),
            next: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }
}

/// A reply that says its encoded size, so that it holds its place in the unsent-answer
/// budget until the client takes it (`super::ReplySize`).
fn sized<T: prost::Message>(reply: T) -> Response<T> {
    let bytes = reply.encoded_len();
    let mut response = Response::new(reply);
    response.extensions_mut().insert(super::ReplySize(bytes));
    response
}

/// The status of a refused one-shot request (`session::Refused`).
fn refused(principal: &crate::auth::Principal, refused: Refused) -> Status {
    match refused {
        Refused::NotAllowed { room, action } => not_allowed(principal, &room, action),
        Refused::RateLimited(_) => {
            crate::metrics::METRICS.refuse("rate_limited");
            Status::resource_exhausted(refused.to_string())
        }
        Refused::Empty | Refused::KeyTooLong => Status::invalid_argument(refused.to_string()),
        Refused::Room(error) => super::room_refused(error),
        Refused::Unavailable(error) => super::unavailable(error),
        Refused::DeadlineExceeded => Status::deadline_exceeded(refused.to_string()),
        Refused::Presence(_) => Status::unavailable(refused.to_string()),
    }
}
