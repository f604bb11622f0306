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

/// The default publish limits with a probe: another client in another room, publishing over
/// HTTP and reading over TCP, must see every one of its messages while the flood runs.
struct Probe {
    reader: Line,
    http: std::net::SocketAddr,
    sent: usize,
    /// This process's memory when the probe joined: the server under test runs in it.
    rss_at_start: u64,
}

/// How much the process may grow during one attack. Tests run side by side in one process,
/// so this bounds them all together; a server that held what attackers ask for (the
/// `/history` case held 1.2 GB before the byte bounds) is far past it.
const RSS_BOUND: u64 = 256 << 20;

impl Probe {
    async fn join(server: &support::TestServer, room: &str) -> Probe {
        let (mut reader, _) = Line::connect(server.tcp()).await;
        reader.say(&format!("/join {room}")).await;
        reader
            .line_where(|l| l.contains(&format!("joined {room}")))
            .await;
        Probe {
            reader,
            http: server.http(),
            sent: 0,
            rss_at_start: support::rss_bytes(),
        }
    }

    /// Publishes one message over HTTP (with an API key when the server has one) and waits
    /// for it on the TCP reader; panics if either fails within the bound.
    async fn check(&mut self, room: &str) {
        // A person reading answers the idle notice (an empty line): so does the probe.
        self.reader.say("").await;
        self.sent += 1;
        let text = format!("probe {}", self.sent);
        // From 127.0.0.2: another address than every attacker here, so another identity.
        let client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        let res = client
            .post(format!("http://{}/rooms/{room}/messages", self.http))
            .body(text.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "probe publish {} refused", self.sent);
        self.reader.line_where(|l| l.ends_with(&text)).await;
        let grown = support::rss_bytes().saturating_sub(self.rss_at_start);
        assert!(grown < RSS_BOUND, "the server grew by {} MiB", grown >> 20);
    }
}

#[tokio::test]
async fn a_tcp_publish_flood_is_answered_then_cut_and_others_are_unaffected() {
    let server = start_server().await;
    let mut probe = Probe::join(&server, "quiet").await;
    let (mut flooder, _) = Line::connect(server.tcp()).await;
    // Past the burst (50): the next ones are refused, each with an answer.
    for i in 0..60 {
        flooder.say(&format!("spam {i}")).await;
    }
    flooder
        .line_where(|l| l.starts_with("ERR too many messages; not sent (retry in"))
        .await;
    probe.check("quiet").await;
    // Sustained: past 100 refusals in a row the connection is cut, saying why.
    let (mut read, mut write) = flooder.into_parts();
    let flood: String = (0..2_000).map(|i| format!("spam {i}\n")).collect();
    let started = std::time::Instant::now();
    write.write_all(flood.as_bytes()).await.unwrap();
    let mut last = String::new();
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt;
    while tokio::time::timeout(TIMEOUT, read.read_line(&mut line))
        .await
        .expect("the flooder hears back in time")
        .unwrap()
        > 0
    {
        last = std::mem::take(&mut line);
    }
    assert_eq!(last.trim_end(), "ERR disconnected: publishing too fast");
    eprintln!("tcp flood: cut after {:?}", started.elapsed());
    probe.check("quiet").await;
}

