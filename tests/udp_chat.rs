//! UDP chat: datagrams in and out, shared rooms with TCP, size limits, expiry.

mod support;

use std::time::Duration;

use support::{Line, Udp, start_server, start_with, test_config};
use switchboard::Config;

#[tokio::test]
async fn udp_and_tcp_clients_share_a_room() {
    let server = start_server().await;
    let (mut tcp, tcp_nick) = Line::connect(server.tcp()).await;
    let udp = Udp::connect(server.udp()).await;
    udp.send("/nick udpuser").await;
    let welcome = udp.recv().await;
    assert!(welcome.starts_with("* welcome guest-"), "{welcome}");
    assert_eq!(udp.recv().await, "* you are now udpuser");
    tcp.line_where(|l| l.ends_with("is now known as udpuser"))
        .await;

    udp.send("hello from udp\n").await;
    assert_eq!(tcp.line().await, "udpuser: hello from udp");
    tcp.say("hello from tcp").await;
    assert_eq!(udp.recv().await, format!("{tcp_nick}: hello from tcp"));

    udp.send("/who").await;
    let who = udp.recv().await;
    assert!(
        who.contains("udpuser (udp)") && who.contains("(tcp)"),
        "{who}"
    );
}

#[tokio::test]
async fn oversized_datagrams_get_err_both_ways() {
    let server = start_with(Config {
        udp_max_in: 100,
        udp_max_out: 200,
        ..test_config()
    })
    .await;
    let udp = Udp::connect(server.udp()).await;
    udp.send("hi").await;
    udp.recv_where(|d| d.starts_with("* welcome")).await;
    udp.send(&"x".repeat(101)).await;
    assert_eq!(udp.recv().await, "ERR datagram larger than 100 bytes");

    // A room message too big for a datagram is replaced by an ERR naming it.
    let (mut tcp, tcp_nick) = Line::connect(server.tcp()).await;
    tcp.say(&"y".repeat(300)).await;
    let err = udp.recv_where(|d| d.starts_with("ERR message")).await;
    assert!(
        err.contains("too large for UDP (") && err.ends_with(" bytes > 200)"),
        "{err}"
    );
    tcp.say("small").await;
    assert_eq!(
        udp.recv_where(|d| !d.starts_with('*')).await,
        format!("{tcp_nick}: small")
    );
}

#[tokio::test]
async fn invalid_utf8_datagram_gets_err() {
    let server = start_server().await;
    let udp = Udp::connect(server.udp()).await;
    udp.0.send(b"\xff\xfe").await.unwrap();
    udp.recv_where(|d| d.starts_with("* welcome")).await;
    assert_eq!(udp.recv().await, "ERR invalid UTF-8");
}

#[tokio::test]
async fn silent_udp_member_leaves_after_its_ttl_and_can_rejoin() {
    let server = start_with(Config {
        udp_ttl: Duration::from_millis(400),
        ..test_config()
    })
    .await;
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    let udp = Udp::connect(server.udp()).await;
    udp.send("/nick ghost").await;
    tcp.line_where(|l| l.ends_with("is now known as ghost"))
        .await;
    assert_eq!(
        tcp.line_where(|l| l.starts_with("* ghost left")).await,
        "* ghost left lobby (timed out)"
    );
    // Gone, it is a stranger again: it proves its address anew before it is heard.
    udp.send("back").await;
    udp.verify().await;
    udp.send("back").await;
    tcp.line_where(|l| l.ends_with(": back")).await;
}
