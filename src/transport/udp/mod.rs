//! UDP chat: each datagram is one line of the chat protocol; room events go back as datagrams.
//!
//! A sender first proves it receives at its address: its first datagram (at least as long
//! as the answer, so that nobody can aim the server at a third party and get more bytes out
//! than they put in) is answered with `COOKIE X` and nothing else; it becomes a member when
//! it sends `/cookie X` back (`cookie`), and stays one until it has been silent for
//! `udp_ttl`. Nothing else is sent to an address before that. One task owns the socket's
//! receive side and the member table (no lock) and hands each member's datagrams to the
//! member's own task, the connection driver (`super::link`), which also drains its queue into
//! `send_to`, best effort, so a member never blocks its room.

mod cookie;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use bytes::Bytes;

use super::limits::Permit;
use super::link::{self, Link, Step};
use super::writer::{Outbox, Output};
use crate::hub::{Disconnect, MessageId, Transport};
use crate::protocol::envelope::ErrorCode;
use crate::session::{Flow, Session};
use crate::transport::context::Context;
use crate::wire::{Emit, Wire};

/// Datagrams one member may have waiting for its task; past it they are dropped, as a full
/// socket buffer would. A channel takes memory in blocks as it fills, so an idle member holds
/// little of it; a flood fills it faster than its task answers only on a busy server, and
/// the session's pace cuts the flooder anyway.
const INBOX: usize = 256;

/// The receive side: the socket, each member's inbox and the limits it applies.
struct Chat {
    socket: Arc<UdpSocket>,
    shared: Arc<Context>,
    /// Each member's datagrams, to its own task (`Member`); closed once the task has ended.
    members: HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    cookies: cookie::Cookies,
}

/// Serves the UDP chat on `socket` until shutdown.
pub(crate) async fn serve(socket: UdpSocket, shared: Arc<Context>) {
    let config = shared.config.clone();
    let mut chat = Chat {
        socket: Arc::new(socket),
        members: HashMap::new(),
        cookies: cookie::Cookies::new(shared.config.limits.udp_cookie_ttl),
        shared,
    };
    // One spare byte tells an oversized datagram from one exactly at the limit.
    let mut buf = vec![0u8; config.udp_max_in + 1];
    let sweep_every = (config.udp_ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut sweep = tokio::time::interval(sweep_every);
    loop {
        let (len, addr) = tokio::select! {
            _ = chat.shared.shutdown.cancelled() => break,
            _ = sweep.tick() => {
                chat.members.retain(|_, inbox| !inbox.is_closed());
                continue;
            }
            received = chat.socket.recv_from(&mut buf) => match received {
                Ok(pair) => pair,
                Err(error) => {
                    // ICMP port-unreachable from an earlier send shows up here on some systems.
                    tracing::debug!(%error, "udp recv failed");
                    continue;
                }
            },
        };
        chat.receive(addr, &buf[..len]).await;
    }
    // Each member's task says goodbye as it sees the shutdown.
}

impl Chat {
    /// Hands one datagram from `addr` to its member, making its sender one first if it is new.
    async fn receive(&mut self, addr: SocketAddr, datagram: &[u8]) {
        let Some(inbox) = self.members.get(&addr) else {
            return self.verify(addr, datagram).await;
        };
        match inbox.try_send(Bytes::copy_from_slice(datagram)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                crate::metrics::METRICS.refuse("udp_inbox_full");
                tracing::debug!(%addr, "udp datagram dropped: the member's inbox is full");
            }
            // Its task has ended (silent, cut or gone): a stranger again.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.members.remove(&addr);
                self.verify(addr, datagram).await;
            }
        }
    }
}

/// One member: its session and the datagrams the receive side hands it, driven by
/// `link::drive` in a task of its own that also drains its queue into `send_to`, best effort,
/// so a member never blocks its room.
struct Member {
    session: Session,
    inbox: mpsc::Receiver<Bytes>,
    out: DatagramOutput,
    last_seen: Instant,
    ttl: Duration,
    max_in: usize,
}

/// What woke a member's task.
enum Input {
    /// A datagram, or `None` when the receive side has stopped.
    Datagram(Option<Bytes>),
    /// Silent for `udp_ttl`.
    Silent,
}

impl Link for Member {
    type Input = Input;

    async fn recv(&mut self) -> Input {
        tokio::select! {
            datagram = self.inbox.recv() => Input::Datagram(datagram),
            _ = tokio::time::sleep_until(self.last_seen + self.ttl) => Input::Silent,
        }
    }

