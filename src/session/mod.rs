//! The session: one client's nick, rooms and subscriber, whatever transport it came on.
//!
//! Every two-way transport (TCP chat, UDP chat, WebSocket plain and structured) decodes its
//! input into `Request`s and hands them to `Session::apply`; SSE uses a session that only
//! joins. So a feature is written once, here: direct messages are one arm of `apply`. Answers
//! are typed (`crate::reply::Reply`) and go into the client's own queue (`Delivery::Reply`),
//! ordered with its room events and bounded like them; its writer renders them in its wire
//! form. The session knows only the client's `Dialect` (chat, structured, or quiet: answered
//! by its transport), never a wire form.
//! Teardown is `Drop`: however a connection ends, it leaves its rooms and frees its nick.

mod once;
mod publish;
mod request;
mod rooms;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::auth::{Action, Identity, Principal};
use crate::event::{Author, Disconnect, MessageId, Transport};
use crate::hub::pace::Pace;
use crate::hub::queue::Receiver;
use crate::hub::{Delivery, Hub, Lookback, Room, RoomError, Subscriber};
use crate::protocol::names::check_nick;
use crate::reply::{ErrorCode, Reply};

pub use once::{Caller, DEFAULT_PAGE, MAX_KEY, MAX_PAGE, Read, Refused};
pub use publish::{NameRefused, Refusal, author};
pub use request::Request;

/// The room every client starts in unless it names one.
pub const DEFAULT_ROOM: &str = "lobby";

/// How a client speaks, which decides what its session answers and how; the bytes are its
/// writer's (`crate::wire`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Chat lines (TCP, UDP): commands, `*` notices and `ERR` lines; signing in puts a
    /// client in no room into the default one.
    Lines,
    /// The seed's WebSocket chat: commands and text, like lines.
    Plain,
    /// The structured protocol (JSON WebSocket, gRPC): frames with `ref`s; publishes are
    /// acknowledged once durable.
    Structured,
    /// A client the session never answers (SSE, MQTT): it joins and publishes for it, and
    /// the transport says what there is to say (an HTTP status, an MQTT reason code).
    Quiet,
}

impl Dialect {
    /// True for the chat dialects, which type commands.
    fn is_chat(self) -> bool {
        matches!(self, Dialect::Lines | Dialect::Plain)
    }
}

/// Who is connecting, and how: what every streaming transport knows once it has admitted a
/// client (`Session::connect`).
#[derive(Debug, Clone)]
pub struct Hello<'a> {
    /// The transport it came on.
    pub transport: Transport,
    /// How it speaks.
    pub dialect: Dialect,
    /// Its address (behind a trusted proxy, the one the proxy names).
    pub addr: Option<SocketAddr>,
    /// The nick it asked for.
    pub nick: Option<&'a str>,
    /// Who it is.
    pub principal: Principal,
}

/// What the transport should do after a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// The client asked to leave; close after flushing the answer.
    Quit,
}

/// One client's state in the hub.
#[derive(Debug)]
pub struct Session {
    hub: Arc<Hub>,
    sub: Arc<Subscriber>,
    nick: Arc<str>,
    rooms: Vec<Arc<Room>>,
    /// How the client speaks.
    dialect: Dialect,
    /// Acks wait for durability here, tracked for shutdown.
    tasks: TaskTracker,
    /// Told to the rooms at teardown; `None` when the client left by itself.
    reason: Option<Disconnect>,
    /// Who the client is; decides what it may do (`crate::auth`).
    principal: Principal,
    /// Disconnects the client when its token expires; replaced on refresh.
    expiry: Option<tokio::task::AbortHandle>,
    /// This connection's publish limits (`crate::hub::pace`).
    pace: Pace,
}

impl Session {
    /// A session holding the asked-for nick, or it with a `-2`, `-3`… suffix when taken (so
    /// a reconnecting browser whose old connection is not yet gone still gets in), or a
    /// generated one. It is in no room yet.
    /// A verified user gets the token's name instead (suffixed likewise if another user
    /// holds it).
    fn open(
        hub: Arc<Hub>,
        sub: Arc<Subscriber>,
        dialect: Dialect,
        asked: Option<&str>,
        principal: Principal,
        tasks: TaskTracker,
    ) -> Self {
        let nick = match principal.user() {
            Some(identity) => claim_verified(&hub, &sub, identity),
            None => claim_nick(&hub, &sub, asked),
        };
        let limits = hub.limits().clone();
        let mut session = Self {
            hub,
            sub,
            nick,
            rooms: Vec::new(),
            dialect,
            tasks,
            reason: None,
            principal,
            expiry: None,
            pace: Pace::new(
                limits.connection_rate,
                limits.connection_burst,
                limits.flood_refusals,
            ),
        };
        session.arm_expiry();
        session
    }

