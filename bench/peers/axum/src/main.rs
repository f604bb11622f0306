//! Comparison peer: the straightforward axum chat. Every text message on /ws is broadcast to
//! every client, sender included, through one `tokio::sync::broadcast` channel.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast;

#[tokio::main]
async fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".into())
        .parse()
        .expect("address");
    let (tx, _) = broadcast::channel::<String>(1024);
    let app = Router::new().route("/ws", get(ws)).with_state(tx);
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    // PEER_NODELAY=1: the same server with Nagle off on accepted sockets (axum's default
    // leaves it on), the other half of the comparison.
    if std::env::var("PEER_NODELAY").is_ok_and(|v| v == "1") {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await.expect("serve");
    } else {
        axum::serve(listener, app).await.expect("serve");
    }
}

async fn ws(upgrade: WebSocketUpgrade, State(tx): State<broadcast::Sender<String>>) -> impl IntoResponse {
    upgrade.on_upgrade(move |socket| client(socket, tx))
}

async fn client(socket: WebSocket, tx: broadcast::Sender<String>) {
    let (mut sink, mut stream) = socket.split();
    let mut rx = tx.subscribe();
    let forward = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(text) => {
                    if sink.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        if let Message::Text(text) = message {
            let _ = tx.send(text.to_string());
        }
    }
    forward.abort();
}
