//! TCP chat over real sockets: broadcast, commands, errors, limits, slow consumers, shutdown.

mod support;

use std::time::Duration;

use support::{Line, TIMEOUT, start_server, start_with, test_config};
use switchboard::Config;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn line_reaches_every_other_client_but_not_the_sender() {
    let server = start_server().await;
    let (mut a, nick_a) = Line::connect(server.tcp()).await;
    let (mut b, nick_b) = Line::connect(server.tcp()).await;
    let (mut c, _) = Line::connect(server.tcp()).await;
    a.line_where(|l| l.contains(&format!("{nick_b} joined")))
        .await;
    b.line_where(|l| l.contains("joined")).await; // c joined

    a.say("hello room").await;
    let expected = format!("{nick_a}: hello room");
    assert_eq!(b.line().await, expected);
    assert_eq!(c.line().await, expected);
    // a sees c's join, then nothing of its own message.
    a.line_where(|l| l.contains("joined")).await;
    a.expect_silence(Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn text_without_newline_is_delivered_after_a_pause() {
    let server = start_server().await;
    let (mut a, nick_a) = Line::connect(server.tcp()).await;
    let (mut b, _) = Line::connect(server.tcp()).await;
    a.line_where(|l| l.contains("joined")).await;
    // Exactly what the seed's Python client sends: the text, no newline, then it waits.
    a.send("no newline here").await;
    assert_eq!(b.line().await, format!("{nick_a}: no newline here"));
    // Text split over two writes with no pause between them is still one message.
    a.send("split ").await;
    a.send("message\n").await;
    assert_eq!(b.line().await, format!("{nick_a}: split message"));
}

#[tokio::test]
async fn disconnect_is_announced_and_removes_the_client() {
    let server = start_server().await;
    let (mut a, _) = Line::connect(server.tcp()).await;
    let (b, nick_b) = Line::connect(server.tcp()).await;
    a.line_where(|l| l.contains("joined")).await;
    drop(b);
    assert_eq!(a.line().await, format!("* {nick_b} left lobby"));
    a.say("/who").await;
    let who = a.line().await;
    assert!(!who.contains(&nick_b), "{who}");
    assert!(who.starts_with("* in lobby: guest-"), "{who}");
}

#[tokio::test]
async fn commands_nick_join_who_rooms_help_quit() {
    let server = start_server().await;
    let (mut a, nick_a) = Line::connect(server.tcp()).await;
    let (mut b, _) = Line::connect(server.tcp()).await;
    a.line_where(|l| l.contains("joined")).await;

    a.say("/nick alice").await;
    assert_eq!(a.line().await, "* you are now alice");
    assert_eq!(b.line().await, format!("* {nick_a} is now known as alice"));

    a.say("/join dev").await;
    assert_eq!(a.line().await, "* you joined dev (1 here)");
    assert_eq!(b.line().await, "* alice left lobby");
    b.say("only lobby hears this").await;
    a.expect_silence(Duration::from_millis(200)).await;

    a.say("/who").await;
    assert_eq!(a.line().await, "* in dev: alice (tcp)");
    a.say("/rooms").await;
    let rooms = a.line().await;
    assert_eq!(rooms, "* rooms: dev (1), lobby (1)");

    a.say("/help").await;
    let first = a.line().await;
    assert!(first.starts_with("* /nick NAME"), "{first}");
    a.line_where(|l| l.starts_with("* //text")).await;

    a.say("//slash text").await;
    b.say("/join dev").await;
    b.line_where(|l| l.starts_with("* you joined dev")).await;
    a.say("//another").await;
    assert_eq!(b.line().await, "alice: /another");

    a.say("/quit").await;
    assert_eq!(a.line_where(|l| l == "* bye").await, "* bye");
    assert!(a.closed().await);
}

#[tokio::test]
async fn every_error_is_an_err_line_and_the_connection_stays_usable() {
    let server = start_with(Config {
        max_line_bytes: 100,
        ..test_config()
    })
    .await;
    let (mut a, _) = Line::connect(server.tcp()).await;
    let (mut b, nick_b) = Line::connect(server.tcp()).await;
    a.line_where(|l| l.contains("joined")).await;

    a.say("/frobnicate").await;
    assert_eq!(
        a.line().await,
        "ERR unknown command /frobnicate (try /help)"
    );
    a.say("/nick").await;
    assert_eq!(a.line().await, "ERR usage: /nick NAME");
    a.say("/nick bad/name").await;
    assert!(a.line().await.starts_with("ERR nick may contain only"));
    a.say("/join").await;
    assert_eq!(a.line().await, "ERR usage: /join ROOM");
    a.say(&format!("/nick {}", nick_b.to_uppercase())).await;
    assert_eq!(
        a.line().await,
        format!("ERR nick {} is taken", nick_b.to_uppercase())
    );
    a.say(&"x".repeat(101)).await;
    assert_eq!(a.line().await, "ERR line longer than 100 bytes");
    // An oversized line without a newline, spread over several writes, is reported once.
    a.send(&"y".repeat(150)).await;
    a.send(&"y".repeat(150)).await;
    a.say("").await;
    assert_eq!(a.line().await, "ERR line longer than 100 bytes");
    let mut raw = b"caf\xc3\n".to_vec();
    raw.extend_from_slice(b"after\n");
    let (mut ra, mut wa) = a.into_parts();
    wa.write_all(&raw).await.unwrap();
    let mut got = String::new();
    tokio::time::timeout(
        TIMEOUT,
        tokio::io::AsyncBufReadExt::read_line(&mut ra, &mut got),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, "ERR invalid UTF-8\n");
    let after = b.line().await;
    assert!(after.ends_with(": after"), "{after}");
    // None of the refused lines reached b.
    b.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn over_the_connection_limits_the_client_is_told_which() {
    let server = start_with(Config {
        max_connections: 2,
        ..test_config()
    })
    .await;
    let (_a, _) = Line::connect(server.tcp()).await;
    let (_b, _) = Line::connect(server.tcp()).await;
    let mut c = Line::connect_raw(server.tcp()).await;
    assert_eq!(c.line().await, "ERR server full");
    assert!(c.closed().await);

    let per_ip = start_with(Config {
        max_connections_per_ip: 1,
        ..test_config()
    })
    .await;
    let (_a, _) = Line::connect(per_ip.tcp()).await;
    let mut b = Line::connect_raw(per_ip.tcp()).await;
    assert_eq!(b.line().await, "ERR too many connections from your address");
    // A freed place can be taken again.
    drop(_a);
    let mut ok = None;
    for _ in 0..50 {
        let mut c = Line::connect_raw(per_ip.tcp()).await;
        if c.line().await.starts_with("* welcome") {
            ok = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok.is_some(), "place freed after disconnect");
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_and_the_others_get_everything() {
    let server = start_with(Config {
        queue_capacity: 256,
        ..support::flood_config()
    })
    .await;
    let (mut publisher, _) = Line::connect(server.tcp()).await;
    let (stalled, stalled_nick) = Line::connect(server.tcp()).await;
    let (mut reader, _) = Line::connect(server.tcp()).await;
    publisher.line_where(|l| l.contains("joined")).await;
    publisher.line_where(|l| l.contains("joined")).await;
    let (_stalled_read, _stalled_write) = stalled.into_parts(); // kept open, never read

    // ~16 MB: far more than loopback socket buffers hold, so the stalled queue must overflow.
    const COUNT: usize = 8_000;
    let (p_read, p_write) = publisher.into_parts();
    let writer = support::flood(p_write, COUNT, 2_000);
    let mut next = 0;
    let mut saw_cut = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while next < COUNT {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reader fell behind at {next}"
        );
        let line = reader.line().await;
        if line == format!("* {stalled_nick} left lobby (slow consumer)") {
            saw_cut = true;
            continue;
        }
        let (_, body) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("a message line, got {line:?}"));
        let n: usize = body
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a numbered message, got {:?}", &line[..line.len().min(80)]));
        assert_eq!(n, next, "in order, nothing lost");
        next += 1;
    }
    assert!(saw_cut, "the stalled client was cut as a slow consumer");
    let _ = writer.await;
    drop(p_read);
}

#[tokio::test]
async fn idle_timeout_closes_silent_connections() {
    let server = start_with(Config {
        idle_timeout: Some(Duration::from_millis(300)),
        ..test_config()
    })
    .await;
    let (mut a, _) = Line::connect(server.tcp()).await;
    let warning = a.line().await;
    assert!(
        warning.starts_with("* quiet for 0 s: send anything"),
        "told first: {warning}"
    );
    // An empty line is an answer: the clock starts again, and the warning comes again.
    a.say("").await;
    assert!(a.line().await.starts_with("* quiet for"), "warned again");
    assert_eq!(a.line().await, "* closing idle connection");
    assert!(a.closed().await);
}

#[tokio::test]
async fn shutdown_tells_clients_and_closes() {
    let server = start_server().await;
    let (mut a, _) = Line::connect(server.tcp()).await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(a.line().await, "* server shutting down");
    assert!(a.closed().await);
    tokio::time::timeout(TIMEOUT, stopping)
        .await
        .unwrap()
        .unwrap();
}
