//! UDP chat: each datagram is one line of the chat protocol; room events go back as datagrams.
//!
//! A sender first proves it receives at its address: its first datagram (at least as long
//! as the answer, so that nobody can aim the server at a third party and get more bytes out
//! than they put in) is answered with `COOKIE X` and nothing else; it becomes a member when
//! it sends `/cookie X` back (`cookie`), and stays one until it has been silent for
//! `udp_ttl`. Nothing else is sent to an address before that. One task owns the socket's receive side and the member table (no lock); each
//! member has a small writer task that drains its queue into `send_to`, best effort, so a
//! member never blocks its room.

mod cookie;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use bytes::Bytes;

use super::limits::Permit;
use super::writer::{Outbox, Output};
use crate::hub::{Disconnect, MessageId, Transport};
use crate::protocol::envelope::ErrorCode;
use crate::session::{Flow, Session};
use crate::transport::context::Context;
use crate::wire::{Emit, Wire};

#[derive(Debug)]
struct Member {
    session: Session,
    last_seen: Instant,
    /// Stops the member's writer task.
    done: CancellationToken,
    _permit: Permit,
}

/// The receive side: the socket, the member table and the limits it applies.
struct Chat {
    socket: Arc<UdpSocket>,
    shared: Arc<Context>,
    members: HashMap<SocketAddr, Member>,
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
                chat.sweep(config.udp_ttl);
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
    // Each member's writer says goodbye as it sees the shutdown.
    for (_, mut member) in chat.members.drain() {
        member.session.end(Some(Disconnect::Shutdown));
    }
}

impl Chat {
    /// Removes members silent for `ttl` and those the hub cut.
    fn sweep(&mut self, ttl: Duration) {
        let now = Instant::now();
        let expired: Vec<SocketAddr> = self
            .members
            .iter()
            .filter(|(_, m)| now - m.last_seen >= ttl || m.session.subscriber().is_gone())
            .map(|(a, _)| *a)
            .collect();
        for addr in expired {
            if let Some(mut member) = self.members.remove(&addr) {
                let reason = member
                    .session
                    .subscriber()
                    .kick_reason()
                    .unwrap_or(Disconnect::TimedOut);
                tracing::debug!(%addr, reason = reason.as_str(), "udp member removed");
                member.done.cancel();
                member.session.end(Some(reason));
            }
        }
    }

    /// Acts on one datagram from `addr`, making its sender a member first if it is new.
    async fn receive(&mut self, addr: SocketAddr, datagram: &[u8]) {
        if !self.members.contains_key(&addr) {
            return self.verify(addr, datagram).await;
        }
        let max_in = self.shared.config.udp_max_in;
        if datagram.len() > max_in {
            let message = format!("ERR datagram larger than {max_in} bytes");
            let _ = self.socket.send_to(message.as_bytes(), addr).await;
            if let Some(member) = self.members.get_mut(&addr) {
                member.last_seen = Instant::now();
            }
            return;
        }
        let Some(member) = self.members.get_mut(&addr) else {
            return;
        };
        member.last_seen = Instant::now();
        let flow = match std::str::from_utf8(datagram) {
            Ok(text) => {
                let text = text.strip_suffix('\n').unwrap_or(text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                member.session.handle_line(text)
            }
            Err(_) => {
                member
                    .session
                    .refuse(None, ErrorCode::BadFrame, "invalid UTF-8");
                Flow::Continue
            }
        };
        if flow == Flow::Quit
            && let Some(member) = self.members.remove(&addr)
        {
            drop(member.session);
            // The writer flushes the goodbye before it stops.
            member.done.cancel();
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
            let member = admit(&self.socket, &self.shared, addr, permit);
            self.members.insert(addr, member);
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

/// A new member: its session (greeted, in the default room) and its writer task.
fn admit(
    socket: &Arc<UdpSocket>,
    shared: &Arc<Context>,
    addr: SocketAddr,
    permit: Permit,
) -> Member {
    let (session, rx) =
        Session::start_chat(&shared.hub, Transport::Udp, addr, shared.tasks.clone());
    let done = CancellationToken::new();
    let outbox = Outbox::new(
        rx,
        Arc::clone(session.subscriber()),
        super::stop_signal(shared),
        Wire::Datagram,
    );
    let mut out = DatagramOutput {
        socket: Arc::clone(socket),
        addr,
        max_out: shared.config.udp_max_out,
        units: Vec::new(),
    };
    let stopped = done.clone();
    shared
        .tasks
        .spawn(async move { outbox.run(&mut out, stopped).await });
    tracing::debug!(%addr, "udp member joined");
    Member {
        session,
        last_seen: Instant::now(),
        done,
        _permit: permit,
    }
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
