//! The seed's echo server: every byte received is sent back unchanged, on TCP and UDP.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use super::limits::Permit;
use crate::transport::context::Context;

/// Echoes one TCP connection until the peer closes its side or the server shuts down.
pub(crate) async fn handle_tcp(
    mut stream: TcpStream,
    addr: SocketAddr,
    _permit: Permit,
    shared: Arc<Context>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.split();
    let stop = super::stop_signal(&shared);
    let copied = tokio::select! {
        _ = stop.cancelled() => None,
        copied = tokio::io::copy(&mut reader, &mut writer) => Some(copied),
    };
    let _ = writer.shutdown().await;
    tracing::debug!(%addr, ?copied, "echo connection closed");
}

/// Echoes every datagram back to its sender until shutdown.
pub(crate) async fn serve_udp(socket: UdpSocket, shared: Arc<Context>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, addr) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::debug!(%error, "udp echo recv failed");
                    continue;
                }
            },
        };
        if let Err(error) = socket.send_to(&buf[..len], addr).await {
            tracing::debug!(%addr, %error, "udp echo send failed");
        }
    }
}