    /// The one entry of every streaming client (WebSocket, SSE, gRPC streams, and line
    /// chat through `start_chat`): its subscriber, which hears its own messages except on
    /// line chat, and its session, in no room yet. A structured client is welcomed first,
    /// naming `room` (its first; "" for none); `enter` joins.
    pub fn connect(
        hub: &Arc<Hub>,
        tasks: TaskTracker,
        hello: Hello<'_>,
        room: &str,
    ) -> (Self, Receiver<Delivery>) {
        let echo_own = hello.dialect != Dialect::Lines;
        let (sub, rx) = hub.subscribe(hello.transport, echo_own, hello.addr);
        (Self::connect_as(hub, tasks, hello, sub, room), rx)
    }

    /// `connect` for a subscriber made already: MQTT makes it first, because the client id
    /// (which may be made from the subscriber's id) must be taken over from an earlier
    /// connection before the session claims it as its nick.
    pub fn connect_as(
        hub: &Arc<Hub>,
        tasks: TaskTracker,
        hello: Hello<'_>,
        sub: Arc<Subscriber>,
        room: &str,
    ) -> Self {
        let session = Self::open(
            Arc::clone(hub),
            sub,
            hello.dialect,
            hello.nick,
            hello.principal,
            tasks,
        );
        if session.dialect == Dialect::Structured {
            session.welcome(room);
        }
        tracing::debug!(id = session.sub.id, addr = ?hello.addr, transport = hello.transport.as_str(), nick = %session.nick, "connected");
        session
    }

    /// Joins a room the client named when it connected (resuming after `since`); a
    /// structured client is told `joined`, with the members and the cursor.
    pub fn enter(&mut self, room: &str, since: Option<MessageId>) -> Result<MessageId, RoomError> {
        let cursor = self.join(room, since)?;
        if self.dialect == Dialect::Structured {
            self.joined(None, room, cursor);
        }
        Ok(cursor)
    }

    /// A line chat session (TCP, UDP): a generated nick, the default room if it is open to
    /// anonymous clients, a greeting.
    pub fn start_chat(
        hub: &Arc<Hub>,
        transport: Transport,
        addr: SocketAddr,
        tasks: TaskTracker,
    ) -> (Self, Receiver<Delivery>) {
        let hello = Hello {
            transport,
            dialect: Dialect::Lines,
            addr: Some(addr),
            nick: None,
            principal: Principal::Anonymous,
        };
        let (mut session, rx) = Self::connect(hub, tasks, hello, "");
        let open = session.may(DEFAULT_ROOM, Action::Subscribe);
        // Queued before joining, so that it is the first line: once joined, the room's
        // events (someone leaving, say) can land in the queue at any moment.
        session.reply(Reply::Greeting {
            nick: Arc::clone(&session.nick),
            room: open.then(|| DEFAULT_ROOM.into()),
        });
        if open {
            session.join_or_refuse(None, DEFAULT_ROOM);
        }
        (session, rx)
    }

    /// True if the client may do `action` in `room`.
    pub fn may(&self, room: &str, action: Action) -> bool {
        self.hub.auth().allows(&self.principal, room, action)
    }

    /// The client as the author of what it sends.
    fn author(&self) -> Author {
        Author {
            nick: Arc::clone(&self.nick),
            sender: self.hub.auth().sender(&self.principal),
        }
    }

    /// Refuses an action the client's identity does not allow in `room`.
    fn forbid(&self, reference: Option<&str>, room: &str, action: Action) {
        let hint = match self.principal {
            Principal::Anonymous => " (sign in with a token)",
            _ => "",
        };
        self.refuse(
            reference,
            ErrorCode::Forbidden,
            format!("not allowed to {action} in {room}{hint}"),
        )
    }

