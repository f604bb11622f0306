//! Direct messages, written once in the session: TCP → WebSocket → UDP, HTTP → TCP,
//! UDP → TCP, and SSE and the seed's plain WebSocket as receivers; an unknown nick is a clear
//! error on every transport.

mod support;

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Line, TIMEOUT, Udp, start_server};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn ws(addr: SocketAddr, path: &str) -> Ws {
    connect_async(format!("ws://{addr}{path}"))
        .await
        .expect("websocket connect")
        .0
}

/// The next text frame; panics after `TIMEOUT`.
async fn text(ws: &mut Ws) -> String {
    loop {
        let next = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("a frame");
        if let Message::Text(t) = next {
            return t.to_string();
        }
    }
}

/// The next JSON frame whose type is `kind`, skipping others (joins, leaves).
async fn frame_of(ws: &mut Ws, kind: &str) -> Value {
    for _ in 0..50 {
        let v: Value = serde_json::from_str(&text(ws).await).unwrap();
        if v["type"] == kind {
            return v;
        }
    }
    panic!("no {kind} frame");
}

async fn post_direct(addr: SocketAddr, to: &str, nick: &str, text: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/users/{to}/messages"))
        .header("x-nick", nick)
        .header("content-type", "text/plain")
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn direct_messages_cross_every_transport() {
    let server = start_server().await;
    let (mut alice, _) = Line::connect(server.tcp()).await;
    alice.say("/nick alice").await;
    assert_eq!(alice.line().await, "* you are now alice");
    let mut bob = ws(server.http(), "/ws?format=json&nick=bob").await;
    frame_of(&mut bob, "joined").await;
    let carol = Udp::connect(server.udp()).await;
    carol.send("/nick carol").await;
    carol.recv_where(|d| d == "* you are now carol").await;

    // TCP → WebSocket: the receiver sees who from and to; the sender gets a confirmation.
    alice.say("/msg bob hi bob").await;
    let got = frame_of(&mut bob, "direct").await;
    assert_eq!(
        (&got["from"], &got["to"], &got["text"]),
        (&json!("alice"), &json!("bob"), &json!("hi bob"))
    );
    assert!(got["time"].is_u64(), "{got}");
    let confirmation = alice.line_where(|l| l.starts_with("you -> ")).await;
    assert_eq!(confirmation, "you -> bob: hi bob");

    // WebSocket → UDP, acknowledged like a publish.
    let send = json!({"type": "direct", "to": "carol", "text": "hi carol", "ref": "d1"});
    bob.send(Message::text(send.to_string())).await.unwrap();
    let sent = frame_of(&mut bob, "sent").await;
    assert_eq!((&sent["ref"], &sent["to"]), (&json!("d1"), &json!("carol")));
    carol.recv_where(|d| d == "bob -> you: hi carol").await;

    // HTTP → TCP.
    let (status, body) = post_direct(server.http(), "alice", "svc", "from http").await;
    assert_eq!((status, &body["to"]), (201, &json!("alice")));
    alice.line_where(|l| l == "svc -> you: from http").await;

    // UDP → TCP, nicks compared case-insensitively.
    carol.send("/msg ALICE back at you").await;
    alice.line_where(|l| l == "carol -> you: back at you").await;
    // A datagram may hold several lines: each is attributed, on both ends.
    carol.send("/msg alice two\nlines").await;
    carol
        .recv_where(|d| d == "you -> alice: two\nyou -> alice: lines")
        .await;
    alice.line_where(|l| l == "carol -> you: two").await;
    assert_eq!(alice.line().await, "carol -> you: lines");
    server.stop().await;
}

#[tokio::test]
async fn the_seeds_plain_websocket_and_sse_receive_direct_messages() {
    let server = start_server().await;
    let mut plain = ws(server.http(), "/ws?nick=pat").await;
    let sse = reqwest::Client::new()
        .get(format!("http://{}/events?nick=sam", server.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    // SSE has joined once its first block is out; read it before sending.
    let mut body = sse.bytes_stream();
    let first = tokio::time::timeout(TIMEOUT, body.next()).await.unwrap();
    assert!(String::from_utf8_lossy(&first.unwrap().unwrap()).contains("event: joined"));

    tcp.say("/msg pat psst").await;
    tcp.say("/msg sam psst too").await;
    let mut seen = String::new();
    for _ in 0..20 {
        if seen.contains("event: direct") {
            break;
        }
        let chunk = tokio::time::timeout(TIMEOUT, body.next()).await.unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    assert!(seen.contains("event: direct\ndata: {"), "{seen}");
    assert!(seen.contains("\"text\":\"psst too\""), "{seen}");
    for _ in 0..20 {
        if text(&mut plain).await.ends_with(" -> you: psst") {
            return server.stop().await;
        }
    }
    panic!("the plain client saw no direct message");
}

#[tokio::test]
async fn an_unknown_nick_is_a_clear_error_everywhere() {
    let server = start_server().await;
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    tcp.say("/msg nobody hello").await;
    assert_eq!(tcp.line().await, "ERR no such user nobody");
    tcp.say("/msg").await;
    assert_eq!(tcp.line().await, "ERR usage: /msg NICK TEXT");

    let mut ws = ws(server.http(), "/ws?format=json").await;
    frame_of(&mut ws, "joined").await;
    let send = json!({"type": "direct", "to": "nobody", "text": "x", "ref": "e1"});
    ws.send(Message::text(send.to_string())).await.unwrap();
    let err = frame_of(&mut ws, "error").await;
    assert_eq!(
        (&err["ref"], &err["code"]),
        (&json!("e1"), &json!("no_such_user"))
    );

    let (status, body) = post_direct(server.http(), "nobody", "svc", "x").await;
    assert_eq!((status, &body["code"]), (404, &json!("no_such_user")));
    let (status, _) = post_direct(server.http(), "bad%20nick", "svc", "x").await;
    assert_eq!(status, 400);

    let udp = Udp::connect(server.udp()).await;
    udp.send("/msg nobody x").await;
    udp.recv_where(|d| d == "ERR no such user nobody").await;
    server.stop().await;
}
