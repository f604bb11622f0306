//! The README's examples that run on their documented, fixed ports: the TLS recipe and the
//! "Many nodes" pair. They are a test binary of their own, and run one at a time within it,
//! so that no other test's sockets are open beside them: the default gRPC port (50051, and
//! 50052 for a second node) lies in the kernel's ephemeral range, where a test's own
//! connections could otherwise take it first.

mod support;

#[path = "support/redis.rs"]
mod redis_server;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis_server::Redis;
use support::{TIMEOUT, history_of};

/// One example at a time: both listen on 12345.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The README's "Many nodes" commands, run as written on this machine (only the Redis URL
/// points at the test's own Redis): both nodes start, and a message posted on one is in the
/// other's history. Before, the second node died on the first one's MQTT port.
#[test]
fn the_readme_many_nodes_example_runs_as_written() {
    let _one_at_a_time = serial();
    let redis = Redis::start();
    let readme = include_str!("../README.md");
    let start = readme.find("<!-- many-nodes").expect("start marker");
    let end = readme.find("<!-- /many-nodes -->").expect("end marker");
    let commands: Vec<Vec<String>> = readme[start..end]
        .lines()
        .filter(|l| l.starts_with("switchboard serve"))
        .map(|l| {
            l.replace("redis://127.0.0.1:6379", &redis.url())
                .split_whitespace()
                .skip(1)
                .map(str::to_owned)
                .collect()
        })
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let dir = tempfile::tempdir().unwrap();
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let spawn = |i: usize| {
        let log = std::fs::File::create(dir.path().join(format!("node{i}.log"))).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(&commands[i])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Killed(child)
    };
    let mut nodes: Vec<Killed> = (0..commands.len()).map(spawn).collect();
    let log = |i: usize| std::fs::read_to_string(dir.path().join(format!("node{i}.log"))).unwrap();
    for (i, port) in [8000u16, 8001].into_iter().enumerate() {
        let deadline = Instant::now() + TIMEOUT;
        // The documented ports lie in the kernel's ephemeral range, so a connection left by
        // an earlier test (or the other node's, to Redis) can hold one: a node that found its
        // port taken is started again once the port is free, within a bound.
        let mut retries = 3;
        loop {
            if let Some(status) = nodes[i].0.try_wait().unwrap() {
                let taken = port_in_use(&log(i));
                if let Some(port) = taken.filter(|_| retries > 0) {
                    retries -= 1;
                    wait_until_free(port);
                    nodes[i] = spawn(i);
                    continue;
                }
                let holders = taken.map(sockets_on).unwrap_or_default();
                panic!("node {} exited ({status}):\n{}{holders}", i + 1, log(i));
            }
            let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && log(i).contains("grpc listening");
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not start:\n{}",
                i + 1,
                log(i)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let one: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let two: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        let res = support::http_client()
            .post(format!("http://{one}/rooms/readme/messages"))
            .body("from node one")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let history = history_of(two, "readme").await;
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(history[0].1, "from node one");
    });
    for (i, node) in nodes.iter_mut().enumerate() {
        assert!(
            node.0.try_wait().unwrap().is_none(),
            "node {} died:\n{}",
            i + 1,
            log(i)
        );
    }
}

/// The README's TLS recipe, run as written in a scratch directory by bash: `switchboard` is
/// the binary under test; `serve` goes to the background until its port answers, the token
/// it prints is what the `connect` line signs in with. The certificate names localhost and
/// 127.0.0.1, so `connect tls://127.0.0.1` verifies it with no extra flag.
#[test]
fn the_readme_tls_recipe_runs_on_localhost() {
    let _one_at_a_time = serial();
    let readme = include_str!("../README.md");
    let start = readme.find("<!-- tls-recipe").expect("start marker");
    let end = readme.find("<!-- /tls-recipe -->").expect("end marker");
    let block = &readme[start..end];
    let commands = block
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block");
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        r#"set -euo pipefail
BIN={bin:?}
switchboard() {{
  case $1 in
    serve)
      "$BIN" "$@" 2>serve.log &
      SERVER=$!
      trap 'kill $SERVER 2>/dev/null || true' EXIT
      for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/12345) 2>/dev/null && return 0; sleep 0.1; done
      echo "serve did not start: $(cat serve.log)" >&2; return 1 ;;
    token) TOKEN=$("$BIN" "$@"); echo "token made" ;;
    connect) printf '/auth %s\nhello over tls\n' "$TOKEN" | "$BIN" "$@" --linger-ms 300 ;;
    *) "$BIN" "$@" ;;
  esac
}}
{commands}"#,
        bin = env!("CARGO_BIN_EXE_switchboard"),
    );
    let out = Command::new("timeout")
        .args(["60", "bash", "-c", &script])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("* signed in as alice"),
        "{stdout}\n{stderr}"
    );
    // The message was taken (a refusal would be an ERR line; a sender sees no echo).
    assert!(!stdout.contains("ERR"), "{stdout}\n{stderr}");
}

/// The port a node said was in use ("--grpc 127.0.0.1:50052 is in use"), if it said so.
fn port_in_use(log: &str) -> Option<u16> {
    let before = &log[..log.find(" is in use")?];
    before.rsplit(':').next()?.parse().ok()
}

/// Waits until `port` can be bound on loopback (std sets `SO_REUSEADDR`, as the server does),
/// for at most 70 s: longer than a socket lingers in TIME_WAIT or FIN_WAIT2.
fn wait_until_free(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(70);
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What holds `port` (`ss`), for the failure message.
fn sockets_on(port: u16) -> String {
    let filter = format!("( sport = :{port} or dport = :{port} )");
    Command::new("ss")
        .args(["-tanp", &filter])
        .output()
        .map(|out| {
            format!(
                "\nsockets on port {port}:\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
        .unwrap_or_default()
}
