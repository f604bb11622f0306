//! WebSocket over real sockets with tokio-tungstenite: the seed's plain chat, structured mode,
//! echo, close codes, handshake refusals, Origin policy, pings, slow consumers, shutdown.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Line, TIMEOUT, start_server, start_with, test_config};
use switchboard::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn ws(addr: SocketAddr, path: &str) -> Ws {
    connect_async(format!("ws://{addr}{path}"))
        .await
        .expect("websocket connect")
        .0
}

/// Connects with `Sec-WebSocket-Protocol: switchboard.v1`; returns the socket and the protocol
/// the server chose.
async fn ws_v1(addr: SocketAddr, path: &str) -> (Ws, Option<String>) {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "switchboard.v1".parse().unwrap());
    let (ws, res) = connect_async(req).await.expect("websocket connect");
    let proto = res
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    (ws, proto)
}

/// The next text message, skipping pings; panics after `TIMEOUT`.
async fn text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

async fn json_msg(ws: &mut Ws) -> Value {
    serde_json::from_str(&text(ws).await).expect("json frame")
}

/// Reads JSON frames until one has `type` == `kind`.
async fn json_of(ws: &mut Ws, kind: &str) -> Value {
    for _ in 0..1000 {
        let v = json_msg(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
    panic!("no {kind} frame");
}

/// Reads until the server's close frame; returns its code and reason.
async fn close_frame(ws: &mut Ws) -> (u16, String) {
    for _ in 0..100_000 {
        match tokio::time::timeout(TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(CloseFrame { code, reason }))))) => {
                return (code.into(), reason.to_string());
            }
            Ok(Some(Ok(Message::Close(None)))) => return (1005, String::new()),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    panic!("no close frame");
}

/// Sends a raw HTTP request and returns the status code and the whole response head.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    loop {
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        got.extend_from_slice(&buf[..n]);
        if n == 0 || got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    // Read a little more for a body.
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn plain_chat_reaches_everyone_including_the_sender_and_tcp() {
    let server = start_server().await;
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    let mut a = ws(server.http(), "/ws?nick=alice").await;
    let mut b = ws(server.http(), "/ws").await;
    // a sees its own join and b's; tcp sees both joins.
    assert_eq!(text(&mut a).await, "* alice joined lobby");
    let b_join = text(&mut a).await;
    assert!(
        b_join.starts_with("* guest-") && b_join.ends_with(" joined lobby"),
        "{b_join}"
    );
    tcp.line_where(|l| l == "* alice joined lobby").await;
    tcp.line_where(|l| l.ends_with("joined lobby")).await;

    a.send(Message::text("привіт")).await.unwrap();
    assert_eq!(text(&mut a).await, "alice: привіт");
    assert_eq!(text(&mut b).await, b_join, "b sees its own join first");
    assert_eq!(text(&mut b).await, "alice: привіт");
    assert_eq!(tcp.line().await, "alice: привіт");

    tcp.say("from tcp").await;
    let from_tcp = text(&mut a).await;
    assert!(from_tcp.ends_with(": from tcp"), "{from_tcp}");
}

