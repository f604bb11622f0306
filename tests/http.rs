//! Plain HTTP push and pull over real sockets: publish, pages, long-poll, SSE with resume,
//! presence, idempotency, and the same cursor on TCP and WebSocket.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use eventsource_stream::{Event as SseEvent, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use support::{Line, TIMEOUT, start_server, start_with, test_config};
use switchboard::Config;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(70))
        .build()
        .unwrap()
}

fn unlimited() -> Config {
    Config {
        publish_rate: 0.0,
        limits: switchboard::config::Limits::unlimited(),
        ..test_config()
    }
}

async fn post(addr: SocketAddr, room: &str, text: &str) -> Value {
    let res = client()
        .post(format!("http://{addr}/rooms/{room}/messages"))
        .header("x-nick", "poster")
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "publish");
    res.json().await.unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let res = client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

type Events = std::pin::Pin<Box<dyn Stream<Item = SseEvent> + Send>>;

/// Opens `/events` with a real SSE client; `last_event_id` is sent as a browser would.
async fn sse(addr: SocketAddr, query: &str, last_event_id: Option<&str>) -> Events {
    let mut req = client()
        .get(format!("http://{addr}/events{query}"))
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    Box::pin(
        res.bytes_stream()
            .eventsource()
            .map(|e| e.expect("well-formed event stream")),
    )
}

/// The next event of `kind`, skipping others; panics after `TIMEOUT`.
async fn next_of(events: &mut Events, kind: &str) -> SseEvent {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.next()).await {
            Ok(Some(e)) if e.event == kind => return e,
            Ok(Some(_)) => continue,
            other => panic!("no {kind} event: {other:?}"),
        }
    }
}

fn data(e: &SseEvent) -> Value {
    serde_json::from_str(&e.data).unwrap()
}

