//! Two nodes sharing rooms through a real `redis-server`: one order and one set of ids on
//! every node and transport, resume from any node, presence across nodes, idempotency across
//! nodes, Redis killed and restarted under the nodes, and retention in the streams.
//!
//! Each node is a full `Server` on its own ports with its own hub and its own Redis
//! connections; the only thing the two share is Redis.

mod support;

#[path = "support/redis.rs"]
mod redis_server;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::{SinkExt, Stream, StreamExt};
use redis_server::Redis;
use serde_json::Value;
use support::{
    Line, SERVE_HTTP_ONLY, Spawned, TIMEOUT, TestServer, addr_of, get_json, history_of,
    publish_until_cut, spawn_logged, start_with, test_config,
};
use switchboard::Config;
use switchboard::config::StoreKind;
use tokio_tungstenite::tungstenite::Message;

fn node_config(redis: &Redis) -> Config {
    Config {
        store: StoreKind::Redis,
        redis: Some(redis.url()),
        publish_rate: 0.0,
        ..test_config()
    }
}

async fn node(redis: &Redis) -> TestServer {
    start_with(node_config(redis)).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(TIMEOUT).build().unwrap()
}

/// Publishes over HTTP; returns the status and the JSON answer.
async fn post(addr: SocketAddr, room: &str, text: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = client()
        .post(format!("http://{addr}/rooms/{room}/messages"))
        .header("x-nick", "poster")
        .body(text.to_owned());
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

type Events = std::pin::Pin<Box<dyn Stream<Item = eventsource_stream::Event> + Send>>;

async fn sse(addr: SocketAddr, room: &str) -> Events {
    let res = client()
        .get(format!("http://{addr}/events?room={room}"))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    Box::pin(res.bytes_stream().eventsource().map(|e| e.unwrap()))
}

/// The next `message` event's (id, text).
async fn sse_message(events: &mut Events) -> (String, String) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.next()).await {
            Ok(Some(e)) if e.event == "message" => {
                let v: Value = serde_json::from_str(&e.data).unwrap();
                return (e.id, v["text"].as_str().unwrap().to_owned());
            }
            Ok(Some(_)) => continue,
            other => panic!("no message event: {other:?}"),
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(addr: SocketAddr, query: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws?{query}"))
        .await
        .expect("websocket connect")
        .0
}

/// The next text frame that is a chat line (not a `*` notice).
async fn ws_line(ws: &mut Ws) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if !t.starts_with('*') => return t.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no chat line: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_ids_order_and_history_across_transports() {
    let redis = Redis::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    // A WebSocket client on A, an SSE client and a TCP client on B.
    let mut on_a = ws(a.http(), "room=lobby&nick=wsa").await;
    let mut sse_b = sse(b.http(), "lobby").await;
    let (mut tcp_b, _) = Line::connect(b.tcp()).await;
    // Both nodes publish at once, interleaved.
    let count = 40;
    let publish = |addr: SocketAddr, tag: &'static str| async move {
        let mut ids = Vec::new();
        for i in 0..count / 2 {
            let (status, body) = post(addr, "lobby", &format!("{tag}{i}"), None).await;
            assert_eq!(status, 201, "{body}");
            ids.push(body["id"].as_str().unwrap().to_owned());
        }
        ids
    };
    let (ids_a, ids_b) = tokio::join!(publish(a.http(), "a"), publish(b.http(), "b"));
    let mut ids: Vec<String> = ids_a.into_iter().chain(ids_b).collect();
    ids.sort_by_key(|id| seq(id));
    let seqs: Vec<u64> = ids.iter().map(|id| seq(id)).collect();
    assert_eq!(seqs, (1..=count as u64).collect::<Vec<_>>(), "one counter");
    let epoch = ids[0].split('-').next().unwrap().to_owned();
    assert!(ids.iter().all(|id| id.starts_with(&epoch)), "one epoch");

    // Every client sees all of them in id order.
    let mut sse_seen = Vec::new();
    let mut ws_seen = Vec::new();
    let mut tcp_seen = Vec::new();
    for _ in 0..count {
        sse_seen.push(sse_message(&mut sse_b).await);
        ws_seen.push(ws_line(&mut on_a).await);
        tcp_seen.push(tcp_b.line_where(|l| l.starts_with("poster: ")).await);
    }
    let sse_ids: Vec<&str> = sse_seen.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(sse_ids, ids, "SSE on B in id order");
    let texts: Vec<&str> = sse_seen.iter().map(|(_, t)| t.as_str()).collect();
    let ws_texts: Vec<&str> = ws_seen
        .iter()
        .map(|l| l.strip_prefix("poster: ").unwrap())
        .collect();
    let tcp_texts: Vec<&str> = tcp_seen
        .iter()
        .map(|l| l.strip_prefix("poster: ").unwrap())
        .collect();
    assert_eq!(ws_texts, texts, "WebSocket on A in the same order");
    assert_eq!(tcp_texts, texts, "TCP on B in the same order");

    // Either node serves a resume from any cursor, the same way.
    let cursor = &ids[9];
    for node in [&a, &b] {
        let page = get_json(
            node.http(),
            &format!("/rooms/lobby/messages?since={cursor}"),
        )
        .await;
        let got: Vec<&str> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, ids[10..], "resume from {cursor}");
    }
    // A node that has never seen the room loads it from Redis.
    let c = node(&redis).await;
    let page = get_json(c.http(), "/rooms/lobby/messages?last=3").await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 3);
    assert_eq!(page["messages"][2]["id"], ids[count - 1]);
    // A TCP client's line gets the next id everywhere.
    tcp_b.say("from tcp").await;
    let (id, text) = sse_message(&mut sse_b).await;
    assert_eq!((seq(&id), text.as_str()), (count as u64 + 1, "from tcp"));
    assert!(ws_line(&mut on_a).await.ends_with(": from tcp"));
    on_a.close(None).await.ok();
}

