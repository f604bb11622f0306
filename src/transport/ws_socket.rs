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

/// Initial capacity of a connection's write buffer. The library's default is 16 KiB, which a
/// connection touches in full after a few dozen small frames and then keeps resident for its
/// lifetime; the buffer grows when a big batch needs it.
const WRITE_BUFFER: usize = 4 * 1024;

fn config(limits: WsLimits) -> sockudo_ws::Config {
    sockudo_ws::Config {
        max_message_size: limits.max_message,
        max_frame_size: limits.max_message,
        // Dead peers are found by ping/pong; a quiet but live client is never cut.
        idle_timeout: 0,
        auto_ping: limits.ping_interval_secs > 0,
        ping_interval: limits.ping_interval_secs,
        pong_timeout: limits.pong_timeout_secs,
        write_buffer_size: WRITE_BUFFER,
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
                config(limits),
                d,
            ))),
            None => Stream::Plain(Box::new(WebSocketStream::server(io, config(limits)))),
        };
        WsSocket { stream, farewell }
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
        let _ = match &mut self.stream {
            Stream::Plain(s) => WebSocketStream::close(s, code, reason).await,
            Stream::Deflate(s) => CompressedWebSocketStream::close(s, code, reason).await,
        };
    }
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
