//! The seam between switchboard and its WebSocket library (sockudo-ws).
//!
//! Only this file names the library. sockudo-ws was chosen because it passes all 517
//! Autobahn cases including permessage-deflate, which axum's built-in WebSocket
//! (tokio-tungstenite) and fastwebsockets do not offer. Swapping it means reimplementing
//! `WsSocket` and `negotiate_deflate` here.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use sockudo_ws::deflate::DeflateConfig;
use sockudo_ws::{CompressedWebSocketStream, Message, WebSocketStream};

type Io = Linger;

/// The upgraded connection, closed gently: when the WebSocket is dropped, our side is shut
/// down and whatever the peer is still sending is read and discarded for a moment before the
/// socket is closed. Closing a socket with unread input makes the kernel send RST, which can
/// destroy the close frame we just sent (for example 1009 while the peer is still uploading
/// the oversized message) before the peer reads it.
pub struct Linger {
    io: Option<TokioIo<hyper::upgrade::Upgraded>>,
    /// A close frame to write before shutting down, set when the library failed the
    /// connection without sending one (it abandons output on protocol errors).
    farewell: Farewell,
}

/// Shared between `WsSocket` and its `Linger`.
type Farewell = Arc<Mutex<Option<Bytes>>>;

/// How long and how much a closing connection may still be drained.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

impl Drop for Linger {
    fn drop(&mut self) {
        let Some(mut io) = self.io.take() else { return };
        let farewell = self.farewell.lock().ok().and_then(|mut f| f.take());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tokio::time::timeout(LINGER_TIME, async {
                if let Some(frame) = farewell {
                    let _ = io.write_all(&frame).await;
                }
                let _ = io.shutdown().await;
                let mut buf = [0u8; 4096];
                let mut drained = 0;
                while drained < LINGER_BYTES {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => drained += n,
                    }
                }
            })
            .await;
        });
    }
}

impl Linger {
    fn io(&mut self) -> std::pin::Pin<&mut TokioIo<hyper::upgrade::Upgraded>> {
        std::pin::Pin::new(self.io.as_mut().expect("io present until drop"))
    }
}

impl tokio::io::AsyncRead for Linger {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Linger {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.io().poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // Deferred to drop, so that a farewell close frame can still be written first.
        std::task::Poll::Ready(Ok(()))
    }
}

/// A message as the transports see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    /// A complete, UTF-8 validated text message.
    Text(Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// The peer started the close handshake (the library answers it).
    Close,
    /// Ping or pong; answered by the library, no action needed.
    Control,
}

/// Per-connection limits and timers handed to the library.
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    /// Largest message after reassembly and decompression; larger ones close with 1009.
    pub max_message: usize,
    /// Send a ping after this many seconds without inbound traffic.
    pub ping_interval_secs: u32,
    /// Close (1001) when the pong does not come back within this many seconds.
    pub pong_timeout_secs: u32,
}

/// The deflate parameters agreed in the handshake.
#[derive(Debug, Clone)]
pub struct Deflate(DeflateConfig);

/// Picks permessage-deflate parameters from the client's `Sec-WebSocket-Extensions` offers.
/// Returns the response header value and the agreed parameters, or `None` to not compress.
pub fn negotiate_deflate(offers: &str) -> Option<(String, Deflate)> {
    let negotiated =
        sockudo_ws::deflate::negotiate_server_deflate(offers, &DeflateConfig::default())?;
    Some((negotiated.to_response_header(), Deflate(negotiated.config)))
}

/// An open WebSocket connection, server side.
pub struct WsSocket {
    stream: Stream,
    farewell: Farewell,
    /// The unwritten rest of a frame `write_frames` was writing when its future was dropped
    /// (the client was kicked while its socket was full): nothing else can be written before
    /// it, so `close` finishes it first.
    partial: Option<Bytes>,
}

enum Stream {
    /// Without compression.
    Plain(Box<WebSocketStream<Io>>),
    /// With permessage-deflate.
    Deflate(Box<CompressedWebSocketStream<Io>>),
}

impl std::fmt::Debug for Linger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Linger")
    }
}

impl std::fmt::Debug for WsSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.stream {
            Stream::Plain(_) => f.write_str("WsSocket::Plain"),
            Stream::Deflate(_) => f.write_str("WsSocket::Deflate"),
        }
    }
}

/// A WebSocket failure; the library has already sent the right close frame when one applies.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WsError(String);

