//! Webhooks against a real local HTTP receiver (axum on loopback) that checks every signature:
//! what each room change sends, a receiver that hangs, fails and comes back (nothing lost, in
//! order, and the room never waits for it), a restart with events still queued, filters, and
//! the queue's bound.

#[path = "support/redis.rs"]
mod redis_server;
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use support::*;
use switchboard::Config;
use switchboard::auth::Pattern;
use switchboard::webhook::{Endpoint, HookKind, WebhookConfig};

const SECRET: &str = "webhook-secret-0123456789";

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Ok,
    Unavailable,
    /// Holds the request without answering (until the sender's timeout).
    Hang,
}

#[derive(Default)]
struct Seen {
    events: Vec<Value>,
    posts: usize,
    refused: usize,
    /// POSTs whose signature did not verify under this receiver's secret (answered 401).
    forged: usize,
}

struct Receiver {
    addr: SocketAddr,
    secret: &'static str,
    answer: Arc<Mutex<Answer>>,
    seen: Arc<Mutex<Seen>>,
    stop: tokio_util::sync::CancellationToken,
}

type Shared = (Arc<Mutex<Answer>>, Arc<Mutex<Seen>>, &'static str);

/// Checks what a receiver must check: the HMAC of the raw body, the timestamp in the body
/// against the header and the clock. A signature that does not verify under this receiver's
/// secret is answered 401 and counted (`Seen::forged`), which `wait_for` fails on.
async fn hook(
    State((answer, seen, secret)): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let answer = *answer.lock().unwrap();
    if answer == Answer::Hang {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&body);
    let given = headers["x-switchboard-signature"].to_str().unwrap();
    let hex = given.strip_prefix("sha256=").expect("sha256= prefix");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    if mac.verify_slice(&bytes).is_err() {
        seen.lock().unwrap().forged += 1;
        return StatusCode::UNAUTHORIZED;
    }
    assert_eq!(headers["content-type"], "application/json");
    let v: Value = serde_json::from_slice(&body).unwrap();
    let ts = v["timestamp"].as_u64().unwrap();
    assert_eq!(
        headers["x-switchboard-timestamp"].to_str().unwrap(),
        ts.to_string()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(ts) < 60, "timestamp {ts} is now");
    let mut seen = seen.lock().unwrap();
    seen.posts += 1;
    if answer == Answer::Unavailable {
        seen.refused += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    seen.events
        .extend(v["events"].as_array().unwrap().iter().cloned());
    StatusCode::NO_CONTENT
}

impl Receiver {
    async fn start(answer: Answer) -> Receiver {
        Self::signed_with(SECRET, answer).await
    }

    /// A receiver that verifies with its own `secret`.
    async fn signed_with(secret: &'static str, answer: Answer) -> Receiver {
        Self::answering(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            secret,
            answer,
        )
    }

    fn on(listener: tokio::net::TcpListener, answer: Answer) -> Receiver {
        Self::answering(listener, SECRET, answer)
    }

    fn answering(
        listener: tokio::net::TcpListener,
        secret: &'static str,
        answer: Answer,
    ) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state((Arc::clone(&answer), Arc::clone(&seen), secret));
        let stop = tokio_util::sync::CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(until.cancelled_owned())
                .await
                .unwrap();
        });
        Receiver {
            addr,
            secret,
            answer,
            seen,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn events(&self) -> Vec<Value> {
        self.seen.lock().unwrap().events.clone()
    }

    /// Waits (bounded) until `pred` holds for the events received so far.
    async fn wait_for(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let forged = self.seen.lock().unwrap().forged;
            assert_eq!(forged, 0, "POSTs whose signature did not verify");
            let events = self.events();
            if pred(&events) {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "receiver never saw {what}; got {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn hooks(urls: &[String]) -> WebhookConfig {
    WebhookConfig {
        endpoints: urls
            .iter()
            .map(|u| Endpoint {
                url: u.parse().unwrap(),
                secret: SECRET.into(),
                events: Vec::new(),
                rooms: Vec::new(),
            })
            .collect(),
        queue_max: 10_000,
        queue_max_bytes: 64 * 1024 * 1024,
        batch_max: 100,
        timeout: Duration::from_secs(1),
    }
}

fn with_hooks(hooks: WebhookConfig) -> Config {
    Config {
        webhooks: Some(hooks),
        ..flood_config()
    }
}

fn names(events: &[Value], room: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["room"] == room)
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

fn texts(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["name"] == "message")
        .map(|e| e["message"]["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_room_tells_the_receiver_it_was_occupied_joined_posted_left_and_vacated() {
    let receiver = Receiver::start(Answer::Ok).await;
    let server = start_with(with_hooks(hooks(&[receiver.url()]))).await;
    let (mut alice, _) = Line::connect(server.tcp()).await;
    alice.say("/nick alice").await;
    alice.line_where(|l| l.contains("you are now alice")).await;
    alice.say("/join ops").await;
    alice.line_where(|l| l.contains("you joined ops")).await;
    alice.say("deploy starts").await;
    let id = publish_to(server.http(), "ops", "from curl").await.unwrap();
    alice.say("/quit").await;
    let events = receiver
        .wait_for("ops vacated", |e| {
            names(e, "ops").contains(&"room_vacated".into())
        })
        .await;
    assert_eq!(
        names(&events, "ops"),
        [
            "room_occupied",
            "member_joined",
            "message",
            "message",
            "member_left",
            "room_vacated"
        ]
    );
    let ops: Vec<&Value> = events.iter().filter(|e| e["room"] == "ops").collect();
    assert_eq!(ops[1]["nick"], "alice");
    assert_eq!(ops[1]["transport"], "tcp");
    assert_eq!(ops[2]["message"]["text"], "deploy starts");
    assert_eq!(ops[2]["message"]["nick"], "alice");
    assert_eq!(ops[3]["message"]["id"], id.as_str());
    assert_eq!(
        ops[3]["id"],
        format!("ops/{id}"),
        "a message's event id is room/id"
    );
    assert!(ops.iter().all(|e| e["time"].as_u64().unwrap() > 0));
    // Every event id is unique, so a receiver can drop a batch it is sent twice.
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n);
    // lobby: alice arrived there first, then moved.
    assert_eq!(
        names(&events, "lobby")[..2],
        ["room_occupied".to_owned(), "member_joined".to_owned()]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_receiver_that_hangs_then_fails_then_returns_gets_everything_in_order_and_rooms_never_wait()
 {
    let receiver = Receiver::start(Answer::Hang).await;
    let server = start_with(with_hooks(hooks(&[receiver.url()]))).await;
    let (mut watcher, _) = Line::connect(server.tcp()).await;
    watcher.say("/join flood").await;
    watcher.line_where(|l| l.contains("you joined flood")).await;
    // While the receiver holds every POST, messages reach the room's member at once (fewer
    // than its queue holds, so that this test reader is not cut as a slow consumer).
    let (mut writer, _) = Line::connect(server.tcp()).await;
    writer.say("/join flood").await;
    writer.line_where(|l| l.contains("you joined flood")).await;
    const N: usize = 800;
    let lines: String = (0..N).map(|i| format!("m{i}\n")).collect();
    writer.send(&lines).await;
    for i in 0..N {
        let line = watcher.line_where(|l| l.contains(": m")).await;
        assert!(line.ends_with(&format!("m{i}")), "{line}");
    }
    // The receiver fails for a while, then answers again.
    receiver.set(Answer::Unavailable);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while receiver.seen.lock().unwrap().refused == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no POST came while it failed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The receiver counts its 503 before the server has read it: the counter is polled.
    let (metrics, failures) = loop {
        let metrics = http_client()
            .get(format!("http://{}/metrics", server.http()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let failures = metrics
            .lines()
            .find(|l| l.starts_with("switchboard_webhook_failures_total "))
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|n| n.parse::<u64>().ok())
            .expect("the failure counter is exported");
        if failures >= 2 || tokio::time::Instant::now() >= deadline {
            break (metrics, failures);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(failures >= 2, "a timeout and a 503 at least: {failures}");
    assert!(
        metrics.contains("switchboard_webhook_events_queued "),
        "{metrics}"
    );
    receiver.set(Answer::Ok);
    let events = receiver
        .wait_for("every message", |e| texts(e).len() >= N)
        .await;
    // In order and complete; a batch may come twice only after a lost answer, never here.
    let expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(texts(&events), expected);
    server.stop().await;
}

#[tokio::test]
async fn events_queued_when_the_server_stops_are_sent_after_it_restarts() {
    // A port with nobody on it: every POST is refused until the receiver starts there.
    let parked = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = parked.local_addr().unwrap().port();
    drop(parked);
    let url = format!("http://127.0.0.1:{port}/hook");
    let dir = tempfile::tempdir().unwrap();
    let config = || Config {
        store: switchboard::config::StoreKind::Sqlite,
        data_dir: dir.path().to_owned(),
        ..with_hooks(hooks(std::slice::from_ref(&url)))
    };
    let server = start_with(config()).await;
    for text in ["before 1", "before 2", "before 3"] {
        publish_to(server.http(), "kept", text).await.unwrap();
    }
    // Let the dispatcher write them down, then stop with nothing delivered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.stop().await;
    assert!(dir.path().join("webhooks.sqlite3").exists());

    let server = start_with(config()).await;
    publish_to(server.http(), "kept", "after").await.unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let receiver = Receiver::on(listener, Answer::Ok);
    let events = receiver
        .wait_for("all four messages", |e| texts(e).len() >= 4)
        .await;
    assert_eq!(
        texts(&events),
        ["before 1", "before 2", "before 3", "after"]
    );
    server.stop().await;
}

#[tokio::test]
async fn an_endpoint_gets_only_the_events_and_rooms_it_asked_for_and_a_full_queue_drops_its_oldest()
{
    let news = Receiver::start(Answer::Ok).await;
    let small = Receiver::start(Answer::Unavailable).await;
    let mut config = hooks(&[news.url()]);
    config.endpoints[0].events = vec![HookKind::Message];
    config.endpoints[0].rooms = vec![Pattern::new("news.*")];
    let server = start_with(with_hooks(config)).await;
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    tcp.say("/join news.tech").await;
    tcp.line_where(|l| l.contains("you joined")).await;
    tcp.say("in news").await;
    publish_to(server.http(), "lobby", "not news")
        .await
        .unwrap();
    publish_to(server.http(), "news.sport", "also news")
        .await
        .unwrap();
    let events = news.wait_for("both news", |e| texts(e).len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = if news.events().len() > events.len() {
        news.events()
    } else {
        events
    };
    assert!(events.iter().all(|e| e["name"] == "message"), "{events:#?}");
    assert_eq!(texts(&events), ["in news", "also news"]);
    server.stop().await;

    // A queue of 5, a receiver that refuses: the newest 5 of 20 are what is left to send.
    let mut config = hooks(&[small.url()]);
    config.queue_max = 5;
    config.endpoints[0].events = vec![HookKind::Message];
    let server = start_with(with_hooks(config)).await;
    for i in 0..20 {
        publish_to(server.http(), "busy", &format!("n{i}"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    small.set(Answer::Ok);
    let events = small
        .wait_for("the newest five", |e| texts(e).len() >= 5)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        texts(&small.events()),
        ["n15", "n16", "n17", "n18", "n19"],
        "{events:#?}"
    );
    server.stop().await;

    // Bounded in bytes too: 1 MiB holds about 15 messages of 64 KiB, the newest of 40.
    let big = Receiver::start(Answer::Unavailable).await;
    let mut config = hooks(&[big.url()]);
    config.queue_max_bytes = 1024 * 1024;
    config.endpoints[0].events = vec![HookKind::Message];
    let server = start_with(with_hooks(config)).await;
    let text = |i: usize| format!("{i:02}{}", "x".repeat(64 * 1024 - 200));
    for i in 0..40 {
        publish_to(server.http(), "heavy", &text(i)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    big.set(Answer::Ok);
    let events = big
        .wait_for("the newest", |e| {
            texts(e).iter().any(|t| t.starts_with("39"))
        })
        .await;
    let kept: Vec<String> = texts(&events).iter().map(|t| t[..2].to_owned()).collect();
    let expected: Vec<String> = (40 - kept.len()..40).map(|i| format!("{i:02}")).collect();
    assert_eq!(kept, expected, "the newest, in order");
    assert!(
        (10..=16).contains(&kept.len()),
        "about 1 MiB of 64 KiB messages: {}",
        kept.len()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_cluster_tells_each_message_once_from_the_node_it_was_published_through() {
    let redis = redis_server::Redis::start();
    let receiver = Receiver::start(Answer::Ok).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = |dir: &tempfile::TempDir| Config {
        store: switchboard::config::StoreKind::Redis,
        redis: Some(redis.url()),
        data_dir: dir.path().to_owned(),
        ..with_hooks(hooks(&[receiver.url()]))
    };
    let a = start_with(node(&dir_a)).await;
    let b = start_with(node(&dir_b)).await;
    // A member on each node, so that both hold the room and both apply every message.
    let (mut on_a, _) = Line::connect(a.tcp()).await;
    on_a.say("/join both").await;
    on_a.line_where(|l| l.contains("you joined both")).await;
    let (mut on_b, _) = Line::connect(b.tcp()).await;
    on_b.say("/join both").await;
    on_b.line_where(|l| l.contains("you joined both")).await;

    publish_to(a.http(), "both", "http via a").await.unwrap();
    on_b.say("tcp via b").await;
    publish_to(b.http(), "both", "http via b").await.unwrap();
    for member in [&mut on_a, &mut on_b] {
        member.line_where(|l| l.ends_with("http via b")).await;
    }
    receiver
        .wait_for("three messages", |e| texts(e).len() >= 3)
        .await;
    // A second telling would come from the other node's sender within its first POST.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut told = texts(&receiver.events());
    told.sort_unstable();
    assert_eq!(told, ["http via a", "http via b", "tcp via b"]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn each_endpoint_is_signed_with_its_own_secret() {
    let first = Receiver::signed_with("first-receivers-secret-01", Answer::Ok).await;
    let second = Receiver::signed_with("second-receivers-secret-02", Answer::Ok).await;
    let mut config = hooks(&[first.url(), second.url()]);
    config.endpoints[0].secret = first.secret.into();
    config.endpoints[1].secret = second.secret.into();
    let server = start_with(with_hooks(config)).await;
    publish_to(server.http(), "signed", "for both")
        .await
        .unwrap();
    for receiver in [&first, &second] {
        let events = receiver
            .wait_for("the message", |e| texts(e).contains(&"for both".into()))
            .await;
        assert_eq!(texts(&events), ["for both"]);
    }
    // A receiver holding another endpoint's secret refuses everything sent to it.
    let wrong = Receiver::signed_with("first-receivers-secret-01", Answer::Ok).await;
    let mut config = hooks(&[wrong.url()]);
    config.endpoints[0].secret = second.secret.into();
    let other = start_with(with_hooks(config)).await;
    publish_to(other.http(), "signed", "forged?").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while wrong.seen.lock().unwrap().forged == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the POST never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(wrong.events().is_empty());
    server.stop().await;
    other.stop().await;
}