#[tokio::test]
async fn a_websocket_publish_flood_gets_error_frames_then_close_1008() {
    let server = start_server().await;
    let mut probe = Probe::join(&server, "quiet").await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?format=json", server.http()))
            .await
            .unwrap();
    use futures_util::StreamExt;
    let publish = |i: usize| {
        Message::text(format!(
            r#"{{"type":"publish","room":"lobby","text":"spam {i}"}}"#
        ))
    };
    for i in 0..60 {
        ws.send(publish(i)).await.unwrap();
    }
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap();
        if let Some(Ok(Message::Text(t))) = msg
            && t.contains(r#""code":"rate_limited""#)
        {
            break;
        }
    }
    for i in 60..400 {
        if ws.send(publish(i)).await.is_err() {
            break;
        }
    }
    let close = loop {
        match tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close frame"),
            Some(Ok(_)) => continue,
            other => panic!("closed without a close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "publishing too fast");
    probe.check("quiet").await;
}

fn tight_http() -> switchboard::Config {
    let mut config = support::test_config();
    config.limits.http_header_timeout = std::time::Duration::from_secs(1);
    config.limits.http_body_timeout = std::time::Duration::from_secs(1);
    config.limits.http_connections_per_ip = 50;
    config
}

#[tokio::test]
async fn slowloris_connections_are_closed_after_the_header_timeout_and_capped_per_ip() {
    let server = support::start_with(tight_http()).await;
    let mut probe = Probe::join(&server, "quiet").await;
    // 50 connections each send half a request line and stall.
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(server.http()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow:")
            .await
            .unwrap();
        held.push(s);
    }
    // The 51st from the same address is refused with the JSON error.
    let mut extra = tokio::net::TcpStream::connect(server.http()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(TIMEOUT, extra.read_to_string(&mut answer))
        .await
        .expect("refused in time")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains(r#""code":"too_many_from_address""#),
        "{answer}"
    );
    // Every stalled one is closed once the header timeout (1 s) passes.
    let started = std::time::Instant::now();
    for mut s in held {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a stalled connection was closed");
    }
    eprintln!(
        "slowloris: 50 stalled closed within {:?}",
        started.elapsed()
    );
    // Their places are free again, and the probe never noticed.
    probe.check("quiet").await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let server = support::start_with(tight_http()).await;
    // Nothing at all, on the HTTP and the gRPC listener (one loop serves both).
    for addr in [server.http(), server.addrs.grpc.expect("grpc on")] {
        let started = std::time::Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a silent connection to {addr} was closed");
        assert!(buf.is_empty());
        assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    }
}

#[tokio::test]
async fn a_body_that_trickles_is_refused_with_408() {
    let server = support::start_with(tight_http()).await;
    let mut s = tokio::net::TcpStream::connect(server.http()).await.unwrap();
    s.write_all(
        b"POST /rooms/lobby/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: text/plain\r\nContent-Length: 100\r\n\r\nhel",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let trickle = async {
        // One byte every 300 ms: the 1 s body deadline passes long before 100 bytes.
        for _ in 0..20 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            if s.write_all(b"l").await.is_err() {
                break;
            }
            let mut buf = [0u8; 4096];
            if let Ok(Ok(n)) =
                tokio::time::timeout(std::time::Duration::from_millis(1), s.read(&mut buf)).await
            {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
        }
    };
    tokio::time::timeout(TIMEOUT, trickle).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"body_timeout""#), "{answer}");
}

/// Fills `room` with `count` messages of `size` bytes over HTTP.
async fn fill(server: &support::TestServer, room: &str, count: usize, size: usize) {
    for i in 0..count {
        let text = format!("{i} {}", "x".repeat(size));
        support::publish_to(server.http(), room, &text)
            .await
            .expect("stored");
    }
}

/// Posts one message to a new room `room`; the status and the JSON body.
async fn post_new_room(server: &support::TestServer, room: &str) -> (u16, serde_json::Value) {
    let res = support::http_client()
        .post(format!("http://{}/rooms/{room}/messages", server.http()))
        .body("x")
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_requests_that_are_never_read_cannot_grow_the_server() {
    let server = support::start_with(support::flood_config()).await;
    // 300 messages of 16 KiB: 4.8 MB of history, every `/history 1000` asks for all of it.
    fill(&server, "big", 300, 16 * 1024).await;
    let mut probe = Probe::join(&server, "quiet").await;
    let before = support::rss_bytes();
    let mut attackers = Vec::new();
    for _ in 0..2 {
        let (mut attacker, _) = Line::connect(server.tcp()).await;
        attacker.say("/join big").await;
        let (read, mut write) = attacker.into_parts();
        // 40 requests in 560 bytes; before the byte bound each queued 4.8 MB.
        write
            .write_all("/history 1000\n".repeat(40).as_bytes())
            .await
            .unwrap();
        attackers.push((read, write));
    }
    probe.check("quiet").await;
    // Each is cut as a slow consumer once its 4 MiB are queued: its connection ends.
    for (mut read, _write) in attackers {
        let mut sink = Vec::new();
        let ended = tokio::time::timeout(TIMEOUT, read.read_to_end(&mut sink)).await;
        assert!(ended.is_ok(), "the attacker was cut");
        assert!(
            sink.len() < 8 << 20,
            "it got at most its bound: {}",
            sink.len()
        );
    }
    let grown = support::rss_bytes().saturating_sub(before);
    eprintln!("history amplification: server grew by {} KiB", grown >> 10);
    assert!(grown < 64 << 20, "server grew by {} MiB", grown >> 20);
    probe.check("quiet").await;
}

#[tokio::test]
async fn a_history_reply_is_cut_to_the_reply_limit_and_says_so() {
    let server = support::start_with(support::flood_config()).await;
    fill(&server, "big", 100, 16 * 1024).await;
    let (mut reader, _) = Line::connect(server.tcp()).await;
    reader.say("/join big").await;
    reader.say("/history 1000").await;
    let gap = reader.line_where(|l| l.starts_with("* gap in big")).await;
    assert!(gap.contains("reply size limit reached"), "{gap}");
    let mut got = 0;
    loop {
        let line = reader.line().await;
        if line.starts_with("* end of history") {
            break;
        }
        got += 1;
    }
    // 1 MiB of 16 KiB messages: the newest 63, not all 100.
    assert!((50..100).contains(&got), "{got} messages replayed");
    // HTTP pages are cut the same way, and say there is more.
    let page = support::get_json(server.http(), "/rooms/big/messages?limit=1000").await;
    let n = page["messages"].as_array().unwrap().len();
    assert!((50..100).contains(&n), "{n} on the page");
    assert_eq!(page["more"], true);
}

/// No publish limits, the default room caps: a room flood meets only the room caps.
fn rooms_config() -> switchboard::Config {
    let mut config = support::test_config();
    config.publish_rate = 0.0;
    config.limits.connection_rate = 0.0;
    config
}

#[tokio::test]
async fn a_room_flood_stops_at_the_per_creator_cap_on_every_transport() {
    let mut config = rooms_config();
    config.limits.max_rooms_per_creator = 20;
    let server = support::start_with(config).await;
    let mut probe = Probe::join(&server, "quiet").await;
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    // The lobby and the probe's room are the server's and the probe's; 20 more are allowed.
    let mut refused = None;
    for i in 0..40 {
        tcp.say(&format!("/join flood{i}")).await;
        let line = tcp
            .line_where(|l| l.starts_with("* you joined") || l.starts_with("ERR"))
            .await;
        if line.starts_with("ERR") {
            refused = Some((i, line));
            break;
        }
    }
    let (at, line) = refused.expect("refused before 40 rooms");
    assert!(at <= 20, "refused at {at}");
    assert!(line.contains("created too many rooms"), "{line}");
    // The refused move left the client where it was.
    tcp.say("hello").await;
    // Over HTTP, the same address gets 429 with the code.
    let (status, body) = post_new_room(&server, "another").await;
    assert_eq!(status, 429);
    assert_eq!(body["code"], "too_many_rooms_created");
    probe.check("quiet").await;
}

#[tokio::test]
async fn rooms_in_all_and_members_per_room_are_capped() {
    let mut config = rooms_config();
    config.limits.max_rooms = 5;
    config.limits.max_members = 2;
    let server = support::start_with(config).await;
    let (_a, _) = Line::connect(server.tcp()).await;
    let (_b, _) = Line::connect(server.tcp()).await;
    // The lobby holds two: a third is told, and stays in no room.
    let (mut c, _) = Line::connect(server.tcp()).await;
    let full = c.line_where(|l| l.starts_with("ERR")).await;
    assert_eq!(full, "ERR room lobby is full");
    for i in 0..4 {
        c.say(&format!("/join r{i}")).await;
        c.line_where(|l| l.starts_with("* you joined")).await;
    }
    c.say("/join r9").await;
    let many = c.line_where(|l| l.starts_with("ERR")).await;
    assert!(many.contains("too many rooms"), "{many}");
    let (status, _) = post_new_room(&server, "r10").await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn rooms_are_listed_a_page_at_a_time() {
    let server = support::start_with(rooms_config()).await;
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    // Each gets a message: a room left empty without history may be swept at any time.
    for i in 0..70 {
        tcp.say(&format!("/join p{i:02}")).await;
        tcp.line_where(|l| l.starts_with("* you joined")).await;
        tcp.say("kept").await;
    }
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..20 {
        let mut path = "/rooms?limit=30".to_owned();
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let page = support::get_json(server.http(), &path).await;
        let rooms = page["rooms"].as_array().unwrap();
        assert!(rooms.len() <= 30);
        names.extend(rooms.iter().map(|r| r["name"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted, "in order, each once");
    assert!(names.len() >= 70, "{} {names:?}", names.len());
    let res = support::http_client()
        .get(format!("http://{}/rooms?limit=0", server.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    tcp.say("/rooms").await;
    let first = tcp.line_where(|l| l.starts_with("* rooms:")).await;
    assert!(first.contains("; more: /rooms "), "{first}");
    let next = first.rsplit("/rooms ").next().unwrap().to_owned();
    tcp.say(&format!("/rooms {next}")).await;
    let second = tcp.line_where(|l| l.starts_with("* rooms:")).await;
    assert!(!second.contains(&format!("{next} (")), "{second}");
}

#[tokio::test]
async fn an_unverified_udp_address_gets_no_more_bytes_than_it_sent_and_no_membership() {
    let server = support::start_with(support::flood_config()).await;
    fill(&server, "lobby", 50, 1000).await;
    let spoofed = support::Udp::unverified(server.udp()).await;
    let (mut sent, mut received) = (0usize, 0usize);
    // Short requests get nothing; padded ones only the cookie. `/history` is never run.
    for request in [
        "/history 1000",
        "hi",
        "/join lobby",
        "/cookie forged-cookie-value",
    ]
    .into_iter()
    .chain(std::iter::once(&*format!(
        "/history 1000{}",
        " ".repeat(60)
    ))) {
        spoofed.send(request).await;
        sent += request.len();
        while let Some(d) = spoofed
            .try_recv(std::time::Duration::from_millis(200))
            .await
        {
            assert!(
                d.len() <= request.len(),
                "{} bytes for {}",
                d.len(),
                request.len()
            );
            assert!(d.starts_with("COOKIE "), "{d}");
            received += d.len();
        }
    }
    assert!(received <= sent, "{received} bytes out for {sent} in");
    eprintln!("udp unverified: {received} bytes out for {sent} in");
    let presence = support::get_json(server.http(), "/rooms/lobby/presence").await;
    assert!(
        !presence.to_string().contains("udp"),
        "no member without the cookie: {presence}"
    );
    // Answering the cookie makes it a member; only then does `/history` run.
    let member = support::Udp::connect(server.udp()).await;
    member.recv_where(|d| d.starts_with("* welcome")).await;
    member.send("/history 5").await;
    member
        .recv_where(|d| d.starts_with("* end of history"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_udp_arrivals_is_summed_up_and_never_cuts_a_reader() {
    // A small queue: 600 joins and leaves told one by one would overflow it.
    let server = support::start_with(switchboard::Config {
        queue_capacity: 64,
        ..support::flood_config()
    })
    .await;
    let (mut reader, _) = Line::connect(server.tcp()).await;
    let mut members = Vec::new();
    for _ in 0..300 {
        members.push(support::Udp::connect(server.udp()).await);
    }
    for member in &members {
        member.send("/quit").await;
    }
    let crowd = reader
        .line_where(|l| l.contains("(too many to list") || l.starts_with("ERR"))
        .await;
    assert!(
        crowd.ends_with(" lobby (too many to list; /who for members)"),
        "{crowd}"
    );
    // Still connected and hearing the room.
    let (mut other, other_nick) = Line::connect(server.tcp()).await;
    other.say("after the storm").await;
    let heard = reader
        .line_where(|l| l.ends_with("after the storm") || l.starts_with("ERR"))
        .await;
    assert_eq!(heard, format!("{other_nick}: after the storm"));
}

#[tokio::test]
async fn a_udp_publish_flood_is_answered_then_cut() {
    let server = start_server().await;
    let mut probe = Probe::join(&server, "quiet").await;
    let flooder = support::Udp::connect(server.udp()).await;
    flooder.recv_where(|d| d.starts_with("* welcome")).await;
    for i in 0..60 {
        flooder.send(&format!("spam {i}")).await;
    }
    flooder
        .recv_where(|d| d.starts_with("ERR too many messages; not sent"))
        .await;
    for i in 0..300 {
        flooder.send(&format!("spam {i}")).await;
    }
    flooder
        .recv_where(|d| d == "ERR disconnected: publishing too fast")
        .await;
    probe.check("quiet").await;
}

/// Guessing credentials from one address: past a burst of failures, HTTP answers 429 with
/// `Retry-After` (unchecked, so a right guess does not help either), the chat's `/auth` says
/// so in an `ERR` line; another address is not slowed, and its right key works.
#[tokio::test]
async fn failed_sign_ins_are_throttled_per_address() {
    const KEY: &str = "the-right-api-key-0123456789";
    let mut config = support::test_config();
    config.auth.api_keys = vec![KEY.into()];
    config.auth.secrets = vec!["throttle-secret-0123456789abcdef-0123".into()];
    let server = support::start_with(config).await;
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .timeout(TIMEOUT)
            .build()
            .unwrap()
    };
    let guesser = from("127.0.0.2");
    let url = format!("http://{}/admin/connections", server.http());
    let mut statuses = Vec::new();
    for i in 0..40 {
        let res = guesser
            .get(&url)
            .header("x-api-key", format!("guess-{i:020}"))
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            assert!(res.headers().contains_key("retry-after"));
            let v: serde_json::Value = res.json().await.unwrap();
            assert!(
                v["error"].as_str().unwrap().contains("failed sign-ins"),
                "{v}"
            );
            statuses.push(429);
        } else {
            statuses.push(res.status().as_u16());
        }
    }
    let refused = statuses.iter().filter(|s| **s == 401).count();
    assert!((15..=25).contains(&refused), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Throttled means unchecked: the right key from the guessing address waits too.
    let res = guesser
        .get(&url)
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let res = from("127.0.0.3")
        .get(&url)
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "another address is not slowed");

    // The chat's /auth, from the test's own address: the same bucket rule.
    let (mut chat, _) = Line::connect(server.tcp()).await;
    let mut said = Vec::new();
    for _ in 0..30 {
        chat.say("/auth not-a-token").await;
        said.push(chat.line_where(|l| l.starts_with("ERR")).await);
    }
    assert!(said[0].contains("token refused"), "{}", said[0]);
    assert!(
        said[29].contains("too many failed sign-ins"),
        "{}",
        said[29]
    );
    server.stop().await;
}

/// An HTTP/2 (h2c) client of `addr` that grants the server no flow-control window: it reads
/// answers' headers but never a byte of their bodies.
async fn h2_granting_no_window(
    addr: std::net::SocketAddr,
) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// The answers' heads, each within `TIMEOUT` (they come even with no window); their bodies
/// are left unread.
async fn heads(
    pending: Vec<h2::client::ResponseFuture>,
) -> Vec<axum::http::Response<h2::RecvStream>> {
    let mut heads = Vec::new();
    for response in pending {
        let response = tokio::time::timeout(TIMEOUT, response)
            .await
            .expect("headers come even with no window")
            .unwrap();
        heads.push(response);
    }
    heads
}

/// An HTTP/2 client that grants no flow-control window and asks for page after page: each
/// answer holds its bytes until it is sent, so past the connection's budget (8 MiB) the
/// answers are `503 unsent_full` (headers only) instead of more pages in memory (before: 128
/// pages of 1 MiB per connection; 10 connections +1.3 GB, 13 aborted the server). A reader on
/// another connection still gets its page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_answers_that_are_never_read_are_bounded_per_connection() {
    let server = support::start_with(support::flood_config()).await;
    fill(&server, "big", 24, 60_000).await;
    let client = h2_granting_no_window(server.http()).await;
    let mut pending = Vec::new();
    for _ in 0..60 {
        let mut client = client.clone().ready().await.unwrap();
        let request = axum::http::Request::get(format!(
            "http://{}/rooms/big/messages?limit=1000",
            server.http()
        ))
        .body(())
        .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        pending.push(response);
    }
    // Kept unread: their streams stay open, their answers unsent.
    let responses = heads(pending).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    let served = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(served + refused, 60, "{statuses:?}");
    // A page is up to 1 MiB (reply_bytes): at most 8 fit the 8 MiB budget.
    assert!(
        (1..=8).contains(&served),
        "{served} pages held unsent: {statuses:?}"
    );
    let page = support::get_json(server.http(), "/rooms/big/messages?limit=1000").await;
    assert!(!page["messages"].as_array().unwrap().is_empty());
    drop(responses);
    server.stop().await;
}

/// The same over gRPC: `History(limit=1000)` calls on a connection that grants no window.
/// A gRPC reply's body does not know its size, so each handler declares it; past the
/// connection's budget the calls end at once with `RESOURCE_EXHAUSTED` (grpc-status 8)
/// instead of more replies in memory (before: 10 such connections +980 MB in the release
/// build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_replies_that_are_never_read_are_bounded_per_connection() {
    let server = support::start_with(support::flood_config()).await;
    fill(&server, "big", 24, 60_000).await;
    let client = h2_granting_no_window(server.addrs.grpc.expect("grpc on")).await;
    // HistoryRequest { room: "big", limit: 1000 }, in a gRPC frame.
    let call = bytes::Bytes::from_static(b"\x00\x00\x00\x00\x08\x0a\x03big\x18\xe8\x07");
    let mut pending = Vec::new();
    for _ in 0..40 {
        let mut client = client.clone().ready().await.unwrap();
        let request = axum::http::Request::post(format!(
            "http://{}/switchboard.v1.Switchboard/History",
            server.addrs.grpc.expect("grpc on")
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
        let (response, mut body) = client.send_request(request, false).unwrap();
        body.send_data(call.clone(), true).unwrap();
        pending.push(response);
    }
    let (mut served, mut exhausted) = (0, 0);
    let responses = heads(pending).await;
    for response in &responses {
        match response.headers().get("grpc-status").map(|s| s.as_bytes()) {
            None => served += 1,
            Some(b"8") => exhausted += 1,
            Some(other) => panic!("grpc-status {other:?}"),
        }
    }
    assert_eq!(served + exhausted, 40);
    assert!(
        (1..=8).contains(&served),
        "{served} replies of up to 1 MiB held unsent"
    );
    drop(responses);
    server.stop().await;
}

/// HTTP/2 idle and stream caps: a connection with no streams is closed after the idle time
/// (as an idle HTTP/1.1 keep-alive is; before, it was held as long as the client answered
/// pings), and streams hold places in the per-address HTTP cap, so long-polls on one
/// connection stop at the cap (before: 12,800 held from one address past a cap of 1,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_idle_connections_close_and_streams_count_against_the_address_cap() {
    let mut config = tight_http();
    config.limits.http_connections_per_ip = 5;
    let server = support::start_with(config).await;
    // Idle: the handshake, then nothing.
    let tcp = tokio::net::TcpStream::connect(server.http()).await.unwrap();
    let (_client, connection) = h2::client::handshake(tcp).await.unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), connection).await;
    assert!(
        ended.is_ok(),
        "an h2 connection with no streams is closed when idle"
    );

    // Long-polls on one connection: the connection holds one place, each stream another.
    let tcp = tokio::net::TcpStream::connect(server.http()).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut pending = Vec::new();
    for _ in 0..8 {
        let mut client = client.clone().ready().await.unwrap();
        let request = axum::http::Request::get(format!(
            "http://{}/rooms/quiet/messages?wait=3",
            server.http()
        ))
        .body(())
        .unwrap();
        pending.push(client.send_request(request, true).unwrap().0);
        // In order, so that the first ones hold their places before the next arrive.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut statuses = Vec::new();
    for response in pending {
        let response = tokio::time::timeout(TIMEOUT, response)
            .await
            .unwrap()
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 503, 503, 503, 503],
        "4 streams beside the connection's own place"
    );
    server.stop().await;
}

/// A bare MQTT 3.1.1 client from `from`: CONNECT (clean session, keep-alive 60 s), then
/// SUBSCRIBE `filter` at QoS 0; returns the socket and the SUBACK's return code.
async fn mqtt_subscriber(
    mqtt: std::net::SocketAddr,
    from: [u8; 4],
    client_id: &str,
    filter: &str,
) -> (tokio::net::TcpStream, u8) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind((std::net::Ipv4Addr::from(from), 0).into())
        .unwrap();
    let mut stream = socket.connect(mqtt).await.unwrap();
    let mut connect = vec![0x10, (12 + client_id.len()) as u8, 0, 4];
    connect.extend_from_slice(b"MQTT\x04\x02\x00\x3c");
    connect.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    connect.extend_from_slice(client_id.as_bytes());
    let mut subscribe = vec![0x82, (5 + filter.len()) as u8, 0, 1];
    subscribe.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    subscribe.extend_from_slice(filter.as_bytes());
    subscribe.push(0);
    stream.write_all(&connect).await.unwrap();
    stream.write_all(&subscribe).await.unwrap();
    // CONNACK (4 bytes), then SUBACK (5 bytes); a retained or room message could follow,
    // but these rooms hold none that are retained, and QoS 0 replays nothing.
    let mut acks = [0u8; 9];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut acks))
        .await
        .expect("CONNACK and SUBACK in time")
        .expect("CONNACK and SUBACK");
    assert_eq!(&acks[..4], b"\x20\x02\x00\x00", "connected");
    assert_eq!(acks[4], 0x90, "a SUBACK");
    (stream, acks[8])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_many_wildcard_subscribers_holds_no_other_room_and_wildcards_are_capped() {
    let mut config = support::test_config();
    config.limits.rooms_per_connection = 50;
    config.limits.memberships_per_ip = 8_000;
    // Making the 60 rooms is not what is tried here.
    config.publish_rate = 0.0;
    let server = support::start_with(config).await;
    // 40 rooms under x/ and 20 under y/: `x/#` matches 40, `#` 60.
    let client = support::http_client();
    // `/` in a path segment is written %2F.
    for room in (0..40)
        .map(|n| format!("x%2F{n}"))
        .chain((0..20).map(|n| format!("y%2F{n}")))
    {
        let res = client
            .post(format!("http://{}/rooms/{room}/messages", server.http()))
            .body("made")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "made {room}");
    }
    let mut probe = Probe::join(&server, "probe").await;
    // More rooms than one connection may join: refused whole (3.1.1: 0x80, failure).
    let (_refused, code) = mqtt_subscriber(server.mqtt(), [127, 0, 0, 5], "all", "#").await;
    assert_eq!(
        code, 0x80,
        "`#` over 60 rooms is past rooms_per_connection (50)"
    );
    // 200 wildcard subscribers from one address: 8,000 memberships, the address's cap.
    let mut subscribers = Vec::new();
    for n in 0..200 {
        let (stream, code) =
            mqtt_subscriber(server.mqtt(), [127, 0, 0, 6], &format!("w{n}"), "x/#").await;
        assert_eq!(code, 0, "subscriber {n} granted");
        subscribers.push(stream);
    }
    // One more from that address is granted, but joins nothing past the address's cap: a
    // message to x/0 reaches the 200, not it.
    let (mut late, code) = mqtt_subscriber(server.mqtt(), [127, 0, 0, 6], "late", "x/#").await;
    assert_eq!(code, 0);
    probe.check("probe").await;
    // All at once: the leaves are told to nobody (MQTT hears no presence), so nothing else
    // waits on them.
    drop(subscribers);
    for _ in 0..5 {
        probe.check("probe").await;
    }
    let res = client
        .post(format!("http://{}/rooms/x%2F0/messages", server.http()))
        .body("after")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let mut byte = [0u8; 1];
    let quiet =
        tokio::time::timeout(std::time::Duration::from_millis(300), late.read(&mut byte)).await;
    assert!(
        quiet.is_err(),
        "the late subscriber joined no room past the cap"
    );
    server.stop().await;
}

/// Idle sockets cannot hold their places: TCP chat connections from one address that never
/// send a byte fill its cap (`ERR too many connections from your address` for one more),
/// are told they are idle, and are closed a grace period later; then the address gets in
/// again. An MQTT connection asking for no keep-alive is held to the same timeout. The probe,
/// from another address, is served throughout (before this round: idle TCP chat connections
/// were held for ever, and 21 addresses × 1,000 filled the descriptor budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_are_told_then_closed_and_their_places_come_back() {
    let mut config = support::test_config();
    config.idle_timeout = Some(std::time::Duration::from_secs(1));
    config.max_connections_per_ip = 20;
    let server = support::start_with(config).await;
    let mut probe = Probe::join(&server, "probe").await;
    let from = |last: u8| std::net::Ipv4Addr::new(127, 0, 0, last);
    let connect = async |last: u8| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((from(last), 0).into()).unwrap();
        Line::from_stream(socket.connect(server.tcp()).await.unwrap())
    };
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut line = connect(7).await;
        assert!(line.line().await.starts_with("* welcome"));
        idle.push(line);
    }
    let mut one_more = connect(7).await;
    assert_eq!(
        one_more.line().await,
        "ERR too many connections from your address"
    );
    // An MQTT client with keep-alive 0, from the same address: held to the idle timeout too.
    let mqtt = tokio::net::TcpSocket::new_v4().unwrap();
    mqtt.bind((from(8), 0).into()).unwrap();
    let mut mqtt = mqtt.connect(server.mqtt()).await.unwrap();
    mqtt.write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x00\x00\x00")
        .await
        .unwrap();
    probe.check("probe").await;
    for line in &mut idle {
        // Presence lines of the others come first; then the notice, then the close.
        line.line_where(|l| l.starts_with("* quiet for 1 s")).await;
        // The probe is told too, and answers (each check sends an empty line).
        probe.check("probe").await;
        line.line_where(|l| l == "* closing idle connection").await;
        assert!(line.closed().await);
    }
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(TIMEOUT, mqtt.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the MQTT connection is closed, not held");
    assert_eq!(&rest[..4], b"\x20\x02\x00\x00", "after its CONNACK");
    // Their places are free again.
    let mut back = connect(7).await;
    assert!(back.line().await.starts_with("* welcome"));
    probe.check("probe").await;
    server.stop().await;
}
