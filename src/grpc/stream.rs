//! The two streaming calls, each one session. `Subscribe` joins its rooms (resuming each from
//! its cursor) and only listens; `Chat` reads `ClientFrame`s beside the outgoing stream and
//! lowers each into a `Request` for `Session::apply`, so joins, publishes with their acks and
//! direct messages behave as on the structured WebSocket protocol.
//!
//! The response stream drains the session's `Outbox`: hyper polls it only while the call's
//! HTTP/2 window has room, so a reader that stops fills its queue and the hub cuts it like any
//! slow consumer; the stream then ends with RESOURCE_EXHAUSTED. Dropping the stream (the
//! client cancelled, its deadline passed, the connection went) drops the session, which
//! leaves its rooms.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::pb::{self, client_frame::Frame};
use super::{Caller, Encoded, Service, caller, cursor, not_allowed, room_name};
use crate::auth::Action;
use crate::event::{Disconnect, MessageId, Transport};
use crate::protocol::envelope::ErrorCode;
use crate::session::{Dialect, Flow, Hello, Request as SessionRequest, Session};
use crate::transport::limits::Permit;
use crate::transport::writer::Outbox;
use crate::wire::{Emit, Wire};

/// Most rooms one `Subscribe` names (as MQTT's most filters per SUBSCRIBE).
const MAX_ROOMS: usize = 256;

/// What `Subscribe` and `Chat` answer with.
pub(crate) type Events = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send + 'static>>;

impl Service {
    pub(super) async fn subscribe_call(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Events>, Status> {
        let who = caller(&request);
        let nick = super::nick(&request)?;
        let pb::SubscribeRequest { rooms, since } = request.into_inner();
        if rooms.is_empty() {
            return Err(Status::invalid_argument("name at least one room"));
        }
        let max = MAX_ROOMS;
        if rooms.len() > max {
            return Err(Status::invalid_argument(format!(
                "{} rooms named; a stream may join at most {max}",
                rooms.len()
            )));
        }
        let mut joins: Vec<(&str, Option<MessageId>)> = Vec::with_capacity(rooms.len());
        for room in &rooms {
            room_name(room)?;
            if !self
                .shared
                .hub
                .auth()
                .allows(&who.principal, room, Action::Subscribe)
            {
                return Err(not_allowed(&who.principal, room, Action::Subscribe));
            }
            let from = since.get(room).map_or(Ok(None), |c| cursor(c))?;
            joins.push((room, from));
        }
        if let Some(stray) = since.keys().find(|r| !rooms.contains(r)) {
            return Err(Status::invalid_argument(format!(
                "since names {stray}, which is not among the rooms"
            )));
        }
        let mut feed = self.open(&who, nick.as_deref(), joins[0].0, None)?;
        for (room, from) in joins {
            feed.session
                .enter(room, from)
                .map_err(super::room_refused)?;
        }
        Ok(Response::new(Box::pin(futures_util::stream::unfold(
            feed,
            Feed::next,
        ))))
    }

    pub(super) async fn chat_call(
        &self,
        request: Request<Streaming<pb::ClientFrame>>,
    ) -> Result<Response<Events>, Status> {
        let who = caller(&request);
        let nick = super::nick(&request)?;
        let feed = self.open(&who, nick.as_deref(), "", Some(request.into_inner()))?;
        Ok(Response::new(Box::pin(futures_util::stream::unfold(
            feed,
            Feed::next,
        ))))
    }

    /// A session for one stream, within the connection caps.
    fn open(
        &self,
        who: &Caller,
        nick: Option<&str>,
        room: &str,
        inbound: Option<Streaming<pb::ClientFrame>>,
    ) -> Result<Box<Feed>, Status> {
        let shared = &self.shared;
        let ip = who
            .addr
            .map_or(std::net::Ipv4Addr::LOCALHOST.into(), |a| a.ip());
        let permit = shared.limiter.try_acquire(ip).map_err(|full| {
            crate::metrics::METRICS.refuse(full.code());
            Status::resource_exhausted(full.to_string())
        })?;
        let hello = Hello {
            transport: Transport::Grpc,
            dialect: Dialect::Structured,
            addr: who.addr,
            nick,
            principal: who.principal.clone(),
        };
        let (session, rx) = Session::connect(&shared.hub, shared.tasks.clone(), hello, room);
        let sub = Arc::clone(session.subscriber());
        Ok(Box::new(Feed {
            session,
            outbox: Outbox::new(rx, sub, crate::transport::stop_signal(shared), Wire::Grpc),
            _permit: permit,
            units: Units::default(),
            deadline: who.deadline,
            inbound,
            done: false,
        }))
    }
}

/// A stream's state. Dropping it (client gone, server stopping) drops the session. It is
/// boxed: `unfold` moves its state through every item, and an item is one event, so the move
/// is a pointer rather than the whole session.
struct Feed {
    session: Session,
    outbox: Outbox,
    _permit: Permit,
    /// The current batch's messages, handed to tonic one at a time.
    units: Units,
    deadline: Option<tokio::time::Instant>,
    /// `Chat`'s frames from the client; `None` for `Subscribe`, or once the client closed
    /// its side (the stream then goes on until the client cancels).
    inbound: Option<Streaming<pb::ClientFrame>>,
    done: bool,
}

impl Feed {
    async fn next(mut self: Box<Self>) -> Option<(Result<Encoded, Status>, Box<Self>)> {
        loop {
            if let Some(unit) = self.units.0.pop_front() {
                return Some((Ok(Encoded(unit)), self));
            }
            if self.done {
                return None;
            }
            let inbound = self.inbound.as_mut();
            let reading = inbound.is_some();
            tokio::select! {
                biased;
                pulled = self.outbox.pull(&mut self.session, &mut self.units) => {
                    if let Err(reason) = pulled? {
                        self.done = true;
                        return Some((Err(ended(reason)), self));
                    }
                }
                _ = crate::transport::sleep_until(self.deadline) => {
                    tracing::debug!(id = self.session.subscriber().id, "grpc stream deadline passed");
                    self.done = true;
                    return Some((Err(Status::deadline_exceeded("the call's deadline passed")), self));
                }
                frame = async { inbound?.message().await.transpose() }, if reading => match frame {
                    Some(Ok(frame)) => {
                        if self.apply(&frame) == Flow::Quit {
                            self.done = true;
                        }
                    }
                    None => self.inbound = None,
                    Some(Err(status)) => {
                        tracing::debug!(id = self.session.subscriber().id, %status, "grpc chat input ended");
                        return None;
                    }
                },
            }
        }
    }

