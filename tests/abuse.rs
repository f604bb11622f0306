//! Hostile input, real sockets: what a client sends must not attack another user's terminal,
//! and names that would read as directories are refused.

mod support;

use futures_util::SinkExt;
use support::{Line, TIMEOUT, start_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Sequences a terminal acts on: OSC 52 (clipboard write), OSC 0 (window title), clear
/// screen, carriage return and backspace overwrites, a C1 CSI, and a bidi override.
const ATTACK: &str =
    "\u{1b}]52;c;ZXZpbA==\u{7}\u{1b}]0;pwned\u{7}\u{1b}[2J\rfake\u{8}\u{9b}1m\u{202e}gnp.exe";

#[tokio::test]
async fn no_escape_byte_reaches_a_tcp_client_from_tcp_websocket_or_http() {
    let server = start_server().await;
    let reader = Line::connect(server.tcp()).await.0;
    let (mut reader, _keep) = reader.into_parts();
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    tcp.say(&format!("tcp:{ATTACK}")).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.http()))
        .await
        .unwrap();
    ws.send(Message::text(format!("ws:{ATTACK}")))
        .await
        .unwrap();
    let res = reqwest::Client::new()
        .post(format!("http://{}/rooms/lobby/messages", server.http()))
        .body(format!("http:{ATTACK}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    let mut got = Vec::new();
    let all_three = |b: &[u8]| {
        let text = String::from_utf8_lossy(b);
        ["tcp:", "ws:", "http:"].iter().all(|p| text.contains(p))
            && text.matches("exe").count() >= 3
    };
    tokio::time::timeout(TIMEOUT, async {
        let mut buf = [0u8; 4096];
        while !all_three(&got) {
            let n = reader.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("all three messages arrive");
    let text = String::from_utf8(got).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "an ESC byte reached the terminal: {text:?}"
    );
    let bad: Vec<char> = text
        .chars()
        .filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202e}')
        .collect();
    assert!(
        bad.is_empty(),
        "controls reached the terminal: {bad:?} in {text:?}"
    );
    assert!(
        text.contains("\u{241b}]52;c;"),
        "shown as text instead: {text:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn dot_rooms_are_refused_everywhere() {
    let server = start_server().await;
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    tcp.say("/join ..").await;
    let refused = tcp.line_where(|l| l.starts_with("ERR")).await;
    assert!(refused.contains("must not be . or .."), "{refused}");
    // Clients normalise `..` away, so the request goes out raw, as an attacker would send it.
    let mut raw = tokio::net::TcpStream::connect(server.http()).await.unwrap();
    raw.write_all(
        b"POST /rooms/../messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(TIMEOUT, raw.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("must not be . or .."), "{answer}");
    let status =
        match tokio_tungstenite::connect_async(format!("ws://{}/ws?room=.", server.http())).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
            other => panic!("room . was accepted: {other:?}"),
        };
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn a_bad_query_number_gets_the_json_error() {
    let server = start_server().await;
    let res = reqwest::Client::new()
        .get(format!(
            "http://{}/rooms/lobby/messages?limit=99999999999999999999999",
            server.http()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.expect("a JSON body");
    assert_eq!(body["code"], "bad_request");
    assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    server.stop().await;
}
