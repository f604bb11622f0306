//! The durable default, tested on the real binary: history and ids survive a restart; after
//! `kill -9` under continuous publishing every acknowledged message is there, in order; the
//! database does not grow without bound.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::{
    SERVE_HTTP_ONLY, Spawned, addr_of, history_of, publish_to, publish_until_cut, spawn_logged,
};

/// `switchboard serve` on a free HTTP port with its store in `dir`; killed when dropped.
struct Node {
    process: Spawned,
    http: SocketAddr,
}

impl Node {
    fn start(dir: &Path, extra: &[&str]) -> Node {
        let dir = dir.to_str().expect("UTF-8 temp path");
        let mut args = SERVE_HTTP_ONLY.to_vec();
        args.extend(["--publish-rate", "0", "--data-dir", dir]);
        args.extend(extra);
        let (process, addrs) = spawn_logged(&args);
        Node {
            process,
            http: addr_of(&addrs, "http"),
        }
    }

    fn stop(self) {
        let mut child = self.process.take();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        wait(&mut child);
    }

    fn kill9(self) {
        let mut child = self.process.take();
        child.kill().unwrap(); // SIGKILL
        wait(&mut child);
    }
}

fn wait(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("server did not exit");
}

fn seq(id: &str) -> u64 {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn history_and_ids_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            publish_to(node.http, "lobby", &format!("before {i}"))
                .await
                .unwrap(),
        );
    }
    node.stop();
    let node = Node::start(dir.path(), &[]);
    let kept = history_of(node.http, "lobby").await;
    assert_eq!(
        kept.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        ids
    );
    let next = publish_to(node.http, "lobby", "after").await.unwrap();
    let (epoch, _) = ids[4].split_once('-').unwrap();
    assert_eq!(
        next,
        format!("{epoch}-6"),
        "same epoch, the sequence carries on"
    );
    node.stop();
}

#[tokio::test]
async fn every_acknowledged_message_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--history-max-messages", "100000"]);
    // Eight publishers, so that commits are batched, publishing until the kill cuts them.
    let http = node.http;
    let kill = async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        node.kill9();
    };
    let acked = publish_until_cut(http, "lobby", 8, kill).await;
    assert!(
        acked.len() > 100,
        "published before the kill: {}",
        acked.len()
    );
    eprintln!("kill -9 after {} acknowledged publishes", acked.len());

    let node = Node::start(dir.path(), &["--history-max-messages", "100000"]);
    let kept = history_of(node.http, "lobby").await;
    let kept_ids: std::collections::HashMap<&str, &str> = kept
        .iter()
        .map(|(id, text)| (id.as_str(), text.as_str()))
        .collect();
    for (id, text) in &acked {
        assert_eq!(
            kept_ids.get(id.as_str()),
            Some(&text.as_str()),
            "acknowledged {id} is in history"
        );
    }
    for pair in kept.windows(2) {
        assert!(seq(&pair[0].0) < seq(&pair[1].0), "in order: {pair:?}");
    }
    // Ids seen before the crash are never handed out again.
    let highest = kept.iter().map(|(id, _)| seq(id)).max().unwrap();
    let next = publish_to(node.http, "lobby", "after the crash")
        .await
        .unwrap();
    assert!(
        seq(&next) > highest + 60_000,
        "sequence moved past in-flight ids: {next}"
    );
    node.stop();
}

#[tokio::test]
async fn the_database_does_not_grow_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--history-max-messages", "50"]);
    for i in 0..600 {
        publish_to(node.http, "lobby", &format!("{i} {}", "x".repeat(500)))
            .await
            .unwrap();
    }
    let kept = history_of(node.http, "lobby").await;
    assert_eq!(kept.len(), 50);
    node.stop();
    let conn = rusqlite::Connection::open(dir.path().join("switchboard.sqlite3")).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 50, "rows on disk are trimmed to the retention limit");
}

/// Publishes `text` with an idempotency key; the status and the id.
async fn publish_keyed(addr: SocketAddr, key: &str, text: &str) -> (u16, String, bool) {
    let res = support::http_client()
        .post(format!("http://{addr}/rooms/keyed/messages"))
        .header("idempotency-key", key)
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let v: serde_json::Value = res.json().await.unwrap();
    (
        status,
        v["id"].as_str().unwrap_or_default().to_owned(),
        v["duplicate"].as_bool().unwrap_or(false),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_honoured_after_a_clean_restart_and_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let (status, first, _) = publish_keyed(node.http, "retry-1", "once").await;
    assert_eq!(status, 201);
    node.stop();

    let node = Node::start(dir.path(), &[]);
    let (status, again, duplicate) = publish_keyed(node.http, "retry-1", "once").await;
    assert_eq!((status, duplicate), (200, true), "after a clean restart");
    assert_eq!(again, first, "the earlier id");
    let (status, second, _) = publish_keyed(node.http, "retry-2", "twice").await;
    assert_eq!(status, 201);
    node.kill9();

    let node = Node::start(dir.path(), &[]);
    for (key, id) in [("retry-1", &first), ("retry-2", &second)] {
        let (status, again, duplicate) = publish_keyed(node.http, key, "again").await;
        assert_eq!((status, duplicate), (200, true), "{key} after kill -9");
        assert_eq!(&again, id);
    }
    let texts: Vec<String> = history_of(node.http, "keyed")
        .await
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(texts, ["once", "twice"], "one stored copy each");
}
