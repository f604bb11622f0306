//! TCP chat: UTF-8 lines in, `nick: text` lines out.
//!
//! A connection is one task, the connection driver (`super::link`): it decodes lines and
//! calls the chat session, and drains the subscriber's queue, every queued line copied into
//! one buffer and written with one syscall (`TCP_NODELAY` is on, so batching happens here
//! rather than in Nagle's timer). A client that stops reading fills its queue and is cut by
//! the hub; a write stuck on it also watches the kick and shutdown signals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::limits::Permit;
use super::link::{self, Link, Step};
use super::sleep_until;
use super::tls::Accepted;
use super::writer::{Outbox, Output};
use crate::hub::{Disconnect, MessageId, Transport};
use crate::protocol::envelope::ErrorCode;
use crate::protocol::line::LineDecoder;
use crate::session::{Flow, Session};
use crate::transport::context::Context;
use crate::wire::{Emit, Wire};

/// A write buffer grown past this by a burst is released once the burst is written, so idle
/// connections stay small.
const KEEP_WRITE_BUFFER: usize = 64 * 1024;

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

/// The chat over one connection's two halves, driven by `link::drive`.
async fn serve<R, W>(reader: R, writer: W, addr: SocketAddr, _permit: Permit, ctx: Arc<Context>)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let (session, rx) = Session::start_chat(&ctx.hub, Transport::Tcp, addr, ctx.tasks.clone());
    let sub = Arc::clone(session.subscriber());
    let mut outbox = Outbox::new(rx, Arc::clone(&sub), super::stop_signal(&ctx), Wire::Line);
    let mut chat = Chat {
        reader,
        out: LineOutput {
            writer,
            buf: BytesMut::new(),
        },
        session,
        decoder: LineDecoder::new(ctx.config.max_line_bytes),
        buf: BytesMut::new(),
        last_read: Instant::now(),
        warned: false,
        idle_timeout: ctx.config.idle_timeout,
        line_flush: ctx.config.line_flush,
    };
    let reason = link::drive(&mut chat, &mut outbox).await;
    chat.session.end(reason);
    tracing::debug!(id = sub.id, %addr, ?reason, "tcp chat closed");
}

/// A chat connection's side of the driver: lines in, a batch of lines out in one write.
struct Chat<R, W> {
    reader: R,
    out: LineOutput<W>,
    session: Session,
    decoder: LineDecoder,
    /// Bytes read and not yet taken as lines.
    buf: BytesMut,
    last_read: Instant,
    /// Silent past `idle_timeout`, the client is told, and cut when it stays silent as long
    /// again (at most a minute): a person reading can answer with an empty line.
    warned: bool,
    idle_timeout: Option<Duration>,
    line_flush: Duration,
}

/// What woke a chat connection's reader.
enum Input {
    Read(std::io::Result<usize>),
    /// A partial line has waited `line_flush`: the seed's client sends a message with no
    /// newline and then waits.
    Partial,
    /// Silent past the idle timeout (or its grace, once told).
    Idle,
}

impl<R, W> Chat<R, W> {
    /// Acts on a line; `Step::Done` after `/quit`.
    fn line(&mut self, line: &str) -> Step {
        match self.session.handle_line(line) {
            Flow::Quit => Step::Done,
            Flow::Continue => Step::Continue,
        }
    }

    /// Takes every whole line out of the buffer.
    fn lines(&mut self) -> Step {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(line)) => {
                    if self.line(&line) == Step::Done {
                        return Step::Done;
                    }
                }
                Ok(None) => return Step::Continue,
                Err(e) => self.session.refuse(None, ErrorCode::BadFrame, e),
            }
        }
    }
}

impl<R, W> Link for Chat<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    type Input = Input;

    async fn recv(&mut self) -> Input {
        let flush_at = self
            .decoder
            .has_partial(&self.buf)
            .then(|| self.last_read + self.line_flush);
        let idle_at = self.idle_timeout.map(|t| {
            let grace = if self.warned {
                idle_grace(t)
            } else {
                Duration::ZERO
            };
            self.last_read + t + grace
        });
        tokio::select! {
            biased;
            _ = sleep_until(flush_at) => Input::Partial,
            _ = sleep_until(idle_at) => Input::Idle,
            read = read_some(&mut self.reader, &mut self.buf) => Input::Read(read),
        }
    }

    async fn act(&mut self, input: Input) -> Step {
        match input {
            Input::Partial => match self.decoder.flush(&mut self.buf) {
                Ok(Some(line)) => self.line(&line),
                Ok(None) => Step::Continue,
                Err(e) => {
                    self.session.refuse(None, ErrorCode::BadFrame, e);
                    Step::Continue
                }
            },
            Input::Idle if self.warned => Step::Cut(Disconnect::TimedOut),
            Input::Idle => {
                self.warned = true;
                let idle = self.idle_timeout.unwrap_or_default();
                self.session.reply(crate::reply::Reply::Idle {
                    quiet: idle.as_secs(),
                    grace: idle_grace(idle).as_secs().max(1),
                });
                Step::Continue
            }
            Input::Read(read) => {
                self.last_read = Instant::now();
                self.warned = false;
                match read {
                    Ok(0) => {
                        if let Ok(Some(line)) = self.decoder.flush(&mut self.buf) {
                            self.session.handle_line(&line);
                        }
                        Step::Done
                    }
                    Ok(_) => self.lines(),
                    Err(error) => {
                        tracing::debug!(%error, "tcp read failed");
                        Step::Gone
                    }
                }
            }
        }
    }

    async fn deliver(&mut self, outbox: &mut Outbox) -> Step {
        link::sent(outbox.send(&mut self.out).await)
    }

    async fn close(&mut self, outbox: &Outbox, reason: Option<Disconnect>) {
        if let Some(reason) = reason {
            outbox.goodbye(&mut self.out, reason).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.out.writer.shutdown()).await;
    }
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