/// Plain `/ws` speaks the TCP chat's language: a `/msg` reaches its one recipient and is never
/// published to the room or stored; `/nick`, `/who`, `/help` are answered to the sender only;
/// `//` sends a leading slash; `/quit` closes 1000.
#[tokio::test]
async fn plain_websocket_commands_are_commands_not_room_text() {
    let server = start_server().await;
    let (mut udpguy, _) = Line::connect(server.tcp()).await;
    udpguy.say("/nick udpguy").await;
    udpguy.line_where(|l| l == "* you are now udpguy").await;
    let mut a = ws(server.http(), "/ws?nick=alice").await;
    let mut b = ws(server.http(), "/ws?nick=bob").await;
    assert_eq!(text(&mut a).await, "* alice joined lobby");
    assert_eq!(text(&mut a).await, "* bob joined lobby");
    assert_eq!(text(&mut b).await, "* bob joined lobby");

    a.send(Message::text("/msg udpguy psst")).await.unwrap();
    udpguy.line_where(|l| l == "alice -> you: psst").await;
    assert_eq!(text(&mut a).await, "you -> udpguy: psst");
    a.send(Message::text("/who")).await.unwrap();
    let who = text(&mut a).await;
    assert!(who.contains("alice") && who.contains("bob"), "{who}");
    a.send(Message::text("/help")).await.unwrap();
    assert!(text(&mut a).await.contains("/nick"));
    a.send(Message::text("//shrug")).await.unwrap();
    // bob saw none of the commands: the first thing after his join is the escaped text.
    assert_eq!(text(&mut b).await, "alice: /shrug");
    a.send(Message::text("/nick alicia")).await.unwrap();
    assert_eq!(text(&mut b).await, "* alice is now known as alicia");
    a.send(Message::text("")).await.unwrap();
    a.send(Message::text("/quit")).await.unwrap();
    let (code, _) = close_frame(&mut a).await;
    assert_eq!(code, 1000);

    let history = support::history_of(server.http(), "lobby").await;
    let texts: Vec<&str> = history.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["/shrug"], "commands are not stored: {history:?}");
    server.stop().await;
}

