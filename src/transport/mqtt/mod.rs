//! MQTT 3.1.1 and 5.0, over TCP (`--mqtt`, 127.0.0.1:1883) and over WebSocket (`/mqtt`,
//! subprotocol `mqtt`): topics are rooms, so a device publishing to `sensors/kitchen/temp`
//! reaches that room's members on every transport, and an MQTT subscriber gets the room's
//! messages whoever sent them, with the same ids and order.
//!
//! Packets are `crate::protocol::mqtt`'s (here `codec`, the only file naming the codec crate)
//! and a message's PUBLISH is `crate::wire`'s; `conn` is one connection; `state` what
//! connections share (client ids, parked sessions, retained messages); `sys` the `$SYS`
//! figures.

mod conn;
pub(crate) mod state;

use crate::protocol::mqtt as codec;
mod sys;
mod window;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::limits::Permit;
use super::ws_socket::{WsMessage, WsSocket};
use crate::transport::context::Context;

pub(crate) use state::Mqtt;

/// The byte stream MQTT runs over: a TCP socket, or WebSocket binary frames.
pub(crate) trait Pipe: Send {
    /// Reads more bytes into `buf`; 0 at the end. Cancel-safe.
    fn read(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send;
    /// Writes all of `bytes`.
    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
}

/// A TCP socket. A read waits for the socket to be readable before it takes a buffer, so a
/// quiet connection holds none (the connection drops its buffer whenever it is empty).
struct Tcp(TcpStream);

impl Pipe for Tcp {
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            self.0.readable().await?;
            buf.reserve(4096);
            match self.0.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                read => return read,
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes).await
    }
}

/// Any other byte stream (TLS).
struct Stream<S>(S);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Pipe for Stream<S> {
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        buf.reserve(4096);
        self.0.read_buf(buf).await
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes).await
    }
}

/// Serves one MQTT connection over TCP, with TLS when the listener has an acceptor.
pub(crate) async fn handle(
    stream: TcpStream,
    addr: SocketAddr,
    _permit: Permit,
    ctx: Arc<Context>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    match super::tls::accept(stream, addr, tls.as_ref()).await {
        Some(super::tls::Accepted::Plain(stream)) => conn::serve(Tcp(stream), addr, ctx).await,
        Some(super::tls::Accepted::Tls(stream)) => conn::serve(Stream(*stream), addr, ctx).await,
        None => {}
    }
}

/// MQTT over WebSocket: binary frames carry the byte stream, split anywhere.
struct Frames(WsSocket);

impl Pipe for Frames {
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            match self.0.recv().await {
                Some(Ok(WsMessage::Binary(bytes))) if !bytes.is_empty() => {
                    buf.extend_from_slice(&bytes);
                    return Ok(bytes.len());
                }
                Some(Ok(WsMessage::Binary(_) | WsMessage::Control)) => {}
                Some(Ok(WsMessage::Text(_))) => {
                    self.0
                        .close(1003, "MQTT over WebSocket is binary frames")
                        .await;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "text frame"));
                }
                Some(Ok(WsMessage::Close)) | None => return Ok(0),
                Some(Err(error)) => return Err(io::Error::other(error)),
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let frame = WsMessage::Binary(Bytes::copy_from_slice(bytes));
        self.0.feed(frame).await.map_err(io::Error::other)?;
        self.0.flush().await.map_err(io::Error::other)
    }
}

/// Serves one MQTT connection over an upgraded WebSocket.
pub(crate) async fn handle_ws(ws: WsSocket, addr: SocketAddr, ctx: Arc<Context>) {
    conn::serve(Frames(ws), addr, ctx).await;
}

/// See `crate::fuzz::mqtt_packets`.
pub(crate) fn fuzz_packets(data: &[u8]) {
    use codec::{Inbound, Outbound, Version};
    const MAX: usize = 512;
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut version = match first % 3 {
        0 => None,
        1 => Some(Version::V4),
        _ => Some(Version::V5),
    };
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(usize::from(first % 13) + 1) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match codec::decode(version, &mut buf, MAX) {
                Ok(Some(packet)) => {
                    assert!(buf.len() < before, "a packet consumed nothing");
                    if let Inbound::Connect(connect) = &packet {
                        version = Some(connect.version);
                    }
                    if let (Inbound::Publish(p), Some(v)) = (&packet, version) {
                        let mut out = BytesMut::new();
                        let publish = Outbound::Publish {
                            topic: &p.topic,
                            payload: &p.payload,
                            qos: p.qos,
                            pkid: p.pkid.max(1),
                            retain: p.retain,
                            dup: false,
                            id: None,
                        };
                        codec::encode(v, &publish, &mut out);
                        match codec::decode(Some(v), &mut out, usize::MAX >> 4) {
                            Ok(Some(Inbound::Publish(back))) => {
                                assert_eq!((&back.topic, &back.payload), (&p.topic, &p.payload));
                            }
                            other => panic!("a PUBLISH did not encode back: {other:?}"),
                        }
                    }
                }
                Ok(None) => break,
                // The connection ends at the first error.
                Err(_) => return,
            }
        }
        assert!(buf.len() <= MAX + 5 + 13, "buffer grew to {}", buf.len());
    }
}