    /// Disconnects the client when its token runs out (plus the configured leeway).
    fn arm_expiry(&mut self) {
        if let Some(old) = self.expiry.take() {
            old.abort();
        }
        let Some(identity) = self.principal.user() else {
            return;
        };
        let now = crate::event::now_ms() / 1000;
        let left = identity.expires.saturating_sub(now) + self.hub.auth().leeway();
        let sub = Arc::downgrade(&self.sub);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(left)).await;
            if let Some(sub) = sub.upgrade() {
                sub.kick(Disconnect::TokenExpired);
            }
        });
        self.expiry = Some(timer.abort_handle());
    }

    /// The client's subscriber.
    pub fn subscriber(&self) -> &Arc<Subscriber> {
        &self.sub
    }

    /// The client's nick.
    pub fn nick(&self) -> &Arc<str> {
        &self.nick
    }

    /// The key that lets this client's HTTP publishes use its nick (`Hub::nick_key`).
    pub fn nick_key(&self) -> String {
        self.hub.nick_key(self.sub.id, &self.nick)
    }

    /// Rooms joined, in the order joined.
    pub fn rooms(&self) -> &[Arc<Room>] {
        &self.rooms
    }

    /// Says why the connection ends; the rooms are told at teardown.
    pub fn end(&mut self, reason: Option<Disconnect>) {
        self.reason = reason;
    }

    /// Queues the structured protocol's first frame; sent before the first join so that it
    /// is the first frame the client reads.
    fn welcome(&self, room: &str) {
        self.reply(Reply::Welcome {
            nick: Arc::clone(&self.nick),
            user: self.principal.user().map(|i| Arc::clone(&i.sub)),
            room: room.into(),
        });
    }

    /// Queues `{"type":"joined"}` for a room this session is in.
    fn joined(&self, reference: Option<&str>, room: &str, cursor: MessageId) {
        let members = self
            .room_index(room)
            .map(|i| self.rooms[i].members())
            .unwrap_or_default();
        self.reply(Reply::Joined {
            reference: reference.map(Box::from),
            room: room.into(),
            members: members.into_iter().map(|m| m.nick).collect(),
            cursor,
        });
    }

    /// Acts on one request.
    pub fn apply(&mut self, request: Request<'_>) -> Flow {
        match request {
            Request::Publish {
                room,
                text,
                key,
                reference,
            } => self.publish(room, text, key, reference),
            Request::Direct {
                to,
                text,
                reference,
            } => self.direct(to, text, reference),
            Request::Join {
                room,
                since,
                reference,
            } => self.join_more(room, since, reference),
            Request::Move(room) => self.move_to(room),
            Request::Leave { room, reference } => self.leave(room, reference),
            Request::Nick(nick) => self.rename(nick),
            Request::Who => self.who(),
            Request::Rooms(after) => self.list_rooms(after),
            Request::History(n) => self.history(Lookback::Last(n)),
            Request::Since(id) => match id.parse::<MessageId>() {
                Ok(id) => self.history(Lookback::Since(id)),
                Err(e) => self.refuse(None, ErrorCode::BadFrame, e),
            },
            Request::Help => self.reply(Reply::Help),
            Request::Auth { token, reference } => self.authenticate(token, reference),
            Request::Quit => {
                self.reply(Reply::Bye);
                return Flow::Quit;
            }
            Request::Invalid {
                reference,
                code,
                message,
            } => self.refuse(reference, code, message),
        }
        Flow::Continue
    }

    /// Decodes one chat line and acts on it.
    pub fn handle_line(&mut self, line: &str) -> Flow {
        let input = crate::protocol::command::parse(line);
        match Request::from_line(&input) {
            Some(request) => self.apply(request),
            None => Flow::Continue,
        }
    }

    /// Queues an answer for the client, ahead of whatever comes to it next; its writer
    /// renders it (`crate::wire::reply`). A quiet client's transport answers for itself.
    pub fn reply(&self, reply: Reply) {
        if self.dialect != Dialect::Quiet {
            self.sub.offer(Delivery::reply(reply));
        }
    }

    /// Refuses a request: an `ERR` line, or an error frame with the request's `ref`.
    pub fn refuse(
        &self,
        reference: Option<&str>,
        code: ErrorCode,
        message: impl std::fmt::Display,
    ) {
        tracing::debug!(id = self.sub.id, addr = ?self.sub.addr, ?code, %message, "client error");
        self.reply(Reply::refused(reference, code, message));
    }

    fn room_index(&self, name: &str) -> Option<usize> {
        self.rooms.iter().position(|r| &**r.name() == name)
    }

    fn rename(&mut self, new: &str) {
        if *new == *self.nick {
            return self.reply(Reply::SameNick(Arc::clone(&self.nick)));
        }
        // Every rename is told to every room: it is paced like a message.
        if !self.paced(None) {
            return;
        }
        if self.principal.user().is_some() {
            return self.refuse(None, ErrorCode::BadName, "your name comes from your token");
        }
        if let Err(e) = self.hub.claim_nick(&self.sub, new, None) {
            return self.refuse(None, ErrorCode::BadName, e);
        }
        self.take_nick(new.into());
        self.reply(Reply::Renamed(Arc::clone(&self.nick)));
    }

    /// Releases the old nick (when its registry key differs) and tells every room.
    fn take_nick(&mut self, new: Arc<str>) {
        // A look-alike change keeps the same registry key, so release only a different one.
        if !crate::hub::same_nick(&new, &self.nick) {
            self.hub.release_nick(self.sub.id, &self.nick);
        }
        self.nick = new;
        for room in &self.rooms {
            self.hub.rename(room, self.sub.id, Arc::clone(&self.nick));
        }
    }

    /// `/auth TOKEN` or `{"type":"auth"}`: sign in, or refresh before expiry. The name
    /// becomes the token's; rooms the new grants no longer cover are left.
    fn authenticate(&mut self, token: &str, reference: Option<&str>) {
        let ip = self.sub.addr.map(|a| a.ip());
        let identity = match self.hub.auth().verify_at(ip, token) {
            Ok(identity) => Arc::new(identity),
            Err(e @ crate::auth::AuthError::Throttled(_)) => {
                return self.refuse(reference, ErrorCode::RateLimited, e);
            }
            Err(e) => {
                return self.refuse(
                    reference,
                    ErrorCode::Unauthorized,
                    format!("token refused: {e}"),
                );
            }
        };
        if let Some(current) = self.principal.user()
            && current.sub != identity.sub
        {
            return self.refuse(
                reference,
                ErrorCode::Unauthorized,
                "this token is for another user; reconnect to switch",
            );
        }
        let renamed = self
            .principal
            .user()
            .is_none_or(|c| c.name != identity.name);
        self.principal = Principal::User(Arc::clone(&identity));
        if renamed {
            let nick = claim_verified(&self.hub, &self.sub, &identity);
            self.take_nick(nick);
        }
        self.arm_expiry();
        self.leave_forbidden();
        if self.dialect == Dialect::Lines
            && self.rooms.is_empty()
            && self.may(DEFAULT_ROOM, Action::Subscribe)
        {
            self.join_or_refuse(reference, DEFAULT_ROOM);
        }
        self.reply(Reply::Authenticated {
            reference: reference.map(Box::from),
            user: Arc::clone(&identity.sub),
            nick: Arc::clone(&self.nick),
            expires: identity.expires,
            rooms: self.rooms.iter().map(|r| Arc::clone(r.name())).collect(),
        });
    }
}