/// The structured protocol refuses as HTTP and gRPC do: an empty message is `bad_frame`, a
/// room name no room can have is `bad_name` (not `not_joined`), and a frame that cannot be
/// read keeps its `ref` when the ref can be read, in words without serde's positions.
#[tokio::test]
async fn structured_refusals_match_the_other_transports_and_keep_the_ref() {
    let server = start_server().await;
    let (mut c, _) = ws_v1(server.http(), "/ws?room=lobby").await;
    json_of(&mut c, "joined").await;
    let cases = [
        (
            r#"{"type":"publish","text":"   ","ref":"e1"}"#,
            "e1",
            "bad_frame",
        ),
        (
            r#"{"type":"publish","room":"a b","text":"x","ref":"n1"}"#,
            "n1",
            "bad_name",
        ),
        (
            r#"{"type":"direct","to":"nobody","text":"","ref":"d1"}"#,
            "d1",
            "bad_frame",
        ),
        (
            r#"{"type":"publish","ref":"t1","text":5}"#,
            "t1",
            "bad_frame",
        ),
    ];
    for (frame, reference, code) in cases {
        c.send(Message::text(frame)).await.unwrap();
        let error = json_of(&mut c, "error").await;
        assert_eq!(error["ref"], reference, "{frame}: {error}");
        assert_eq!(error["code"], code, "{frame}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(!message.contains("line 1"), "{frame}: {error}");
    }
    c.send(Message::text("t")).await.unwrap();
    let error = json_of(&mut c, "error").await;
    assert!(
        error["message"].as_str().unwrap().contains("not JSON"),
        "{error}"
    );
    // HTTP says the same of an empty message and of a bad name.
    let res = support::http_client()
        .post(format!("http://{}/rooms/lobby/messages", server.http()))
        .body(" ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = support::http_client()
        .post(format!("http://{}/rooms/a%20b/messages", server.http()))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["code"], "bad_name", "{v}");
    server.stop().await;
}

#[tokio::test]
async fn room_and_nick_come_from_the_query_and_are_validated() {
    let server = start_server().await;
    let mut a = ws(server.http(), "/ws?room=dev&nick=bob").await;
    assert_eq!(text(&mut a).await, "* bob joined dev");
    // A taken nick gets a suffix instead of a refusal.
    let mut b = ws(server.http(), "/ws?room=dev&nick=bob").await;
    assert_eq!(text(&mut b).await, "* bob-2 joined dev");
    let (code, res) = raw(server.http(), &upgrade_request("/ws?nick=a%20b", "")).await;
    assert_eq!(code, 400);
    assert!(res.contains("nick may contain only"), "{res}");
    let (code, res) = raw(server.http(), &upgrade_request("/ws?room=a%5Cb", "")).await;
    assert_eq!(code, 400);
    assert!(res.contains("room may contain only"), "{res}");
    let (code, res) = raw(server.http(), &upgrade_request("/ws?format=xml", "")).await;
    assert_eq!(code, 400);
    assert!(res.contains("unknown format"), "{res}");
}

#[tokio::test]
async fn structured_mode_publish_ack_join_leave_and_errors() {
    let server = start_server().await;
    let (mut a, proto) = ws_v1(server.http(), "/ws?nick=ann").await;
    assert_eq!(proto.as_deref(), Some("switchboard.v1"));
    let welcome = json_msg(&mut a).await;
    assert_eq!(
        welcome,
        json!({"type": "welcome", "nick": "ann", "rooms": ["lobby"]})
    );
    assert_eq!(json_msg(&mut a).await["type"], "join");

    // ?format=json for clients that cannot set the subprotocol.
    let mut b = ws(server.http(), "/ws?format=json&nick=ben").await;
    assert_eq!(json_of(&mut b, "welcome").await["nick"], "ben");
    let joined = json_of(&mut a, "join").await;
    assert_eq!(joined["nick"], "ben");
    assert_eq!(joined["room"], "lobby");

    a.send(Message::text(
        json!({"type": "publish", "text": "hi", "ref": "r1"}).to_string(),
    ))
    .await
    .unwrap();
    let message = json_of(&mut a, "message").await;
    let ack = json_of(&mut a, "ack").await;
    assert_eq!(ack["ref"], "r1");
    assert_eq!(ack["id"], message["id"]);
    assert_eq!(message["nick"], "ann");
    assert_eq!(message["text"], "hi");
    assert_eq!(message["room"], "lobby");
    assert!(message["time"].as_u64().unwrap() > 1_600_000_000_000);
    let seen_by_b = json_of(&mut b, "message").await;
    assert_eq!(seen_by_b, message);

    // Several rooms on one connection.
    a.send(Message::text(
        json!({"type": "join", "room": "dev", "ref": "j"}).to_string(),
    ))
    .await
    .unwrap();
    let joined = json_of(&mut a, "joined").await;
    assert_eq!(joined["room"], "dev");
    assert_eq!(joined["members"], json!(["ann"]));
    a.send(Message::text(
        json!({"type": "publish", "text": "no room"}).to_string(),
    ))
    .await
    .unwrap();
    let err = json_of(&mut a, "error").await;
    assert_eq!(err["code"], "not_joined");
    a.send(Message::text(
        json!({"type": "publish", "room": "dev", "text": "in dev"}).to_string(),
    ))
    .await
    .unwrap();
    let in_dev = json_of(&mut a, "message").await;
    assert_eq!(in_dev["room"], "dev");
    assert!(
        in_dev["id"].as_str().unwrap().ends_with("-1"),
        "dev's first id"
    );

    a.send(Message::text(
        json!({"type": "leave", "room": "lobby"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(json_of(&mut a, "left").await["room"], "lobby");
    let left = json_of(&mut b, "leave").await;
    assert_eq!(left["nick"], "ann");

    for (bad, code) in [
        ("{", "bad_frame"),
        (r#"{"type":"dance"}"#, "bad_frame"),
        (r#"{"type":"join","room":"a//b"}"#, "bad_name"),
        (
            r#"{"type":"publish","room":"nowhere","text":"x","ref":"e"}"#,
            "not_joined",
        ),
        (r#"{"type":"leave","room":"nowhere"}"#, "not_joined"),
    ] {
        a.send(Message::text(bad)).await.unwrap();
        let err = json_of(&mut a, "error").await;
        assert_eq!(err["code"], code, "{bad}: {err}");
        assert!(!err["message"].as_str().unwrap().is_empty());
    }
    // Still usable.
    a.send(Message::text(
        json!({"type": "publish", "room": "dev", "text": "ok"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(json_of(&mut a, "ack").await["room"], "dev");
}

#[tokio::test]
async fn unknown_subprotocol_is_not_echoed_back() {
    let server = start_server().await;
    let (code, res) = raw(
        server.http(),
        &upgrade_request("/ws", "Sec-WebSocket-Protocol: chat, superchat\r\n"),
    )
    .await;
    assert_eq!(code, 101);
    assert!(
        !res.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{res}"
    );
}

#[tokio::test]
async fn echo_returns_text_as_text_and_binary_as_binary() {
    let server = start_server().await;
    let mut e = ws(server.http(), "/echo").await;
    e.send(Message::text("hello")).await.unwrap();
    assert_eq!(text(&mut e).await, "hello");
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    e.send(Message::binary(blob.clone())).await.unwrap();
    match tokio::time::timeout(TIMEOUT, e.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(b, Bytes::from(blob)),
        other => panic!("expected binary, got {other:?}"),
    }
}

#[tokio::test]
async fn oversized_message_closes_1009_and_binary_closes_1003() {
    let server = start_server().await;
    let mut a = ws(server.http(), "/ws").await;
    a.send(Message::text("x".repeat(64 * 1024 + 1)))
        .await
        .unwrap();
    assert_eq!(close_frame(&mut a).await.0, 1009);

    let mut b = ws(server.http(), "/ws").await;
    b.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    let (code, reason) = close_frame(&mut b).await;
    assert_eq!(code, 1003);
    assert!(reason.contains("binary"), "{reason}");

    // Exactly at the limit is fine.
    let mut c = ws(server.http(), "/ws?nick=big").await;
    text(&mut c).await; // own join
    let body = "y".repeat(64 * 1024 - "big: ".len());
    c.send(Message::text(body.clone())).await.unwrap();
    assert_eq!(text(&mut c).await.len(), 64 * 1024);
}

#[tokio::test]
async fn malformed_handshakes_get_400_or_426_with_a_reason() {
    let server = start_server().await;
    let addr = server.http();
    let (code, res) = raw(addr, "GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(code, 400);
    assert!(res.contains("expected a WebSocket upgrade"), "{res}");
    // The same JSON error as every other HTTP refusal.
    assert!(res.contains("\"code\":\"bad_request\""), "{res}");
    assert!(
        res.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{res}"
    );
    let (code, res) = raw(addr, &upgrade_request("/ws?room=../x", "")).await;
    assert_eq!(code, 400);
    // A bad name is `bad_name` on every transport.
    assert!(res.contains("\"code\":\"bad_name\""), "{res}");
    let bad_key = upgrade_request("/ws", "").replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
    let (code, res) = raw(addr, &bad_key).await;
    assert_eq!(code, 400);
    assert!(res.contains("Sec-WebSocket-Key"), "{res}");
    let v8 = upgrade_request("/echo", "").replace("Version: 13", "Version: 8");
    let (code, res) = raw(addr, &v8).await;
    assert_eq!(code, 426);
    assert!(res.contains("\"code\":\"upgrade_required\""), "{res}");
    assert!(
        res.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{res}"
    );
    let no_conn =
        upgrade_request("/ws", "").replace("Connection: Upgrade", "Connection: keep-alive");
    let (code, _) = raw(addr, &no_conn).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn origin_policy() {
    let server = start_server().await;
    let addr = server.http();
    let with_origin = |o: &str| upgrade_request("/ws", &format!("Origin: {o}\r\n"));
    let (code, res) = raw(addr, &with_origin("https://evil.example")).await;
    assert_eq!(code, 403);
    assert!(
        res.contains("origin https://evil.example is not allowed"),
        "{res}"
    );
    for ok in [
        "http://localhost:8000",
        "http://127.0.0.1:3000",
        "null",
        "http://127.0.0.1",
    ] {
        let (code, res) = raw(addr, &with_origin(ok)).await;
        assert_eq!(code, 101, "{ok}: {res}");
    }
    let allowed = start_with(Config {
        allowed_origins: vec!["https://app.example".into()],
        ..test_config()
    })
    .await;
    let (code, _) = raw(allowed.http(), &with_origin("https://app.example")).await;
    assert_eq!(code, 101);
    let (code, _) = raw(allowed.http(), &with_origin("https://other.example")).await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn idle_clients_are_pinged_and_dead_ones_dropped() {
    let server = start_with(Config {
        ws_ping_interval: Duration::from_secs(1),
        ws_pong_timeout: Duration::from_secs(1),
        ..test_config()
    })
    .await;
    let mut live = ws(server.http(), "/ws").await;
    let mut pinged = false;
    for _ in 0..100 {
        match tokio::time::timeout(TIMEOUT, live.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => {
                pinged = true;
                break;
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("{other:?}"),
        }
    }
    assert!(pinged, "server pings an idle client");

    // A peer that completed the handshake and then went silent (no pongs) is dropped.
    let mut dead = TcpStream::connect(server.http()).await.unwrap();
    dead.write_all(upgrade_request("/ws", "").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match dead.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert_eq!(
        closed,
        Ok(true),
        "dead peer closed within ping + pong timeout"
    );
}

#[tokio::test]
async fn a_websocket_client_that_never_reads_is_closed_1008_and_others_get_everything() {
    let server = start_with(Config {
        queue_capacity: 256,
        ..support::flood_config()
    })
    .await;
    let mut stalled = ws(server.http(), "/ws?nick=stalled").await;
    let mut fast = ws(server.http(), "/ws?nick=fast").await;
    let (publisher, _) = Line::connect(server.tcp()).await;
    text(&mut fast).await; // own join
    text(&mut fast).await; // publisher's join

    const COUNT: usize = 6_000;
    let (p_read, p_write) = publisher.into_parts();
    let writer = support::flood(p_write, COUNT, 4_000);
    let mut next = 0;
    let mut saw_cut = false;
    while next < COUNT {
        let m = text(&mut fast).await;
        if m == "* stalled left lobby (slow consumer)" {
            saw_cut = true;
            continue;
        }
        let (_, body) = m.split_once(": ").unwrap_or_else(|| panic!("{m:.80}"));
        let n: usize = body.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, next, "in order, nothing lost");
        next += 1;
    }
    writer.await.unwrap();
    drop(p_read);
    assert!(saw_cut, "stalled client cut");
    let (code, reason) = close_frame(&mut stalled).await;
    assert_eq!((code, reason.as_str()), (1008, "slow consumer"));
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001() {
    let server = start_server().await;
    let mut a = ws(server.http(), "/ws").await;
    let mut e = ws(server.http(), "/echo").await;
    text(&mut a).await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(close_frame(&mut a).await.0, 1001);
    assert_eq!(close_frame(&mut e).await.0, 1001);
    tokio::time::timeout(TIMEOUT, stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn index_page_is_served() {
    let server = start_server().await;
    let (code, res) = raw(
        server.http(),
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200);
    assert!(res.contains("text/html"), "{res}");
}

/// Plain connections get whole pre-encoded frames from the server (`wire::ws_frames`): every
/// length form arrives intact (7-bit up to 125, 16-bit up to 65,535, 64-bit above), live and
/// replayed, plain and structured, beside the server's own answers.
#[tokio::test]
async fn frames_of_every_length_arrive_whole_live_and_replayed() {
    let server = start_with(Config {
        ws_max_message: 256 * 1024,
        max_line_bytes: 256 * 1024,
        ..support::flood_config()
    })
    .await;
    let mut plain = ws(server.http(), "/ws?room=sizes&nick=alice").await;
    assert_eq!(text(&mut plain).await, "* alice joined sizes");
    let (mut json, _) = ws_v1(server.http(), "/ws?room=sizes&nick=bob").await;
    json_of(&mut json, "joined").await;
    text(&mut plain).await; // bob's join
    // "alice: " is 7 bytes: these cross each length form's edge in the plain payload.
    let sizes = [1, 118, 119, 120, 200, 65_528, 65_529, 70_000, 200_000];
    let texts: Vec<String> = sizes
        .iter()
        .map(|&n| (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect())
        .collect();
    for body in &texts {
        plain.send(Message::text(body.clone())).await.unwrap();
        assert_eq!(text(&mut plain).await, format!("alice: {body}"));
        let message = json_of(&mut json, "message").await;
        assert_eq!(message["text"], body.as_str());
    }
    // A late reader resumes from another epoch's start: one replay holding every size.
    let (mut late, _) = ws_v1(server.http(), "/ws?room=sizes&since=00000000-0").await;
    for body in &texts {
        let message = json_of(&mut late, "message").await;
        assert_eq!(message["text"], body.as_str(), "replayed");
    }
    server.stop().await;
}