/// Initial capacity of a compressed connection's write buffer. The library's default is
/// 16 KiB, which a connection touches in full after a few dozen small frames and then keeps
/// resident for its lifetime; the buffer grows when a big batch needs it.
const WRITE_BUFFER: usize = 4 * 1024;
/// The same for an uncompressed connection, whose data frames bypass the library
/// (`WsSocket::write_frames`): only pings, pongs and the close frame go through it.
const CONTROL_BUFFER: usize = 256;
/// Most frames handed to the kernel in one `writev`: a whole writer batch.
const IOV_MAX: usize = 64;
/// How long a closing connection may take to finish a frame that was cut off midway.
const PARTIAL_FRAME_TIME: std::time::Duration = std::time::Duration::from_secs(2);

fn config(limits: WsLimits, write_buffer: usize) -> sockudo_ws::Config {
    sockudo_ws::Config {
        max_message_size: limits.max_message,
        max_frame_size: limits.max_message,
        // Dead peers are found by ping/pong; a quiet but live client is never cut.
        idle_timeout: 0,
        auto_ping: limits.ping_interval_secs > 0,
        ping_interval: limits.ping_interval_secs,
        pong_timeout: limits.pong_timeout_secs,
        write_buffer_size: write_buffer,
        ..Default::default()
    }
}

impl WsSocket {
    /// Wraps an upgraded connection.
    pub fn server(
        upgraded: hyper::upgrade::Upgraded,
        limits: WsLimits,
        deflate: Option<Deflate>,
    ) -> Self {
        let farewell = Farewell::default();
        let io = Linger {
            io: Some(TokioIo::new(upgraded)),
            farewell: Arc::clone(&farewell),
        };
        let stream = match deflate {
            Some(Deflate(d)) => Stream::Deflate(Box::new(CompressedWebSocketStream::server(
                io,
                config(limits, WRITE_BUFFER),
                d,
            ))),
            None => Stream::Plain(Box::new(WebSocketStream::server(
                io,
                config(limits, CONTROL_BUFFER),
            ))),
        };
        WsSocket {
            stream,
            farewell,
            partial: None,
        }
    }

    /// The next message; `None` once the connection is closed. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Result<WsMessage, WsError>> {
        let next = match &mut self.stream {
            Stream::Plain(s) => s.next().await,
            Stream::Deflate(s) => s.next().await,
        }?;
        Some(match next {
            Ok(Message::Text(b)) => Ok(WsMessage::Text(b)),
            Ok(Message::Binary(b)) => Ok(WsMessage::Binary(b)),
            Ok(Message::Close(_)) => Ok(WsMessage::Close),
            Ok(Message::Ping(_) | Message::Pong(_)) => Ok(WsMessage::Control),
            Err(e) => {
                if let Some((code, reason)) = close_for(&e)
                    && let Ok(mut slot) = self.farewell.lock()
                {
                    *slot = Some(close_frame(code, reason));
                }
                Err(WsError(e.to_string()))
            }
        })
    }

    /// Queues a message without flushing, so several can go out in one write.
    pub async fn feed(&mut self, message: WsMessage) -> Result<(), WsError> {
        let message = match message {
            WsMessage::Text(b) => Message::Text(b),
            WsMessage::Binary(b) => Message::Binary(b),
            WsMessage::Close | WsMessage::Control => return Ok(()),
        };
        match &mut self.stream {
            Stream::Plain(s) => s.feed(message).await,
            Stream::Deflate(s) => s.feed(message).await,
        }
        .map_err(|e| WsError(e.to_string()))
    }

    /// True when data frames can be written whole (`write_frames`): the connection is not
    /// compressed, so its frames are the same bytes as every other such connection's.
    pub fn takes_frames(&self) -> bool {
        matches!(self.stream, Stream::Plain(_))
    }

    /// Writes whole, final, unmasked data frames (made by `wire::ws_frames`) with vectored
    /// writes straight to the socket, after whatever control frames the library has queued,
    /// and flushes. The shared bytes are not copied into a per-connection buffer. The
    /// connection task runs this between the library's own reads and writes; if it drops
    /// the future midway, the frame cut off is kept and `close` finishes it first.
    pub async fn write_frames(&mut self, frames: &[&[u8]]) -> Result<(), WsError> {
        let Stream::Plain(stream) = &mut self.stream else {
            return Err(WsError(
                "a compressed connection takes messages, not frames".into(),
            ));
        };
        if stream.is_closed() {
            return Err(WsError("connection closed".into()));
        }
        if self.partial.is_some() {
            return Err(WsError("a frame was left unfinished".into()));
        }
        SinkExt::flush(stream.as_mut())
            .await
            .map_err(|e| WsError(e.to_string()))?;
        write_all_vectored(stream.get_mut(), frames, &mut self.partial)
            .await
            .map_err(|e| WsError(e.to_string()))
    }

    /// Writes everything fed so far.
    pub async fn flush(&mut self) -> Result<(), WsError> {
        match &mut self.stream {
            Stream::Plain(s) => SinkExt::flush(s.as_mut()).await,
            Stream::Deflate(s) => SinkExt::flush(s.as_mut()).await,
        }
        .map_err(|e| WsError(e.to_string()))
    }

    /// Starts the close handshake with `code` and `reason` and waits (bounded by the library's
    /// close timeout) for it to finish.
    pub async fn close(&mut self, code: u16, reason: &str) {
        if let Some(rest) = self.partial.take() {
            // A frame was cut off midway: the close frame can only follow its rest. A client
            // that does not take it in time is dropped without one.
            use tokio::io::AsyncWriteExt;
            let Stream::Plain(stream) = &mut self.stream else {
                return;
            };
            let io = stream.get_mut();
            let finished = tokio::time::timeout(PARTIAL_FRAME_TIME, async {
                io.write_all(&rest).await?;
                io.flush().await
            })
            .await;
            if !matches!(finished, Ok(Ok(()))) {
                return;
            }
        }
        let _ = match &mut self.stream {
            Stream::Plain(s) => WebSocketStream::close(s, code, reason).await,
            Stream::Deflate(s) => CompressedWebSocketStream::close(s, code, reason).await,
        };
    }
}

