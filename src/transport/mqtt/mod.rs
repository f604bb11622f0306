//! MQTT 3.1.1 and 5.0, over TCP (`--mqtt`, 127.0.0.1:1883) and over WebSocket (`/mqtt`,
//! subprotocol `mqtt`): topics are rooms, so a device publishing to `sensors/kitchen/temp`
//! reaches that room's members on every transport, and an MQTT subscriber gets the room's
//! messages whoever sent them, with the same ids and order.
//!
//! `codec` is the only file naming the codec crate; `conn` is one connection; `state` what
//! connections share (client ids, parked sessions, retained messages); `sys` the `$SYS`
//! figures.

mod codec;
mod conn;
mod state;
mod sys;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::limits::Permit;
use crate::context::Context;

pub(crate) use state::Mqtt;

/// The byte stream MQTT runs over: a TCP socket, or WebSocket binary frames.
pub(crate) trait Link: Send {
    /// Reads more bytes into `buf`; 0 at the end. Cancel-safe.
    fn read(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send;
    /// Writes all of `bytes`.
    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
}

/// Any async byte stream (TCP, TLS).
struct Stream<S>(S);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Link for Stream<S> {
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        buf.reserve(4096);
        self.0.read_buf(buf).await
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes).await
    }
}

/// Serves one MQTT connection over TCP.
pub(crate) async fn handle(
    stream: TcpStream,
    addr: SocketAddr,
    _permit: Permit,
    ctx: Arc<Context>,
) {
    let _ = stream.set_nodelay(true);
    conn::serve(Stream(stream), addr, ctx).await;
}