impl Drop for Session {
    /// Teardown, in one place for every transport: leave every room (telling each why, if
    /// it was not the client's choice) and free the nick.
    fn drop(&mut self) {
        if let Some(timer) = self.expiry.take() {
            timer.abort();
        }
        for room in self.rooms.drain(..) {
            self.hub.leave(&room, &self.sub, self.reason);
        }
        self.hub.release_nick(self.sub.id, &self.nick);
        tracing::debug!(id = self.sub.id, transport = self.sub.transport.as_str(), reason = ?self.reason, "session ended");
    }
}

/// See `Session::open`.
fn claim_nick(hub: &Hub, sub: &Arc<Subscriber>, asked: Option<&str>) -> Arc<str> {
    asked
        .and_then(|asked| claim_suffixed(hub, sub, asked, None))
        .unwrap_or_else(|| hub.claim_generated_nick(sub))
}

/// A verified user's name, or it with a suffix while another verified user holds it.
fn claim_verified(hub: &Hub, sub: &Arc<Subscriber>, identity: &Identity) -> Arc<str> {
    claim_suffixed(hub, sub, &identity.name, Some(&identity.sub))
        .unwrap_or_else(|| hub.claim_generated_nick(sub))
}

/// `name`, else `name-2`, `name-3`…, whichever is free first.
fn claim_suffixed(
    hub: &Hub,
    sub: &Arc<Subscriber>,
    name: &str,
    user: Option<&Arc<str>>,
) -> Option<Arc<str>> {
    if hub.claim_nick(sub, name, user).is_ok() {
        return Some(name.into());
    }
    (2..100).find_map(|n| {
        let candidate = format!("{name}-{n}");
        (check_nick(&candidate).is_ok() && hub.claim_nick(sub, &candidate, user).is_ok())
            .then(|| candidate.into())
    })
}