fn seq(id: &str) -> u64 {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn publish_answers_201_with_the_id_and_explains_bad_input() {
    let server = start_server().await;
    let addr = server.http();
    let http = client();
    let url = format!("http://{addr}/rooms/lobby/messages");

    let first = post(addr, "lobby", "plain text").await;
    assert_eq!(first["room"], "lobby");
    assert!(first["id"].as_str().unwrap().ends_with("-1"));
    let res = http
        .post(&url)
        .json(&json!({"text": "as json", "nick": "jay"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.post(&url)
                .header("content-type", "application/json")
                .body("{\"text\":"),
            400,
            "invalid JSON body",
        ),
        (
            http.post(&url).json(&json!({"txt": "typo"})),
            400,
            "unknown field `txt`",
        ),
        (http.post(&url).body(""), 400, "empty"),
        (http.post(&url).body(vec![0xff, 0xfe]), 400, "UTF-8"),
        (
            http.post(&url)
                .header("content-type", "image/png")
                .body("x"),
            415,
            "text/plain",
        ),
        (
            http.post(&url).body("x".repeat(64 * 1024 + 1)),
            413,
            "larger than",
        ),
        (
            http.post(format!("http://{addr}/rooms/bad%5Cname/messages"))
                .body("x"),
            400,
            "room may contain only",
        ),
        (
            http.post(&url).header("x-nick", "bad nick").body("x"),
            400,
            "nick may contain only",
        ),
    ];
    for (req, status, needle) in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{needle}");
        let body: Value = res.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
    }
    let (status, body) = get(addr, "/nowhere").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    // Nothing refused was published.
    let (_, page) = get(addr, "/rooms/lobby/messages").await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
    assert_eq!(page["messages"][1]["nick"], "jay");
}

#[tokio::test]
async fn publishers_over_their_rate_get_429_with_retry_after() {
    let server = start_with(Config {
        publish_rate: 1.0,
        publish_burst: 3.0,
        ..test_config()
    })
    .await;
    let url = format!("http://{}/rooms/lobby/messages", server.http());
    for _ in 0..3 {
        assert_eq!(
            client().post(&url).body("x").send().await.unwrap().status(),
            201
        );
    }
    let res = client().post(&url).body("x").send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
}

#[tokio::test]
async fn history_pages_and_unknown_rooms() {
    let server = start_with(unlimited()).await;
    let addr = server.http();
    for i in 1..=5 {
        post(addr, "paged", &format!("m{i}")).await;
    }
    let (_, page) = get(addr, "/rooms/paged/messages?limit=2").await;
    let texts = |p: &Value| -> Vec<String> {
        p["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(texts(&page), ["m1", "m2"]);
    assert_eq!(page["more"], true);
    let next = page["next"].as_str().unwrap();
    let (_, page) = get(
        addr,
        &format!("/rooms/paged/messages?since={next}&limit=10"),
    )
    .await;
    assert_eq!(texts(&page), ["m3", "m4", "m5"]);
    assert_eq!(page["more"], false);
    assert_eq!(page["next"], page["last_id"]);

    // An unknown room is an empty room, and reading it does not create it.
    let (status, page) = get(addr, "/rooms/never-used/messages").await;
    assert_eq!(status, 200);
    assert_eq!(
        page,
        json!({"room": "never-used", "messages": [], "next": null, "cursor": null, "last_id": null, "gap": null, "more": false})
    );
    let (_, rooms) = get(addr, "/rooms").await;
    assert!(!rooms.to_string().contains("never-used"));

    for (bad, needle) in [
        ("?since=nope", "invalid message id"),
        ("?limit=0", "limit"),
        ("?wait=61", "wait"),
    ] {
        let (status, body) = get(addr, &format!("/rooms/paged/messages{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
    }
}

#[tokio::test]
async fn long_poll_answers_at_once_after_a_publish_and_empty_on_timeout() {
    let server = start_with(unlimited()).await;
    let addr = server.http();
    let first = post(addr, "lp", "already here").await;

    let started = Instant::now();
    let (_, page) = get(addr, "/rooms/lp/messages?wait=30").await;
    assert_eq!(page["messages"][0]["text"], "already here");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "immediate when data exists"
    );

    let since = first["id"].as_str().unwrap().to_owned();
    let waiting = tokio::spawn(async move {
        get(addr, &format!("/rooms/lp/messages?since={since}&wait=30")).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "holds while nothing is new");
    let published_at = Instant::now();
    post(addr, "lp", "news").await;
    let (_, page) = tokio::time::timeout(TIMEOUT, waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(
        published_at.elapsed() < Duration::from_secs(5),
        "answered promptly"
    );
    assert_eq!(page["messages"][0]["text"], "news");

    let last = page["next"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let (status, page) = get(addr, &format!("/rooms/lp/messages?since={last}&wait=1")).await;
    assert_eq!(status, 200);
    assert_eq!(page["messages"], json!([]));
    assert_eq!(page["next"].as_str(), Some(last.as_str()));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // A long-poll on a room that does not exist yet is woken by its first message.
    let waiting = tokio::spawn(async move { get(addr, "/rooms/brand-new/messages?wait=30").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    post(addr, "brand-new", "first").await;
    let (_, page) = tokio::time::timeout(TIMEOUT, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page["messages"][0]["text"], "first");
}

#[tokio::test]
async fn sse_streams_messages_and_presence_of_the_default_room() {
    let server = start_with(unlimited()).await;
    let addr = server.http();
    let mut events = sse(addr, "", None).await; // the seed's EventSource("/events")
    let hello = next_of(&mut events, "joined").await;
    assert_eq!(
        hello.id,
        data(&hello)["cursor"].as_str().unwrap(),
        "the stream starts at a resume point"
    );
    assert_eq!(hello.retry, Some(Duration::from_millis(2000)));
    let (mut tcp, tcp_nick) = Line::connect(server.tcp()).await;
    let own = next_of(&mut events, "join").await;
    assert!(data(&own)["nick"].as_str().unwrap().starts_with("guest-"));
    let joined = next_of(&mut events, "join").await;
    assert_eq!(data(&joined)["nick"], tcp_nick);
    assert_eq!(
        joined.id, hello.id,
        "presence events do not move the resume point"
    );
    tcp.say("hello sse").await;
    let m = next_of(&mut events, "message").await;
    let v = data(&m);
    assert_eq!(
        (v["nick"].as_str(), v["text"].as_str(), v["room"].as_str()),
        (Some(tcp_nick.as_str()), Some("hello sse"), Some("lobby"))
    );
    assert_eq!(m.id, v["id"].as_str().unwrap());
}

#[tokio::test]
async fn sse_resume_with_last_event_id_gets_exactly_what_was_missed_then_live() {
    let server = start_with(unlimited()).await;
    let addr = server.http();
    let mut events = sse(addr, "?room=resume", None).await;
    post(addr, "resume", "before").await;
    let last = next_of(&mut events, "message").await.id;
    drop(events);

    for i in 0..100 {
        post(addr, "resume", &format!("missed {i}")).await;
    }
    let mut events = sse(addr, "?room=resume", Some(&last)).await;
    for i in 0..100 {
        let m = next_of(&mut events, "message").await;
        assert_eq!(data(&m)["text"], format!("missed {i}"));
        assert_eq!(seq(&m.id), seq(&last) + 1 + i);
    }
    post(addr, "resume", "live").await;
    assert_eq!(data(&next_of(&mut events, "message").await)["text"], "live");

    // `?since=` does the same for clients that cannot set headers.
    let mut again = sse(addr, &format!("?room=resume&since={last}"), None).await;
    assert_eq!(
        data(&next_of(&mut again, "message").await)["text"],
        "missed 0"
    );
}

#[tokio::test]
async fn resume_under_concurrent_publishing_has_no_gap_and_no_duplicate_100_times() {
    let server = start_with(unlimited()).await;
    let addr = server.http();
    let stop = tokio_util::sync::CancellationToken::new();
    let publisher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let http = client();
            let url = format!("http://{addr}/rooms/busy/messages");
            let mut n = 0u64;
            while !stop.is_cancelled() && n < 200_000 {
                let res = http.post(&url).body(format!("n{n}")).send().await.unwrap();
                assert_eq!(res.status(), 201);
                n += 1;
            }
            n
        })
    };
    let mut seen: Vec<u64> = Vec::new();
    let mut last: Option<String> = None;
    for round in 0..100 {
        let query = match &last {
            None => "?room=busy".to_owned(),
            Some(id) => format!("?room=busy&since={id}"),
        };
        let mut events = sse(addr, &query, None).await;
        // Read a few messages (some replayed, some live), then drop the connection.
        for _ in 0..3 {
            let m = next_of(&mut events, "message").await;
            if round == 0 && seen.is_empty() {
                seen.push(seq(&m.id) - 1);
            }
            seen.push(seq(&m.id));
            last = Some(m.id);
        }
    }
    stop.cancel();
    let published = tokio::time::timeout(TIMEOUT, publisher)
        .await
        .unwrap()
        .unwrap();
    assert!(
        published >= 300,
        "the publisher kept publishing ({published})"
    );
    for pair in seen.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "no gap and no duplicate across reconnects: {pair:?}"
        );
    }
}

#[tokio::test]
async fn a_cursor_older_than_history_gets_an_explicit_gap_event() {
    let server = start_with(Config {
        history_max_messages: 5,
        ..unlimited()
    })
    .await;
    let addr = server.http();
    let first = post(addr, "short", "m0").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 1..10 {
        post(addr, "short", &format!("m{i}")).await;
    }
    let mut events = sse(addr, &format!("?room=short&since={first}"), None).await;
    let gap = data(&next_of(&mut events, "gap").await);
    assert_eq!(gap["reason"], "expired");
    assert!(gap["first"].as_str().unwrap().ends_with("-6"), "{gap}");
    assert_eq!(data(&next_of(&mut events, "message").await)["text"], "m5");

    // An id from another epoch (history lost, e.g. a restart on the memory store).
    let stale = "00000001-3";
    let mut events = sse(addr, &format!("?room=short&since={stale}"), None).await;
    assert_eq!(data(&next_of(&mut events, "gap").await)["reason"], "reset");
    let (_, page) = get(addr, &format!("/rooms/short/messages?since={stale}")).await;
    assert_eq!(page["gap"], "reset");
    assert_eq!(page["messages"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn a_post_reaches_tcp_websocket_and_sse_clients_and_presence_spans_transports() {
    let server = start_with(unlimited()).await;
    let addr = server.http();
    let (mut tcp, tcp_nick) = Line::connect(server.tcp()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?nick=wsuser"))
        .await
        .unwrap();
    let mut events = sse(addr, "?nick=sseuser", None).await;
    next_of(&mut events, "join").await; // its own

    post(addr, "lobby", "to everyone").await;
    tcp.line_where(|l| l == "poster: to everyone").await;
    loop {
        let m = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if m.to_text().unwrap() == "poster: to everyone" {
            break;
        }
    }
    assert_eq!(
        data(&next_of(&mut events, "message").await)["text"],
        "to everyone"
    );

    let (_, presence) = get(addr, "/rooms/lobby/presence").await;
    let mut members: Vec<String> = presence["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m["nick"].as_str().unwrap(),
                m["transport"].as_str().unwrap()
            )
        })
        .collect();
    members.sort();
    let mut expected = vec![
        format!("{tcp_nick} tcp"),
        "sseuser sse".into(),
        "wsuser ws".into(),
    ];
    expected.sort();
    assert_eq!(members, expected);
    let (_, rooms) = get(addr, "/rooms").await;
    assert_eq!(rooms["rooms"][0]["name"], "lobby");
    assert_eq!(rooms["rooms"][0]["members"], 3);

    drop(events);
    tcp.line_where(|l| l == "* sseuser left lobby").await;
}

#[tokio::test]
async fn idempotency_key_makes_a_retried_post_safe() {
    let server = start_with(unlimited()).await;
    let addr = server.http();
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    let send = || {
        client()
            .post(format!("http://{addr}/rooms/lobby/messages"))
            .header("idempotency-key", "msg-42")
            .body("only once")
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let retry = send().await.unwrap();
    assert_eq!(retry.status(), 200);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(retry["duplicate"], true);
    tcp.line_where(|l| l == "anonymous: only once").await;
    tcp.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn tcp_history_and_since_and_websocket_join_since() {
    let server = start_with(unlimited()).await;
    let addr = server.http();
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(
                post(addr, "lobby", &format!("old {i}")).await["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        ids
    };
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    tcp.say("/history 2").await;
    assert_eq!(tcp.line().await, format!("[{}] poster: old 3", ids[3]));
    assert_eq!(tcp.line().await, format!("[{}] poster: old 4", ids[4]));
    assert_eq!(tcp.line().await, "* end of history of lobby");
    tcp.say(&format!("/since {}", ids[2])).await;
    assert_eq!(tcp.line().await, format!("[{}] poster: old 3", ids[3]));
    assert_eq!(tcp.line().await, format!("[{}] poster: old 4", ids[4]));
    assert_eq!(tcp.line().await, "* end of history of lobby");
    tcp.say("/since garbage").await;
    assert!(tcp.line().await.starts_with("ERR invalid message id"));

    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?format=json&room=other"))
            .await
            .unwrap();
    ws.send(Message::text(
        json!({"type": "join", "room": "lobby", "since": ids[3]}).to_string(),
    ))
    .await
    .unwrap();
    let mut replayed = Vec::new();
    while replayed.is_empty() {
        let m = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        if v["type"] == "message" {
            replayed.push(v["text"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(replayed, ["old 4"]);

    // /ws?since= replays on connect, in plain mode too.
    let (mut plain, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?since={}", ids[3]))
            .await
            .unwrap();
    let first = tokio::time::timeout(TIMEOUT, plain.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.to_text().unwrap(), "poster: old 4");
}

#[tokio::test]
async fn an_sse_client_that_stops_reading_is_dropped_as_a_slow_consumer() {
    let server = start_with(Config {
        queue_capacity: 64,
        ..unlimited()
    })
    .await;
    let addr = server.http();
    // Opened and never read: its socket buffers fill, then its queue.
    let stalled = client()
        .get(format!("http://{addr}/events?nick=stalled"))
        .send()
        .await
        .unwrap();
    let in_lobby = || async {
        let (_, presence) = get(addr, "/rooms/lobby/presence").await;
        presence.to_string().contains("stalled")
    };
    assert!(in_lobby().await);
    // The publisher is the only other member and TCP does not echo, so nobody else receives
    // the flood; presence over HTTP is the observer.
    let (publisher, _) = Line::connect(server.tcp()).await;
    let (_r, mut w) = publisher.into_parts();
    let big = "z".repeat(8_000);
    use tokio::io::AsyncWriteExt;
    let mut cut_after = None;
    for i in 0..4_000 {
        w.write_all(format!("{i} {big}\n").as_bytes())
            .await
            .unwrap();
        if i % 100 == 99 && !in_lobby().await {
            cut_after = Some(i + 1);
            break;
        }
    }
    assert!(
        cut_after.is_some(),
        "stalled SSE client still a member after 32 MB"
    );
    let (_, rooms) = get(addr, "/rooms").await;
    assert_eq!(
        rooms["rooms"][0]["members"], 1,
        "only the publisher is left"
    );
    drop(stalled);
}

#[tokio::test]
async fn every_curl_example_in_protocol_md_runs() {
    let server = start_with(unlimited()).await;
    let addr = server.http().to_string();
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let mut in_sh = false;
    let mut ran = 0;
    for line in doc.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            cmd if in_sh && cmd.starts_with("curl ") => {
                let cmd = cmd.replace("127.0.0.1:8000", &addr);
                let out = tokio::process::Command::new("sh")
                    .args(["-c", &cmd])
                    .output()
                    .await
                    .expect("curl is installed by scripts/test.sh");
                let stdout = String::from_utf8_lossy(&out.stdout);
                // A streaming example ends on its --max-time (curl exit code 28).
                let streaming = cmd.contains("/events");
                let ok = out.status.success() || (streaming && out.status.code() == Some(28));
                assert!(
                    ok,
                    "{cmd}: {:?} {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(!stdout.trim().is_empty(), "{cmd} printed nothing");
                assert!(!stdout.contains("\"error\""), "{cmd}: {stdout}");
                ran += 1;
            }
            _ => {}
        }
    }
    assert!(ran >= 8, "ran {ran} examples");
}

#[tokio::test]
async fn connect_prints_an_sse_stream() {
    let server = start_with(unlimited()).await;
    let addr = server.http();
    post(addr, "lobby", "one").await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "connect",
            &format!("http://{addr}/events?room=lobby&since=00000000-0"),
        ])
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    post(addr, "lobby", "two").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop().await;
    let out = tokio::time::timeout(TIMEOUT, out.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("poster: one\n") && text.contains("poster: two\n"),
        "{text}"
    );
    assert!(text.contains("* closed: server shutting down"), "{text}");
}

#[tokio::test]
async fn metrics_and_health_report_what_happened() {
    let server = start_with(unlimited()).await;
    let addr = server.http();
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    post(addr, "lobby", "counted").await;
    tcp.line_where(|l| l == "poster: counted").await;
    let res = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = res.text().await.unwrap();
    // Metrics are process-wide and other tests run alongside, so check presence and lower bounds.
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
    };
    assert!(value("switchboard_connections{transport=\"tcp\"}") >= 1.0);
    assert!(value("switchboard_messages_published_total") >= 1.0);
    assert!(value("switchboard_deliveries_total") >= 1.0);
    assert!(value("switchboard_delivery_latency_seconds_count") >= 1.0);
    assert!(value("switchboard_history_messages") >= 1.0);
    assert!(text.contains("switchboard_queued_events"));
    assert!(text.contains("switchboard_slow_consumer_disconnects_total"));
    let (status, health) = get(addr, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert!(health["connections"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn openapi_json_describes_every_route_and_what_schemathesis_found_stays_fixed() {
    let server = start_with(unlimited()).await;
    let addr = server.http();
    let spec = support::get_json(addr, "/openapi.json").await;
    assert_eq!(spec["openapi"], "3.1.0");
    let mut paths: Vec<&str> = spec["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/",
            "/admin",
            "/admin/connections",
            "/admin/rooms/{room}/close",
            "/admin/stats",
            "/admin/users/{nick}/kick",
            "/echo",
            "/events",
            "/healthz",
            "/metrics",
            "/mqtt",
            "/openapi.json",
            "/rooms",
            "/rooms/{room}/messages",
            "/rooms/{room}/presence",
            "/switchboard.d.ts",
            "/switchboard.js",
            "/users/{nick}/messages",
            "/ws",
        ]
    );
    // The chat's upgrade names its query and headers, and answers refusals in JSON.
    let ws = &spec["paths"]["/ws"]["get"];
    let params: Vec<&str> = ws["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "room",
        "nick",
        "format",
        "since",
        "token",
        "Sec-WebSocket-Key",
    ] {
        assert!(params.contains(&name), "/ws documents {name}: {params:?}");
    }
    for status in ["101", "400", "401", "403", "426", "503"] {
        assert!(
            ws["responses"].get(status).is_some(),
            "/ws documents {status}"
        );
    }
    let publish = &spec["paths"]["/rooms/{room}/messages"]["post"]["responses"];
    for status in [
        "200", "201", "400", "401", "403", "408", "409", "413", "415", "429", "503",
    ] {
        assert!(publish.get(status).is_some(), "publish documents {status}");
    }
    assert!(spec["components"]["securitySchemes"]["api_key"].is_object());

    // `last` with `since`: the newest N after it (it was a 400 before).
    let ids: Vec<String> = futures_util::future::join_all((0..5).map(|i| async move {
        post(addr, "both", &format!("m{i}")).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }))
    .await;
    let page = support::get_json(
        addr,
        &format!("/rooms/both/messages?last=2&since={}", ids[3]),
    )
    .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "{page}");
    // Ids are strictly HEX-DIGITS: a sign or a 20-digit number is a 400, not a wrap.
    for bad in [
        "00000001-+5",
        "00000001-99999999999999999999",
        "-5",
        "00000001- 5",
    ] {
        let res = client()
            .get(format!("http://{addr}/rooms/both/messages"))
            .query(&[("since", bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
    // Every nick given is checked, also an empty X-Nick that a JSON nick would win over.
    let res = client()
        .post(format!("http://{addr}/rooms/both/messages"))
        .header("x-nick", "")
        .header("content-type", "application/json")
        .body(r#"{"text":"hi","nick":"jo"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["code"], "bad_name");
    server.stop().await;
}

#[tokio::test]
async fn pages_the_origin_policy_admits_get_cors_answers_and_others_get_none() {
    let server = start_with(Config {
        allowed_origins: vec!["https://app.example".into()],
        ..test_config()
    })
    .await;
    let addr = server.http();
    let preflight = |origin: &'static str| {
        client()
            .request(
                reqwest::Method::OPTIONS,
                format!("http://{addr}/rooms/team/messages"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,idempotency-key,authorization",
            )
            .send()
    };
    for origin in ["https://app.example", "http://localhost:3000"] {
        let res = preflight(origin).await.unwrap();
        assert_eq!(res.status(), 200, "{origin}");
        let h = res.headers();
        assert_eq!(h["access-control-allow-origin"], origin);
        let allowed = h["access-control-allow-headers"].to_str().unwrap();
        for name in [
            "content-type",
            "idempotency-key",
            "authorization",
            "x-nick-key",
        ] {
            assert!(allowed.contains(name), "{name} in {allowed}");
        }
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
    }
    let evil = preflight("https://evil.example").await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());

    // An admitted page reads answers, and a publish from it goes through.
    let res = client()
        .post(format!("http://{addr}/rooms/team/messages"))
        .header("origin", "https://app.example")
        .header("content-type", "application/json")
        .body(r#"{"text":"from the app","nick":"app"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        res.headers()["vary"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("origin")
    );
    // Another site's page is refused its POST, and gets nothing it could read.
    let res = client()
        .post(format!("http://{addr}/rooms/team/messages"))
        .header("origin", "https://evil.example")
        .body("from elsewhere")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.headers().get("access-control-allow-origin").is_none());
    // The module stays importable from anywhere: its `*` is kept, or the origin named.
    for (origin, want) in [
        ("https://evil.example", "*"),
        ("https://app.example", "https://app.example"),
    ] {
        let res = client()
            .get(format!("http://{addr}/switchboard.js"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        let values: Vec<_> = res
            .headers()
            .get_all("access-control-allow-origin")
            .iter()
            .collect();
        assert_eq!(
            values,
            [want],
            "one Access-Control-Allow-Origin for {origin}"
        );
    }
}

/// A rate-limited HTTP/1.1 keep-alive client gets an answer to every request: the 429 waits
/// for the body it refused, so the connection is not closed with unread bytes in it (which
/// reset it and lost the answer in flight).
#[tokio::test]
async fn a_rate_limited_keep_alive_client_gets_every_answer() {
    let server = start_with(Config {
        publish_rate: 1.0,
        publish_burst: 1.0,
        ..test_config()
    })
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .http1_only()
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let body = "y".repeat(8 * 1024);
    let (mut created, mut limited) = (0, 0);
    for i in 0..300 {
        let res = client
            .post(format!("http://{}/rooms/busy/messages", server.http()))
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} got no answer: {e}"));
        match res.status().as_u16() {
            201 => created += 1,
            429 => {
                let v: serde_json::Value = res.json().await.unwrap();
                assert_eq!(v["code"], "rate_limited");
                limited += 1;
            }
            other => panic!("request {i}: {other}"),
        }
    }
    assert!(
        created >= 1 && limited >= 250,
        "{created} created, {limited} limited"
    );
    server.stop().await;
}
