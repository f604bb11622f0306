//! UDP chat: each datagram is one line of the chat protocol; room events go back as datagrams.
//!
//! A sender becomes a member on its first datagram and stays one until it has been silent for
//! `udp_ttl`. One task owns the socket's receive side and the member table (no lock); each
//! member has a small writer task that drains its queue into `send_to`, best effort, so a
//! member never blocks its room.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::chat::{ChatSession, Flow};
use super::limits::Permit;
use crate::hub::{Delivery, MessageId, Subscriber, Transport};
use crate::server::Shared;

#[derive(Debug)]
struct Member {
    session: ChatSession,
    last_seen: Instant,
    /// Stops the member's writer task.
    done: CancellationToken,
    _permit: Permit,
}

/// Serves the UDP chat on `socket` until shutdown.
pub(crate) async fn serve(socket: UdpSocket, shared: Arc<Shared>) {
    let socket = Arc::new(socket);
    let config = &shared.config;
    let mut members: HashMap<SocketAddr, Member> = HashMap::new();
    // One spare byte tells an oversized datagram from one exactly at the limit.
    let mut buf = vec![0u8; config.udp_max_in + 1];
    let sweep_every = (config.udp_ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut sweep = tokio::time::interval(sweep_every);
    loop {
        let (len, addr) = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = sweep.tick() => {
                let now = Instant::now();
                let expired: Vec<SocketAddr> = members
                    .iter()
                    .filter(|(_, m)| now - m.last_seen >= config.udp_ttl || m.session.subscriber().is_gone())
                    .map(|(a, _)| *a)
                    .collect();
                for addr in expired {
                    if let Some(member) = members.remove(&addr) {
                        let reason = match member.session.subscriber().kick_reason() {
                            Some(r) => r.as_str(),
                            None => "timed out",
                        };
                        tracing::debug!(%addr, reason, "udp member removed");
                        member.done.cancel();
                        member.session.end(Some(reason));
                    }
                }
                continue;
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok(pair) => pair,
                Err(error) => {
                    // ICMP port-unreachable from an earlier send shows up here on some systems.
                    tracing::debug!(%error, "udp recv failed");
                    continue;
                }
            },
        };
        if len > config.udp_max_in {
            let message = format!("ERR datagram larger than {} bytes", config.udp_max_in);
            let _ = socket.send_to(message.as_bytes(), addr).await;
            if let Some(member) = members.get_mut(&addr) {
                member.last_seen = Instant::now();
            }
            continue;
        }
        let member = match members.entry(addr) {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(slot) => {
                let Some(permit) = shared.limiter.try_acquire(addr.ip()) else {
                    let _ = socket.send_to(b"ERR server full", addr).await;
                    continue;
                };
                let (sub, rx) = shared.hub.subscribe(Transport::Udp, false, Some(addr));
                let done = CancellationToken::new();
                shared.tasks.spawn(write_loop(
                    Arc::clone(&socket),
                    addr,
                    rx,
                    Arc::clone(&sub),
                    done.clone(),
                    config.udp_max_out,
                ));
                tracing::debug!(%addr, "udp member joined");
                slot.insert(Member {
                    session: ChatSession::start(Arc::clone(&shared.hub), sub),
                    last_seen: Instant::now(),
                    done,
                    _permit: permit,
                })
            }
        };
        member.last_seen = Instant::now();
        let flow = match std::str::from_utf8(&buf[..len]) {
            Ok(text) => {
                let text = text.strip_suffix('\n').unwrap_or(text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                member.session.handle_line(text)
            }
            Err(_) => {
                member.session.error("invalid UTF-8");
                Flow::Continue
            }
        };
        if flow == Flow::Quit
            && let Some(member) = members.remove(&addr)
        {
            member.session.end(None);
            // The writer flushes the goodbye before it stops.
            member.done.cancel();
        }
    }
    for (addr, member) in members.drain() {
        let _ = socket.send_to(b"* server shutting down", addr).await;
        member.done.cancel();
        member.session.end(Some("server shutting down"));
    }
}

async fn write_loop(
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Delivery>,
    sub: Arc<Subscriber>,
    done: CancellationToken,
    max_out: usize,
) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = sub.kicked() => {
                let reason = sub.kick_reason().map_or("disconnected", |r| r.as_str());
                let _ = socket.send_to(format!("ERR disconnected: {reason}").as_bytes(), addr).await;
                return;
            }
            n = rx.recv_many(&mut batch, 64) => {
                if n == 0 {
                    return;
                }
                for delivery in batch.drain(..) {
                    send(&socket, addr, &delivery, max_out).await;
                }
            }
            _ = done.cancelled() => {
                while let Ok(delivery) = rx.try_recv() {
                    send(&socket, addr, &delivery, max_out).await;
                }
                return;
            }
        }
    }
}

/// Sends one delivery: an event or an answer as one datagram, a replay as one per message.
async fn send(socket: &UdpSocket, addr: SocketAddr, delivery: &Delivery, max_out: usize) {
    match delivery {
        Delivery::Event(event) => send_one(socket, addr, event.line(), event.id, max_out).await,
        Delivery::Direct(bytes) => send_one(socket, addr, bytes, None, max_out).await,
        Delivery::Replay(replay) => {
            if let Some(gap) = replay.gap_text() {
                send_one(socket, addr, gap.as_bytes(), None, max_out).await;
            }
            for event in &replay.events {
                send_one(socket, addr, &event.line_with_id(), event.id, max_out).await;
            }
        }
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