    async fn act(&mut self, input: Input) -> Step {
        let datagram = match input {
            Input::Datagram(Some(datagram)) => datagram,
            Input::Datagram(None) => return Step::Cut(Disconnect::Shutdown),
            Input::Silent => return Step::Cut(Disconnect::TimedOut),
        };
        self.last_seen = Instant::now();
        if datagram.len() > self.max_in {
            let message = format!("ERR datagram larger than {} bytes", self.max_in);
            let out = &self.out;
            send_one(&out.socket, out.addr, message.as_bytes(), None, usize::MAX).await;
            return Step::Continue;
        }
        let flow = match std::str::from_utf8(&datagram) {
            Ok(text) => {
                let text = text.strip_suffix('\n').unwrap_or(text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                self.session.handle_line(text)
            }
            Err(_) => {
                self.session
                    .refuse(None, ErrorCode::BadFrame, "invalid UTF-8");
                Flow::Continue
            }
        };
        match flow {
            Flow::Quit => Step::Done,
            Flow::Continue => Step::Continue,
        }
    }

    async fn deliver(&mut self, outbox: &mut Outbox) -> Step {
        link::sent(outbox.send(&mut self.out).await)
    }

    async fn close(&mut self, outbox: &Outbox, reason: Option<Disconnect>) {
        // A member silent for its time to live is told nothing: it is likely gone, and the
        // address is not written to unasked.
        if let Some(reason) = reason.filter(|r| *r != Disconnect::TimedOut) {
            outbox.goodbye(&mut self.out, reason).await;
        }
    }
}

impl Chat {
    /// A datagram from an address that is not a member: `/cookie X` with a good cookie
    /// makes it one; anything else is answered with a cookie, if it was at least as long as
    /// the answer, and otherwise dropped.
    async fn verify(&mut self, addr: SocketAddr, datagram: &[u8]) {
        let text = std::str::from_utf8(datagram).unwrap_or("").trim_end();
        if let Some(cookie) = text.strip_prefix(cookie::ANSWER) {
            if !self.cookies.check(addr, cookie.trim()) {
                crate::metrics::METRICS.refuse("udp_bad_cookie");
                tracing::debug!(%addr, "udp cookie refused");
                return;
            }
            let permit = match self.shared.limiter.try_acquire(addr.ip()) {
                Ok(permit) => permit,
                Err(full) => {
                    let _ = self
                        .socket
                        .send_to(format!("ERR {full}").as_bytes(), addr)
                        .await;
                    return;
                }
            };
            let inbox = admit(&self.socket, &self.shared, addr, permit);
            self.members.insert(addr, inbox);
            return;
        }
        let challenge = self.cookies.challenge(addr);
        if datagram.len() < challenge.len() {
            crate::metrics::METRICS.refuse("udp_short_probe");
            tracing::debug!(%addr, len = datagram.len(), "udp datagram from an unverified address too short to answer");
            return;
        }
        let _ = self.socket.send_to(challenge.as_bytes(), addr).await;
    }
}

/// A new member: its session (greeted, in the default room) and its task; the sender of its
/// inbox.
fn admit(
    socket: &Arc<UdpSocket>,
    shared: &Arc<Context>,
    addr: SocketAddr,
    permit: Permit,
) -> mpsc::Sender<Bytes> {
    let (session, rx) =
        Session::start_chat(&shared.hub, Transport::Udp, addr, shared.tasks.clone());
    let mut outbox = Outbox::new(
        rx,
        Arc::clone(session.subscriber()),
        super::stop_signal(shared),
        Wire::Datagram,
    );
    let (inbox_tx, inbox) = mpsc::channel(INBOX);
    let mut member = Member {
        session,
        inbox,
        out: DatagramOutput {
            socket: Arc::clone(socket),
            addr,
            max_out: shared.config.udp_max_out,
            units: Vec::new(),
        },
        last_seen: Instant::now(),
        ttl: shared.config.udp_ttl,
        max_in: shared.config.udp_max_in,
    };
    shared.tasks.spawn(async move {
        let _permit = permit;
        let reason = link::drive(&mut member, &mut outbox).await;
        tracing::debug!(%addr, ?reason, "udp member removed");
        member.session.end(reason);
    });
    tracing::debug!(%addr, "udp member joined");
    inbox_tx
}

/// A UDP member's output: each unit is one datagram, sent best effort (a failed send is
/// logged, never retried: the member may be gone).
struct DatagramOutput {
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
    max_out: usize,
    units: Vec<(Bytes, Option<MessageId>)>,
}

impl Emit for DatagramOutput {
    fn emit(&mut self, unit: &Bytes, id: Option<MessageId>) {
        self.units.push((unit.clone(), id));
    }
}

impl Output for DatagramOutput {
    async fn flush(&mut self) -> std::io::Result<()> {
        for (unit, id) in self.units.drain(..) {
            send_one(&self.socket, self.addr, &unit, id, self.max_out).await;
        }
        Ok(())
    }

    fn discard(&mut self) {
        self.units.clear();
    }
}
/// Sends one datagram, without its final newline. One that would be over `max_out` is
/// replaced by an `ERR` naming the message, so the member knows it missed something rather
/// than receiving a truncated or fragmented datagram.
async fn send_one(
    socket: &UdpSocket,
    addr: SocketAddr,
    bytes: &[u8],
    id: Option<MessageId>,
    max_out: usize,
) {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let result = if body.len() > max_out {
        let id = id.map_or_else(|| "-".to_owned(), |id| id.to_string());
        let message = format!(
            "ERR message {id} too large for UDP ({} bytes > {max_out})",
            body.len()
        );
        socket.send_to(message.as_bytes(), addr).await
    } else {
        socket.send_to(body, addr).await
    };
    if let Err(error) = result {
        tracing::debug!(%addr, %error, "udp send failed");
    }
}
