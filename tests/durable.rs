//! The durable default, tested on the real binary: history and ids survive a restart; after
//! `kill -9` under continuous publishing every acknowledged message is there, in order; the
//! database does not grow without bound.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Spawned, addr_of, spawn_logged};

/// `switchboard serve` on a free HTTP port with its store in `dir`; killed when dropped.
struct Node {
    process: Spawned,
    http: SocketAddr,
}

impl Node {
    fn start(dir: &Path, extra: &[&str]) -> Node {
        let dir = dir.to_str().expect("UTF-8 temp path");
        let mut args = vec![
            "serve",
            "--tcp",
            "off",
            "--udp",
            "off",
            "--http",
            "127.0.0.1:0",
        ];
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

    fn kill9(mut self) {
        self.process.kill(); // SIGKILL, and waits
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

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn post(http: SocketAddr, text: &str) -> Result<String, String> {
    let res = client()
        .post(format!("http://{http}/rooms/lobby/messages"))
        .body(text.to_owned())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != 201 {
        return Err(res.status().to_string());
    }
    let v: Value = res.json().await.map_err(|e| e.to_string())?;
    Ok(v["id"].as_str().unwrap().to_owned())
}

async fn history(http: SocketAddr) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut since: Option<String> = None;
    for _ in 0..1000 {
        let query = since
            .as_ref()
            .map_or(String::new(), |s| format!("&since={s}"));
        let v: Value = client()
            .get(format!(
                "http://{http}/rooms/lobby/messages?limit=1000{query}"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for m in v["messages"].as_array().unwrap() {
            out.push((
                m["id"].as_str().unwrap().to_owned(),
                m["text"].as_str().unwrap().to_owned(),
            ));
        }
        if v["more"] != true {
            return out;
        }
        since = v["next"].as_str().map(str::to_owned);
    }
    panic!("history did not end");
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
        ids.push(post(node.http, &format!("before {i}")).await.unwrap());
    }
    node.stop();
    let node = Node::start(dir.path(), &[]);
    let kept = history(node.http).await;
    assert_eq!(
        kept.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        ids
    );
    let next = post(node.http, "after").await.unwrap();
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
    let http = node.http;
    // Eight publishers, so that commits are batched, publishing until the kill cuts them.
    let mut tasks = Vec::new();
    for p in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..100_000 {
                match post(http, &format!("p{p} m{i}")).await {
                    Ok(id) => acked.push((id, format!("p{p} m{i}"))),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.kill9();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(
        acked.len() > 100,
        "published before the kill: {}",
        acked.len()
    );
    eprintln!("kill -9 after {} acknowledged publishes", acked.len());

    let node = Node::start(dir.path(), &["--history-max-messages", "100000"]);
    let kept = history(node.http).await;
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
    let next = post(node.http, "after the crash").await.unwrap();
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
        post(node.http, &format!("{i} {}", "x".repeat(500)))
            .await
            .unwrap();
    }
    let kept = history(node.http).await;
    assert_eq!(kept.len(), 50);
    node.stop();
    let conn = rusqlite::Connection::open(dir.path().join("switchboard.sqlite3")).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 50, "rows on disk are trimmed to the retention limit");
}