    /// Applies one client frame to the session.
    fn apply(&mut self, frame: &pb::ClientFrame) -> Flow {
        self.session.apply(lower(frame))
    }
}

/// Lowers one client frame into a session request (borrowed from it: nothing is copied).
pub(super) fn lower(frame: &pb::ClientFrame) -> SessionRequest<'_> {
    let reference = opt(&frame.r#ref);
    match &frame.frame {
        Some(Frame::Join(join)) => SessionRequest::Join {
            room: &join.room,
            since: opt(&join.since),
            reference,
        },
        Some(Frame::Leave(leave)) => SessionRequest::Leave {
            room: &leave.room,
            reference,
        },
        Some(Frame::Publish(publish)) => SessionRequest::Publish {
            room: opt(&publish.room),
            text: &publish.text,
            key: opt(&publish.key),
            reference,
        },
        Some(Frame::Direct(direct)) => SessionRequest::Direct {
            to: &direct.to,
            text: &direct.text,
            reference,
        },
        Some(Frame::Auth(auth)) => SessionRequest::Auth {
            token: &auth.token,
            reference,
        },
        None => SessionRequest::Invalid {
            reference,
            code: ErrorCode::BadFrame,
            message: "empty frame: set join, leave, publish, direct or auth".to_owned(),
        },
    }
}

/// An optional string field: empty is absent.
fn opt(s: &str) -> Option<&str> {
    Some(s).filter(|s| !s.is_empty())
}

/// The status a stream ends with when the server ends it.
fn ended(reason: Disconnect) -> Status {
    let message = format!("disconnected: {}", reason.as_str());
    match reason {
        Disconnect::SlowConsumer | Disconnect::Flooding => Status::resource_exhausted(message),
        Disconnect::TokenExpired => Status::unauthenticated(message),
        Disconnect::Kicked | Disconnect::Replaced => Status::aborted(message),
        Disconnect::Shutdown | Disconnect::TimedOut => Status::unavailable(message),
    }
}

/// A batch's messages, in order.
#[derive(Default)]
struct Units(VecDeque<Bytes>);

impl Emit for Units {
    fn emit(&mut self, unit: &Bytes, _: Option<MessageId>) {
        self.0.push_back(unit.clone());
    }
}