fn seq(id: &str) -> u64 {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes_and_keys_are_shared() {
    let redis = Redis::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (mut alice, _) = Line::connect(a.tcp()).await;
    alice.say("/nick alice").await;
    alice.line_where(|l| l.contains("alice")).await;
    // A hears lobby's bus once its subscription, made when Alice's join created the room
    // there, is live; a presence change told before that is not replayed (messages are, from
    // the stream), so probe from B until Alice hears one.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        post(b.http(), "lobby", "probe", None).await;
        if alice
            .try_line(Duration::from_millis(100))
            .await
            .is_some_and(|l| l.contains("probe"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "node A never heard lobby's bus");
    }
    let (mut bob, _) = Line::connect(b.tcp()).await;
    // Alice, on A, hears Bob join on B.
    alice
        .line_where(|l| l.starts_with("* ") && l.contains("joined lobby"))
        .await;
    // Each node lists both.
    for (name, node) in [("a", &a), ("b", &b)] {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let body = get_json(node.http(), "/rooms/lobby/presence").await;
            let nicks: Vec<&str> = body["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["nick"].as_str().unwrap())
                .collect();
            if nicks.contains(&"alice") && nicks.len() == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "presence on node {name}: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    bob.say("/who").await;
    let who = bob.line_where(|l| l.starts_with("* in lobby:")).await;
    assert!(who.contains("alice (tcp)"), "{who}");
    // Alice leaves; Bob, on the other node, is told and she is gone from presence.
    alice.say("/quit").await;
    bob.line_where(|l| l.contains("alice left lobby")).await;
    let body = get_json(b.http(), "/rooms/lobby/presence").await;
    assert_eq!(body["members"].as_array().unwrap().len(), 1, "{body}");

    // One idempotency key, used on both nodes: one message.
    let (first, body1) = post(a.http(), "keys", "once", Some("k-1")).await;
    let (again, body2) = post(b.http(), "keys", "once", Some("k-1")).await;
    assert_eq!((first, again), (201, 200));
    assert_eq!(body1["id"], body2["id"]);
    assert_eq!(body2["duplicate"], true);
    let page = get_json(b.http(), "/rooms/keys/messages").await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_is_ridden_out_with_clear_errors_and_no_disconnects() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut sse_b = sse(b.http(), "lobby").await;
    let (mut tcp_a, _) = Line::connect(a.tcp()).await;
    let mut ws_b = ws(b.http(), "room=lobby&nick=w").await;
    let (status, before) = post(a.http(), "lobby", "before", None).await;
    assert_eq!(status, 201);
    assert_eq!(sse_message(&mut sse_b).await.1, "before");
    assert_eq!(ws_line(&mut ws_b).await, "poster: before");

    redis.kill();
    // Publishing fails loudly on every transport; nobody is thrown out.
    let (status, body) = post(a.http(), "lobby", "lost?", None).await;
    assert_eq!(status, 503, "{body}");
    tcp_a.say("during").await;
    let err = tcp_a.line_where(|l| l.starts_with("ERR")).await;
    assert!(err.contains("not sent"), "{err}");
    ws_b.send(Message::text("during ws")).await.unwrap();
    let err = ws_line(&mut ws_b).await;
    assert!(err.starts_with("ERR message not sent"), "{err}");

    redis.restart();
    // The nodes reconnect by themselves; publishing works again within a bounded wait.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let (status, body) = post(b.http(), "lobby", "after", None).await;
        if status == 201 {
            break body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "publishing never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(seq(after["id"].as_str().unwrap()), 2, "ids carry on");
    assert_eq!(
        after["id"].as_str().unwrap().split('-').next(),
        before["id"].as_str().unwrap().split('-').next(),
        "same epoch: Redis kept the room"
    );
    // Clients connected throughout get it: from the bus, or from the catch-up after the
    // bus reconnects.
    assert_eq!(sse_message(&mut sse_b).await.1, "after");
    assert_eq!(ws_line(&mut ws_b).await, "poster: after");
    tcp_a.line_where(|l| l == "poster: after").await;
    // A resume from before the outage has exactly what followed.
    let page = get_json(
        a.http(),
        &format!(
            "/rooms/lobby/messages?since={}",
            before["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    assert_eq!(page["messages"][0]["text"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_bounds_the_streams_in_redis() {
    let redis = Redis::start();
    let config = Config {
        history_max_messages: 5,
        ..node_config(&redis)
    };
    let a = start_with(config).await;
    for i in 0..30 {
        let (status, _) = post(a.http(), "capped", &format!("m{i}"), None).await;
        assert_eq!(status, 201);
    }
    let mut conn = redis.conn();
    let len: usize = redis::cmd("XLEN")
        .arg("switchboard:log:capped")
        .query(&mut conn)
        .unwrap();
    assert_eq!(len, 5, "count limit enforced in Redis");
    let ttl: i64 = redis::cmd("PTTL")
        .arg("switchboard:log:capped")
        .query(&mut conn)
        .unwrap();
    assert!(ttl > 0, "an idle room's stream expires with the age limit");
    let page = get_json(a.http(), "/rooms/capped/messages?since=00000000-0").await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 5);

    // Age: a node with a 1 s limit; the old messages go from Redis, not just from memory.
    let config = Config {
        history_max_age: Duration::from_secs(1),
        ..node_config(&redis)
    };
    let b = start_with(config).await;
    for i in 0..3 {
        post(b.http(), "aging", &format!("old{i}"), None).await;
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, _) = post(b.http(), "aging", "new", None).await;
    assert_eq!(status, 201);
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("switchboard:log:aging")
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    assert_eq!(entries.len(), 1, "expired entries trimmed: {entries:?}");
    let page = get_json(b.http(), "/rooms/aging/messages").await;
    assert_eq!(page["messages"][0]["text"], "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_is_in_its_nodes_history_as_soon_as_it_is_answered() {
    let redis = Redis::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    // A member on each node keeps the room loaded there, so reads come from the node's own
    // copy, which the bus fills a moment after Redis answers.
    let _stay_a = sse(a.http(), "ryw").await;
    let _stay_b = sse(b.http(), "ryw").await;
    // Each node names itself, so that a client behind a load balancer can say which it hit.
    let (_, health_a) = health(a.http()).await;
    let (_, health_b) = health(b.http()).await;
    for h in [&health_a, &health_b] {
        let node = h["node"].as_str().unwrap_or_default();
        assert!(
            node.len() == 16 && node.bytes().all(|c| c.is_ascii_hexdigit()),
            "{h}"
        );
    }
    assert_ne!(health_a["node"], health_b["node"]);
    for i in 0..40 {
        let through = if i % 2 == 0 { a.http() } else { b.http() };
        let (status, answer) = post(through, "ryw", &format!("m{i}"), None).await;
        assert_eq!(status, 201, "{answer}");
        let page = get_json(through, "/rooms/ryw/messages?last=1").await;
        assert_eq!(
            page["messages"][0]["id"], answer["id"],
            "publish {i} is read back from the node that answered it: {page}"
        );
    }
}

/// `switchboard serve --redis URL`, the real binary, on free ports; killed when dropped.
struct Process {
    _process: Spawned,
    http: SocketAddr,
}

impl Process {
    fn start(redis: &Redis) -> Process {
        Process::start_with(redis, &[])
    }

    fn start_with(redis: &Redis, extra: &[&str]) -> Process {
        let url = redis.url();
        let mut args = SERVE_HTTP_ONLY.to_vec();
        args.extend(["--redis", &url]);
        args.extend(extra);
        let (process, addrs) = spawn_logged(&args);
        Process {
            _process: process,
            http: addr_of(&addrs, "http"),
        }
    }
}

async fn health(addr: SocketAddr) -> (u16, Value) {
    let res = client()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Polls `/healthz` until it reports `want` for Redis, within a bounded wait.
async fn wait_health(addr: SocketAddr, want: &str) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = health(addr).await;
        if body["redis"] == want {
            return (status, body);
        }
        assert!(Instant::now() < deadline, "redis never {want}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_with_one_flag_each() {
    let mut redis = Redis::start();
    let (a, b) = (Process::start(&redis), Process::start(&redis));
    let (status, body) = wait_health(b.http, "up").await;
    assert_eq!((status, &body["status"]), (200, &Value::from("ok")));
    let mut events = sse(b.http, "procs").await;
    let (status, sent) = post(a.http, "procs", "across processes", None).await;
    assert_eq!(status, 201, "{sent}");
    let (id, text) = sse_message(&mut events).await;
    assert_eq!(
        (id.as_str(), text.as_str()),
        (sent["id"].as_str().unwrap(), "across processes")
    );
    // Health says when a node has lost Redis, and recovers with it.
    redis.kill();
    let (status, body) = wait_health(a.http, "down").await;
    assert_eq!((status, &body["status"]), (503, &Value::from("degraded")));
    redis.restart();
    let (status, _) = wait_health(a.http, "up").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_no_acknowledged_message() {
    let redis = Redis::start();
    let flags = ["--history-max-messages", "100000", "--publish-rate", "0"];
    let a = Process::start_with(&redis, &flags);
    let b = Process::start_with(&redis, &flags);
    // Eight publishers on A until the kill cuts them off.
    let http = a.http;
    let kill = async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        drop(a); // SIGKILL
    };
    let mut acked = publish_until_cut(http, "load", 8, kill).await;
    assert!(
        acked.len() > 100,
        "only {} publishes before the kill",
        acked.len()
    );
    eprintln!("node killed after {} acknowledged publishes", acked.len());
    acked.sort_by_key(|(id, _)| seq(id));
    // B, and a node started afterwards, both hold every acknowledged message, in order.
    let c = Process::start_with(&redis, &flags);
    for node in [b.http, c.http] {
        let kept = history_of(node, "load").await;
        let seqs: Vec<u64> = kept.iter().map(|(id, _)| seq(id)).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] + 1 == w[1]),
            "no holes, in order"
        );
        let kept: std::collections::HashSet<_> = kept.into_iter().collect();
        let missing: Vec<_> = acked.iter().filter(|m| !kept.contains(*m)).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged but lost: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

#[tokio::test]
async fn a_senders_standing_crosses_nodes_on_the_bus_and_in_the_stream() {
    let redis = Redis::start();
    let secret = "cluster-secret-0123456789abcdef012345";
    let config = || {
        let mut c = node_config(&redis);
        c.auth.secrets = vec![secret.into()];
        c.auth.api_keys = vec!["cluster-key-0123456789".into()];
        c
    };
    let (a, b) = (start_with(config()).await, start_with(config()).await);
    let mut grants = switchboard::auth::Grants::default();
    let (p, actions) = switchboard::auth::Grants::parse_one("std=subscribe,publish").unwrap();
    grants.push(p, actions);
    let token = switchboard::auth::sign(secret, "u-zoe", Some("zoe"), &grants, 600).unwrap();
    // Live, through the bus: a structured reader on node b.
    let mut reader = ws(b.http(), &format!("room=std&format=json&token={token}")).await;
    let res = client()
        .post(format!("http://{}/rooms/std/messages", a.http()))
        .bearer_auth(&token)
        .body("verified")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = client()
        .post(format!("http://{}/rooms/std/messages", a.http()))
        .header("x-api-key", "cluster-key-0123456789")
        .header("x-nick", "deploy")
        .body("from a backend")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let mut live = Vec::new();
    while live.len() < 2 {
        let v: Value = serde_json::from_str(&ws_line(&mut reader).await).unwrap();
        if v["type"] == "message" {
            live.push(v);
        }
    }
    assert_eq!(live[0]["user"], "u-zoe");
    assert_eq!(live[1]["backend"], true);
    // Stored, through the stream: a fresh node reads the history from Redis.
    let c = start_with(config()).await;
    let page: Value = client()
        .get(format!("http://{}/rooms/std/messages", c.http()))
        .header("x-api-key", "cluster-key-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["messages"][0]["user"], "u-zoe", "{page}");
    assert_eq!(page["messages"][1]["backend"], true, "{page}");
}

/// Reading a room's history in a cluster loads the room from Redis, which makes it here: that
/// goes through `max_rooms` like every other room, so reading many names cannot grow a node
/// past its caps (it answers 503 `too_many_rooms` instead, as a join would).
#[tokio::test]
async fn reading_history_in_a_cluster_stays_within_the_room_caps() {
    let redis = Redis::start();
    let mut config = node_config(&redis);
    config.limits.max_rooms = 3;
    let server = start_with(config).await;
    let mut statuses = Vec::new();
    for name in ["r1", "r2", "r3", "r4", "r5"] {
        let res = client()
            .get(format!("http://{}/rooms/{name}/messages", server.http()))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        statuses.push(status);
        if status != 200 {
            assert_eq!(status, 503, "{body}");
            assert!(body["error"].is_string(), "{body}");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 503, 503], "reads past max_rooms");
    server.stop().await;
}

/// `/healthz` tells the truth when Redis is connected but refuses writes (here a Redis at its
/// `maxmemory` with `noeviction`; on a Redis Cluster, CROSSSLOT does the same): 503 with the
/// reason while publishes fail, ok again once one goes through.
#[tokio::test]
async fn healthz_says_503_with_the_reason_while_redis_refuses_writes() {
    let redis = Redis::start();
    let server = node(&redis).await;
    let health = || async {
        let res = client()
            .get(format!("http://{}/healthz", server.http()))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    let post = |text: &'static str| {
        client()
            .post(format!("http://{}/rooms/full/messages", server.http()))
            .body(text)
            .send()
    };
    // The bus subscribes just after start.
    let deadline = Instant::now() + TIMEOUT;
    while health().await.0 != 200 {
        assert!(Instant::now() < deadline, "{:?}", health().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post("before").await.unwrap().status(), 201);
    let mut conn = redis.conn();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory-policy", "noeviction"])
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "1"])
        .query(&mut conn)
        .unwrap();
    assert_eq!(post("refused").await.unwrap().status(), 503);
    let (status, body) = health().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("Redis refuses writes") && reason.contains("OOM"),
        "{body}"
    );
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "0"])
        .query(&mut conn)
        .unwrap();
    assert_eq!(post("after").await.unwrap().status(), 201);
    let (status, body) = health().await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

/// A cursor taken in an empty room on one node (sequence 0, in that node's epoch) has seen
/// nothing: resumed on another node after messages were published there, it replays from the
/// first message with no gap, as `00000000-0` does. Before, both answered `gap: reset`.
#[tokio::test]
async fn a_cursor_from_an_empty_room_on_another_node_is_no_gap() {
    let redis = Redis::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let empty = get_json(b.http(), "/rooms/fresh/messages").await;
    let cursor = empty["cursor"].as_str().expect("a cursor").to_owned();
    assert!(cursor.ends_with("-0"), "{empty}");
    for text in ["one", "two"] {
        post(a.http(), "fresh", text, None).await;
    }
    // A publish is read-your-writes on its own node; another node hears it over the bus a
    // moment later (bounded here, so a loaded machine does not read `b` before it has).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let page = get_json(b.http(), "/rooms/fresh/messages").await;
        let heard = page["messages"].as_array().map_or(0, Vec::len);
        if heard >= 2 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for since in [cursor.as_str(), "00000000-0"] {
        for node in [&a, &b] {
            let page = get_json(node.http(), &format!("/rooms/fresh/messages?since={since}")).await;
            let texts: Vec<&str> = page["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["text"].as_str().unwrap())
                .collect();
            assert_eq!(texts, ["one", "two"], "since {since}: {page}");
            assert!(page["gap"].is_null(), "since {since}: {page}");
        }
    }
    a.stop().await;
    b.stop().await;
}
