//! TCP chat: UTF-8 lines in, `nick: text` lines out.
//!
//! A connection is two tasks. The reader decodes lines and calls the chat session; the writer
//! drains the subscriber's queue, copies every queued line into one buffer and writes it with
//! one syscall (`TCP_NODELAY` is on, so batching happens here rather than in Nagle's timer).
//! A client that stops reading fills its queue and is cut by the hub; its writer may be stuck
//! in `write`, so every write also watches the kick and shutdown signals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::chat::{ChatSession, Flow};
use super::limits::Permit;
use super::sleep_until;
use crate::hub::{Delivery, Disconnect, Subscriber, Transport};
use crate::protocol::line::LineDecoder;
use crate::server::Shared;

/// Most queued deliveries gathered into one write.
const WRITE_BATCH: usize = 64;
/// A write buffer grown past this by a burst is released once the burst is written, so idle
/// connections stay small.
const KEEP_WRITE_BUFFER: usize = 64 * 1024;
/// How long a closing connection may take to flush its last lines.
const FLUSH_ON_CLOSE: Duration = Duration::from_secs(2);

/// Why the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Eof,
    Quit,
    Kicked,
    Shutdown,
    Idle,
    Error,
}

/// Serves one TCP chat connection until it ends.
pub(crate) async fn handle(
    stream: TcpStream,
    addr: SocketAddr,
    _permit: Permit,
    shared: Arc<Shared>,
) {
    let _ = stream.set_nodelay(true);
    let (sub, rx) = shared.hub.subscribe(Transport::Tcp, false, Some(addr));
    tracing::debug!(id = sub.id, %addr, "tcp chat connected");
    let (mut reader, writer) = stream.into_split();
    let done = CancellationToken::new();
    let stop = super::stop_signal(&shared);
    let writer = tokio::spawn(write_loop(
        writer,
        rx,
        Arc::clone(&sub),
        done.clone(),
        stop.clone(),
    ));

    let mut session = ChatSession::start(Arc::clone(&shared.hub), Arc::clone(&sub));
    let end = read_loop(&mut reader, &mut session, &shared, &stop).await;
    let reason = match end {
        End::Idle => {
            session.reply("* closing idle connection\n".into());
            Some("timed out")
        }
        End::Kicked => sub.kick_reason().map(Disconnect::as_str),
        End::Shutdown => Some(Disconnect::Shutdown.as_str()),
        End::Eof | End::Quit | End::Error => None,
    };
    session.end(reason);
    done.cancel();
    let _ = writer.await;
    tracing::debug!(id = sub.id, %addr, ?end, "tcp chat closed");
}

async fn read_loop(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    session: &mut ChatSession,
    shared: &Shared,
    stop: &CancellationToken,
) -> End {
    let config = &shared.config;
    let sub = Arc::clone(session.subscriber());
    let mut decoder = LineDecoder::new(config.max_line_bytes);
    let mut buf = BytesMut::new();
    let mut last_read = Instant::now();
    loop {
        let flush_at = decoder
            .has_partial(&buf)
            .then(|| last_read + config.line_flush);
        let idle_at = config.idle_timeout.map(|t| last_read + t);
        tokio::select! {
            biased;
            _ = stop.cancelled() => return End::Shutdown,
            _ = sub.kicked() => return End::Kicked,
            _ = sleep_until(flush_at) => {
                // The seed's client sends a message with no newline and then waits.
                match decoder.flush(&mut buf) {
                    Ok(Some(line)) => if session.handle_line(&line) == Flow::Quit { return End::Quit },
                    Ok(None) => {}
                    Err(e) => session.error(e),
                }
            }
            _ = sleep_until(idle_at) => return End::Idle,
            read = read_some(reader, &mut buf) => {
                last_read = Instant::now();
                match read {
                    Ok(0) => {
                        if let Ok(Some(line)) = decoder.flush(&mut buf) {
                            session.handle_line(&line);
                        }
                        return End::Eof;
                    }
                    Ok(_) => loop {
                        match decoder.decode(&mut buf) {
                            Ok(Some(line)) => if session.handle_line(&line) == Flow::Quit { return End::Quit },
                            Ok(None) => break,
                            Err(e) => session.error(e),
                        }
                    },
                    Err(error) => {
                        tracing::debug!(%error, "tcp read failed");
                        return End::Error;
                    }
                }
            }
        }
    }
}

/// Reads into `buf`, making room for a few KiB first; the buffer only grows while a long line
/// is arriving, and is emptied as lines are taken out.
async fn read_some(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    buf.reserve(4096);
    reader.read_buf(buf).await
}

async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Delivery>,
    sub: Arc<Subscriber>,
    done: CancellationToken,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::new();
    let mut out = BytesMut::new();
    loop {
        tokio::select! {
            biased;
            _ = sub.kicked() => {
                let reason = sub.kick_reason().unwrap_or(Disconnect::SlowConsumer);
                let line = format!("ERR disconnected: {}\n", reason.as_str());
                let _ = tokio::time::timeout(Duration::from_secs(1), writer.write_all(line.as_bytes())).await;
                break;
            }
            _ = shutdown.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), writer.write_all(b"* server shutting down\n")).await;
                break;
            }
            n = rx.recv_many(&mut batch, WRITE_BATCH) => {
                if n == 0 {
                    break;
                }
                encode(&mut batch, &mut out);
                let write = writer.write_all(&out);
                let written = tokio::select! {
                    biased;
                    _ = sub.kicked() => continue,
                    _ = shutdown.cancelled() => continue,
                    r = write => r,
                };
                if written.is_err() {
                    break;
                }
                out.clear();
                if out.capacity() > KEEP_WRITE_BUFFER {
                    out = BytesMut::new();
                }
            }
            _ = done.cancelled() => {
                // The reader finished (EOF, /quit, idle): flush what is queued, then close.
                while let Ok(d) = rx.try_recv() {
                    batch.push(d);
                }
                encode(&mut batch, &mut out);
                let _ = tokio::time::timeout(FLUSH_ON_CLOSE, writer.write_all(&out)).await;
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
}

fn encode(batch: &mut Vec<Delivery>, out: &mut BytesMut) {
    if let Some(Delivery::Event(event)) = batch.first() {
        crate::metrics::METRICS.observe_delivery(event.time_ms);
    }
    for delivery in batch.drain(..) {
        match delivery {
            Delivery::Event(event) => out.extend_from_slice(event.line()),
            Delivery::Direct(bytes) => out.extend_from_slice(&bytes),
            Delivery::Replay(replay) => {
                if let Some(gap) = replay.gap_text() {
                    out.extend_from_slice(gap.as_bytes());
                    out.extend_from_slice(b"\n");
                }
                for event in &replay.events {
                    out.extend_from_slice(&event.line_with_id());
                }
            }
        }
    }
}
