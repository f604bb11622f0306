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

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::limits::Permit;
use super::sleep_until;
use super::tls::Accepted;
use super::writer::{Outbox, Output};
use crate::hub::{Disconnect, MessageId, Transport};
use crate::protocol::envelope::ErrorCode;
use crate::protocol::line::LineDecoder;
use crate::session::{Flow, Session};
use crate::transport::context::Context;
use crate::wire::{self, Emit, Wire};

/// A write buffer grown past this by a burst is released once the burst is written, so idle
/// connections stay small.
const KEEP_WRITE_BUFFER: usize = 64 * 1024;

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

/// Serves one chat connection, over TLS when the listener has an acceptor.
pub(crate) async fn handle(
    stream: TcpStream,
    addr: SocketAddr,
    permit: Permit,
    ctx: Arc<Context>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    match super::tls::accept(stream, addr, tls.as_ref()).await {
        Some(Accepted::Plain(stream)) => {
            let (reader, writer) = stream.into_split();
            serve(reader, writer, addr, permit, ctx).await;
        }
        Some(Accepted::Tls(stream)) => {
            let (reader, writer) = tokio::io::split(*stream);
            serve(reader, writer, addr, permit, ctx).await;
        }
        None => {}
    }
}

/// The chat over one connection's two halves.
async fn serve<R, W>(mut reader: R, writer: W, addr: SocketAddr, _permit: Permit, ctx: Arc<Context>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (mut session, rx) = Session::start_chat(&ctx.hub, Transport::Tcp, addr, ctx.tasks.clone());
    let sub = Arc::clone(session.subscriber());
    let done = CancellationToken::new();
    let stop = super::stop_signal(&ctx);
    let outbox = Outbox::new(rx, Arc::clone(&sub), stop.clone(), Wire::Line);
    let writer = tokio::spawn({
        let done = done.clone();
        async move {
            let mut out = LineOutput {
                writer,
                buf: BytesMut::new(),
            };
            outbox.run(&mut out, done).await;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), out.writer.shutdown())
                .await;
        }
    });

    let end = read_loop(&mut reader, &mut session, &ctx, &stop).await;
    let reason = match end {
        End::Idle => {
            if let Some(bye) = wire::goodbye(Wire::Line, Disconnect::TimedOut) {
                session
                    .subscriber()
                    .offer(crate::hub::Delivery::direct(bye));
            }
            Some(Disconnect::TimedOut)
        }
        End::Kicked => sub.kick_reason(),
        End::Shutdown => Some(Disconnect::Shutdown),
        End::Eof | End::Quit | End::Error => None,
    };
    session.end(reason);
    drop(session);
    done.cancel();
    let _ = writer.await;
    tracing::debug!(id = sub.id, %addr, ?end, "tcp chat closed");
}

/// The writer's side of a TCP connection: every unit of a batch copied into one buffer,
/// written with one syscall (`TCP_NODELAY` is on, so batching happens here rather than in
/// Nagle's timer).
struct LineOutput<W> {
    writer: W,
    buf: BytesMut,
}

impl<W> Emit for LineOutput<W> {
    fn emit(&mut self, unit: &Bytes, _: Option<MessageId>) {
        self.buf.extend_from_slice(unit);
    }
}

impl<W: AsyncWrite + Unpin + Send> Output for LineOutput<W> {
    async fn flush(&mut self) -> std::io::Result<()> {
        self.writer.write_all(&self.buf).await?;
        self.discard();
        Ok(())
    }

    fn discard(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > KEEP_WRITE_BUFFER {
            self.buf = BytesMut::new();
        }
    }
}
async fn read_loop(
    reader: &mut (impl AsyncRead + Unpin),
    session: &mut Session,
    ctx: &Context,
    stop: &CancellationToken,
) -> End {
    let config = &ctx.config;
    let sub = Arc::clone(session.subscriber());
    let mut decoder = LineDecoder::new(config.max_line_bytes);
    let mut buf = BytesMut::new();
    let mut last_read = Instant::now();
    // Silent past `idle_timeout`, the client is told, and cut when it stays silent as long
    // again (at most a minute): a person reading can answer with an empty line.
    let mut warned = false;
    loop {
        let flush_at = decoder
            .has_partial(&buf)
            .then(|| last_read + config.line_flush);
        let idle_at = config.idle_timeout.map(|t| {
            last_read
                + t
                + if warned {
                    idle_grace(t)
                } else {
                    Duration::ZERO
                }
        });
        tokio::select! {
            biased;
            _ = stop.cancelled() => return End::Shutdown,
            _ = sub.kicked() => return End::Kicked,
            _ = sleep_until(flush_at) => {
                // The seed's client sends a message with no newline and then waits.
                match decoder.flush(&mut buf) {
                    Ok(Some(line)) => if session.handle_line(&line) == Flow::Quit { return End::Quit },
                    Ok(None) => {}
                    Err(e) => session.refuse(None, ErrorCode::BadFrame, e),
                }
            }
            _ = sleep_until(idle_at) => {
                if warned {
                    return End::Idle;
                }
                warned = true;
                let idle = config.idle_timeout.unwrap_or_default();
                session.reply(crate::reply::Reply::Idle {
                    quiet: idle.as_secs(),
                    grace: idle_grace(idle).as_secs().max(1),
                });
            }
            read = read_some(reader, &mut buf) => {
                last_read = Instant::now();
                warned = false;
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
                            Err(e) => session.refuse(None, ErrorCode::BadFrame, e),
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

/// How long a client told it is idle has to answer before it is cut.
fn idle_grace(idle: Duration) -> Duration {
    idle.min(Duration::from_secs(60))
}

/// Reads into `buf`, making room for a few KiB first; the buffer only grows while a long line
/// is arriving, and is emptied as lines are taken out.
async fn read_some(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    buf.reserve(4096);
    reader.read_buf(buf).await
}