/// Writes every byte of `frames` in as few `writev` calls as the socket allows, then flushes
/// (TLS holds its records until then). A transport that cannot write vectored gets one
/// coalesced buffer instead of one syscall per frame. While a write waits, `partial` holds
/// the rest of the frame it is in, for the case that this future is dropped there.
async fn write_all_vectored(
    io: &mut Io,
    frames: &[&[u8]],
    partial: &mut Option<Bytes>,
) -> std::io::Result<()> {
    use std::io::IoSlice;
    use tokio::io::AsyncWriteExt;
    if !tokio::io::AsyncWrite::is_write_vectored(io) {
        let mut joined = Vec::with_capacity(frames.iter().map(|f| f.len()).sum());
        for frame in frames {
            joined.extend_from_slice(frame);
        }
        let mut joined = Bytes::from(joined);
        while !joined.is_empty() {
            *partial = Some(joined.clone());
            let written = io.write(&joined).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            joined = joined.slice(written..);
        }
        *partial = None;
        return io.flush().await;
    }
    // The next frame to write, and how much of it is already written.
    let (mut next, mut done) = (0, 0);
    while next < frames.len() {
        // Only a frame begun and not finished needs its rest kept (copied: the socket was
        // full, which is not the hot path).
        *partial = (done > 0).then(|| Bytes::copy_from_slice(&frames[next][done..]));
        let mut slices = [IoSlice::new(&[]); IOV_MAX];
        let mut count = 0;
        for (i, frame) in frames[next..].iter().take(IOV_MAX).enumerate() {
            slices[i] = IoSlice::new(if i == 0 { &frame[done..] } else { frame });
            count = i + 1;
        }
        let mut written = io.write_vectored(&slices[..count]).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while next < frames.len() && written >= frames[next].len() - done {
            written -= frames[next].len() - done;
            next += 1;
            done = 0;
        }
        done += written;
    }
    *partial = None;
    io.flush().await
}

/// The close code RFC 6455 (section 7.4.1) prescribes for a failure the library detected
/// while reading, or `None` when the peer is simply gone.
fn close_for(error: &sockudo_ws::Error) -> Option<(u16, &'static str)> {
    use sockudo_ws::Error as E;
    match error {
        E::MessageTooLarge | E::FrameTooLarge | E::Capacity(_) => Some((1009, "message too big")),
        E::InvalidUtf8 => Some((1007, "invalid UTF-8")),
        E::InvalidFrame(_) | E::Protocol(_) | E::InvalidCloseCode(_) | E::Compression(_) => {
            Some((1002, "protocol error"))
        }
        _ => None,
    }
}

/// An unmasked server close frame (RFC 6455 section 5.5.1); the payload is under 126 bytes.
fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut frame = Vec::with_capacity(4 + reason.len());
    frame.push(0x88);
    frame.push((2 + reason.len()) as u8);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason.as_bytes());
    Bytes::from(frame)
}
