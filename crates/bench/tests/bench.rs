//! The load generator against a real server: every expected delivery is counted, latencies
//! are recorded, and non-loopback targets are refused. Speed itself is not asserted here.

use std::net::SocketAddr;
use std::time::Duration;

use switchboard::{Addrs, Config, Server};
use switchboard_bench::{self as bench, BenchError, Mode, Options};
use tokio_util::sync::CancellationToken;

/// A real server on loopback port 0; dropping it stops it.
struct TestServer {
    addrs: Addrs,
    stop: CancellationToken,
}

impl TestServer {
    fn tcp(&self) -> SocketAddr {
        self.addrs.tcp.expect("tcp on")
    }
    fn http(&self) -> SocketAddr {
        self.addrs.http.expect("http on")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn test_config() -> Config {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Config {
        tcp: Some(any),
        udp: None,
        http: Some(any),
        mqtt: None,
        grpc: None,
        store: switchboard::config::StoreKind::Memory,
        publish_rate: 0.0,
        limits: switchboard::config::Limits::unlimited(),
        ..Config::default()
    }
}

async fn start_with(config: Config) -> TestServer {
    start_bound(Server::bind(config).await.expect("bind"))
}

async fn start_echo() -> TestServer {
    start_bound(Server::bind_echo(test_config()).await.expect("bind"))
}

fn start_bound(server: Server) -> TestServer {
    let addrs = server.addrs();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move { server.run(token.cancelled_owned()).await.expect("run") });
    TestServer { addrs, stop }
}

fn options(url: String, mode: Mode) -> Options {
    Options {
        url,
        mode,
        connections: 20,
        publishers: 2,
        rate: 200,
        window: 8,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        size: 64,
        sources: 2,
        server_pid: Some(std::process::id()),
        allow_remote: false,
        progress: false,
        publish_ws: None,
    }
}

/// A server without the publish rate limit, so publishers can go flat out.
async fn unlimited_server() -> TestServer {
    start_with(Config {
        publish_rate: 0.0,
        ..test_config()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_run_counts_every_delivery() {
    let server = unlimited_server().await;
    let report = bench::run(options(
        format!("ws://{}/ws?room=bench", server.http()),
        Mode::Broadcast,
    ))
    .await
    .unwrap();
    assert!(report.sent > 50, "{report:?}");
    assert_eq!(report.expected, report.sent * 20);
    assert_eq!(report.delivered, report.expected, "{}", report.text());
    assert_eq!(report.errors, 0);
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.max);
    assert!(report.server_cpu_ns_per_delivery.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_broadcast_counts_every_delivery_of_its_chat_streams() {
    let server = start_with(Config {
        grpc: Some("127.0.0.1:0".parse().unwrap()),
        ..test_config()
    })
    .await;
    let grpc = server.addrs.grpc.expect("grpc on");
    let report = bench::run(options(format!("grpc://{grpc}/bench"), Mode::Broadcast))
        .await
        .unwrap();
    assert!(report.sent > 50, "{report:?}");
    // A Chat stream gets its own messages back, as WebSocket does: every one of the 20.
    assert_eq!(report.expected, report.sent * 20);
    assert_eq!(report.delivered, report.expected, "{}", report.text());
    assert_eq!(report.errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_run_counts_each_clients_own_copies() {
    let server = start_with(test_config()).await;
    let mut opts = options(format!("ws://{}/echo", server.http()), Mode::Echo);
    opts.rate = 0;
    opts.window = 1;
    let report = bench::run(opts).await.unwrap();
    assert!(report.sent > 100, "{report:?}");
    assert_eq!(report.delivered, report.sent, "{}", report.text());
}

#[tokio::test]
async fn non_loopback_targets_are_refused() {
    let err = bench::run(options("ws://192.0.2.1:80/ws".into(), Mode::Broadcast))
        .await
        .unwrap_err();
    assert!(matches!(err, BenchError::Remote(_)), "{err}");
    assert!(err.to_string().contains("--allow-remote"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_broadcast_counts_every_delivery_but_the_senders_own() {
    let server = start_with(test_config()).await;
    let mut opts = options(format!("tcp://{}/bench", server.tcp()), Mode::Broadcast);
    opts.rate = 0; // paced by the window, which the first non-publisher returns
    let report = bench::run(opts).await.unwrap();
    assert!(report.sent > 50, "{report:?}");
    assert_eq!(
        report.expected,
        report.sent * 19,
        "the sender does not get its own line"
    );
    assert_eq!(report.delivered, report.expected, "{}", report.text());
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
}

#[tokio::test]
async fn a_refused_handshake_says_the_servers_reason() {
    // A token secret turns authentication on: anonymous clients may not subscribe.
    let server = start_with(Config {
        auth: switchboard::auth::AuthConfig {
            secrets: vec!["bench-test-secret-0123456789abcdef-0123".into()],
            ..Default::default()
        },
        ..test_config()
    })
    .await;
    let err = bench::run(options(
        format!("ws://{}/ws?room=closed", server.http()),
        Mode::Broadcast,
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("401 Unauthorized: not allowed to subscribe in closed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_echo_and_a_bad_tcp_broadcast_setup() {
    let server = start_echo().await;
    let mut opts = options(format!("tcp://{}", server.tcp()), Mode::Echo);
    opts.rate = 0;
    opts.window = 1;
    let report = bench::run(opts).await.unwrap();
    assert!(report.sent > 100, "{report:?}");
    assert_eq!(report.delivered, report.sent, "{}", report.text());
    let mut opts = options(format!("tcp://{}", server.tcp()), Mode::Broadcast);
    opts.rate = 0;
    opts.publishers = opts.connections;
    let err = bench::run(opts).await.unwrap_err();
    assert!(
        err.to_string().contains("more connections than publishers"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_broadcast_counts_every_listeners_copy_of_posted_messages() {
    let server = unlimited_server().await;
    // Paced by the window, which the first listener returns.
    let mut opts = options(
        format!("http://{}/events?room=ssebench", server.http()),
        Mode::Broadcast,
    );
    opts.rate = 0;
    let report = bench::run(opts).await.unwrap();
    assert!(report.sent > 50, "{report:?}");
    assert_eq!(report.publishers, 2);
    // Publishers are extra HTTP connections: all 20 listeners get every message.
    assert_eq!(report.expected, report.sent * 20);
    assert_eq!(report.delivered, report.expected, "{}", report.text());
    assert_eq!(report.errors, 0);
    assert!(report.client_cpu_ns_per_delivery.is_some());

    // What the history holds is what was posted: the generator really went through the room.
    let history: serde_json::Value = reqwest::get(format!(
        "http://{}/rooms/ssebench/messages?last=1",
        server.http()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let text = history["messages"][0]["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("b "), "{history}");
}

/// Runs the generator where it must refuse, and returns why it did.
async fn refusal(url: String, mode: Mode) -> String {
    bench::run(options(url, mode))
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_setups_that_cannot_work_are_refused() {
    let server = start_with(test_config()).await;
    let http = server.http();
    let err = refusal(format!("http://{http}/events?room=x"), Mode::Echo).await;
    assert!(err.contains("receive-only"), "{err}");
    let err = refusal(format!("http://{http}/rooms/x"), Mode::Broadcast).await;
    assert!(err.contains("/events?room="), "{err}");
    // A room name the server refuses: the listeners' 400 is the error.
    let err = refusal(
        format!("http://{http}/events?room=no%20spaces"),
        Mode::Broadcast,
    )
    .await;
    assert!(err.contains("400"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_publisher_is_reported_with_the_servers_answer() {
    // The default publish rate limit (20/s, bursts of 50) stops a publisher going flat out.
    let server = start_with(Config {
        publish_rate: Config::default().publish_rate,
        ..test_config()
    })
    .await;
    let mut opts = options(
        format!("http://{}/events?room=limited", server.http()),
        Mode::Broadcast,
    );
    opts.rate = 0;
    opts.publishers = 1;
    let report = bench::run(opts).await.unwrap();
    assert!(report.errors >= 1, "{report:?}");
    let first = report.first_error.as_deref().unwrap_or_default();
    assert!(first.contains("429"), "{first}");
    assert!(
        report.text().contains("first error: POST"),
        "{}",
        report.text()
    );
}

/// Runs the `switchboard-bench` binary against `url` for a short broadcast, with its stderr on
/// `stderr`, and returns its stdout (the report).
fn run_binary(url: &str, stderr: std::process::Stdio) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_switchboard-bench"))
        .args([url, "-c", "20", "-p", "2", "--rate", "200", "--warmup", "1"])
        .args(["--duration", "2", "--sources", "1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn switchboard-bench")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_a_progress_bar_shows_the_phase_and_counters_and_off_one_nothing() {
    use std::io::Read as _;
    let server = unlimited_server().await;
    let url = format!("ws://{}/ws?room=bar", server.http());

    // A pseudo-terminal as stderr, 120 columns wide, as a user's shell would give it.
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let child = run_binary(&url, std::process::Stdio::from(pty.slave));
    let mut master = std::fs::File::from(pty.master);
    // Reading the terminal ends with EIO once the child has exited and closed its side.
    let drawn = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .unwrap();
    let drawn = tokio::time::timeout(Duration::from_secs(10), drawn)
        .await
        .expect("the terminal side closes")
        .unwrap();
    assert!(out.status.success(), "{drawn}");
    for shown in ["warm-up", "measuring", "sent ", "delivered ", "errors 0"] {
        assert!(drawn.contains(shown), "{shown:?} not drawn in {drawn:?}");
    }
    assert!(
        drawn.contains('\x1b'),
        "drawn with terminal control sequences"
    );
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(report.contains("deliveries/s"), "{report}");

    // Not a terminal: the report alone, nothing on stderr.
    let out = tokio::task::spawn_blocking(move || {
        run_binary(&url, std::process::Stdio::piped())
            .wait_with_output()
            .expect("wait")
    })
    .await
    .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("deliveries/s")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_publisher_over_the_per_connection_rate_is_reported_not_silent() {
    // The default per-connection rate (20/s) refuses most of a flat-out window in plain mode,
    // as `ERR` text frames: the run says so instead of reporting 0 sent and no error.
    let server = start_with(Config {
        limits: switchboard::config::Limits::default(),
        ..test_config()
    })
    .await;
    let mut opts = options(
        format!("ws://{}/ws?room=paced", server.http()),
        Mode::Broadcast,
    );
    opts.rate = 0;
    opts.window = 64;
    let report = bench::run(opts).await.unwrap();
    assert!(report.errors >= 1, "{report:?}");
    let first = report.first_error.as_deref().unwrap_or_default();
    assert!(first.starts_with("ERR too many messages"), "{first}");
    assert!(
        report
            .text()
            .contains("run it with --publish-rate 0 --connection-rate 0"),
        "{}",
        report.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_listeners_fed_by_websocket_publishers_count_every_copy() {
    let server = unlimited_server().await;
    let mut opts = options(
        format!("http://{}/events?room=ssews", server.http()),
        Mode::Broadcast,
    );
    opts.rate = 0;
    opts.publish_ws = Some(format!("ws://{}/ws?room=ssews", server.http()));
    let report = bench::run(opts).await.unwrap();
    assert!(report.sent > 50, "{report:?}");
    // The WebSocket publishers' own copies are not counted: the 20 SSE listeners' are.
    assert_eq!(report.expected, report.sent * 20);
    assert_eq!(report.delivered, report.expected, "{}", report.text());
    assert_eq!(report.errors, 0, "{:?}", report.first_error);

    // Only for SSE.
    let mut opts = options(format!("ws://{}/ws?room=x", server.http()), Mode::Broadcast);
    opts.publish_ws = Some(format!("ws://{}/ws?room=x", server.http()));
    let err = bench::run(opts).await.unwrap_err().to_string();
    assert!(err.contains("--publish-ws is for SSE"), "{err}");
}
