//! Shared test helpers: start a real server on port 0 and talk to it with real sockets.
#![allow(dead_code, unreachable_pub)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchboard::{Addrs, Config, Server};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// Every wait in a test is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A running server; dropping it stops it.
pub struct TestServer {
    pub addrs: Addrs,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub fn tcp(&self) -> SocketAddr {
        self.addrs.tcp.expect("tcp on")
    }
    pub fn udp(&self) -> SocketAddr {
        self.addrs.udp.expect("udp on")
    }
    pub fn mqtt(&self) -> SocketAddr {
        self.addrs.mqtt.expect("mqtt on")
    }
    pub fn http(&self) -> SocketAddr {
        self.addrs.http.expect("http on")
    }

    /// Stops the server and waits until it has shut down.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(TIMEOUT, task)
                .await
                .expect("server stops in time")
                .expect("server task");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A config listening on port 0 for everything.
pub fn test_config() -> Config {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Config {
        tcp: Some(any),
        udp: Some(any),
        http: Some(any),
        mqtt: Some(any),
        grpc: Some(any),
        store: switchboard::config::StoreKind::Memory,
        ..Config::default()
    }
}

/// `test_config` without publish limits, for tests that flood a room on purpose to see
/// how a slow reader is dealt with.
pub fn flood_config() -> Config {
    Config {
        publish_rate: 0.0,
        limits: switchboard::config::Limits::unlimited(),
        ..test_config()
    }
}

pub async fn start_server() -> TestServer {
    start_with(test_config()).await
}

pub async fn start_with(config: Config) -> TestServer {
    start_bound(Server::bind(config).await.expect("bind")).await
}

pub async fn start_echo() -> TestServer {
    start_bound(Server::bind_echo(test_config()).await.expect("bind")).await
}

async fn start_bound(server: Server) -> TestServer {
    let addrs = server.addrs();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        server.run(token.cancelled_owned()).await.expect("run");
    });
    TestServer {
        addrs,
        stop,
        task: Some(task),
    }
}

/// A line-oriented TCP chat client.
pub struct Line {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Line {
    /// Connects and consumes the welcome line, returning the generated nick.
    pub async fn connect(addr: SocketAddr) -> (Self, String) {
        let mut client = Self::connect_raw(addr).await;
        let welcome = client.line().await;
        let nick = welcome
            .strip_prefix("* welcome ")
            .and_then(|r| r.split(',').next())
            .unwrap_or_else(|| panic!("unexpected welcome {welcome:?}"))
            .to_owned();
        (client, nick)
    }

    /// Connects without reading anything.
    pub async fn connect_raw(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).await.expect("connect"))
    }

    /// A connected stream, read line by line.
    pub fn from_stream(stream: TcpStream) -> Self {
        let (r, w) = stream.into_split();
        Self {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).await.expect("send");
    }

    /// Sends `text` followed by a newline.
    pub async fn say(&mut self, text: &str) {
        self.send(&format!("{text}\n")).await;
    }

    /// The next line, without its newline; panics after `TIMEOUT`.
    pub async fn line(&mut self) -> String {
        self.try_line(TIMEOUT)
            .await
            .expect("a line within the timeout")
    }

    /// The next line, or `None` on timeout or end of stream.
    pub async fn try_line(&mut self, wait: Duration) -> Option<String> {
        let mut line = String::new();
        match tokio::time::timeout(wait, self.reader.read_line(&mut line)).await {
            Ok(Ok(0)) | Err(_) => None,
            Ok(Ok(_)) => Some(line.trim_end_matches('\n').to_owned()),
            Ok(Err(e)) => panic!("read failed: {e}"),
        }
    }

    /// Reads lines until one satisfies `pred`; returns it. Bounded by `TIMEOUT` and 10,000 lines.
    pub async fn line_where(&mut self, pred: impl Fn(&str) -> bool) -> String {
        for _ in 0..10_000 {
            let line = self.line().await;
            if pred(&line) {
                return line;
            }
        }
        panic!("no matching line in 10,000");
    }

    /// Asserts nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(line) = self.try_line(wait).await {
            panic!("expected silence, got {line:?}");
        }
    }

    /// True once the server closed the connection (within `TIMEOUT`), skipping lines before it.
    pub async fn closed(&mut self) -> bool {
        for _ in 0..10_000 {
            let mut line = String::new();
            match tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut line)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
        false
    }

    pub fn into_parts(self) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf) {
        (self.reader, self.writer)
    }
}

/// Writes `count` numbered lines of `size` bytes as a TCP chat client, pausing 1 ms every 32
/// lines so that a loaded CI machine's fast readers keep in step (a stalled reader overflows
/// regardless). Returns the write half when done.
pub fn flood(
    mut writer: OwnedWriteHalf,
    count: usize,
    size: usize,
) -> tokio::task::JoinHandle<OwnedWriteHalf> {
    let payload = "p".repeat(size);
    tokio::spawn(async move {
        for i in 0..count {
            writer
                .write_all(format!("{i} {payload}\n").as_bytes())
                .await
                .unwrap();
            if i % 32 == 31 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        writer
    })
}

/// A spawned server, killed when dropped so that a failing test does not leak it.
pub struct Spawned(Option<Child>);

impl Spawned {
    pub fn take(mut self) -> Child {
        self.0.take().expect("child present")
    }
    pub fn kill(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `serve` with HTTP alone, on a free port: the start of most command lines given to
/// `spawn_logged`.
pub const SERVE_HTTP_ONLY: [&str; 11] = [
    "serve",
    "--mqtt",
    "off",
    "--grpc",
    "off",
    "--tcp",
    "off",
    "--udp",
    "off",
    "--http",
    "127.0.0.1:0",
];

/// Spawns the real binary with `args` and reads the addresses it logs (as JSON, on stderr)
/// for each `:0` it was given.
pub fn spawn_logged(args: &[&str]) -> (Spawned, Vec<(String, SocketAddr)>) {
    spawn_from(Command::new(env!("CARGO_BIN_EXE_switchboard")), args)
}

/// `spawn_logged` with the process's open-file limit (soft and hard) set to `nofile`.
pub fn spawn_with_nofile(nofile: u32, args: &[&str]) -> (Spawned, Vec<(String, SocketAddr)>) {
    let mut sh = Command::new("sh");
    sh.args([
        "-c",
        &format!("ulimit -n {nofile} && exec \"$0\" \"$@\""),
        env!("CARGO_BIN_EXE_switchboard"),
    ]);
    spawn_from(sh, args)
}

fn spawn_from(mut command: Command, args: &[&str]) -> (Spawned, Vec<(String, SocketAddr)>) {
    let mut child = command
        .args(args)
        .args(["--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut addrs = Vec::new();
    let want = args.iter().filter(|a| a.ends_with(":0")).count();
    for _ in 0..100 {
        let Some(Ok(line)) = lines.next() else { break };
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let message = v["fields"]["message"].as_str().unwrap_or("");
        if let Some(addr) = v["fields"]["addr"].as_str()
            && message.ends_with("listening")
        {
            let what = message.split(' ').next().unwrap().to_owned();
            addrs.push((what, addr.parse().unwrap()));
            if addrs.len() == want {
                break;
            }
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Spawned(Some(child)), addrs)
}

pub fn addr_of(addrs: &[(String, SocketAddr)], what: &str) -> SocketAddr {
    addrs
        .iter()
        .find(|(w, _)| w == what)
        .unwrap_or_else(|| panic!("{what} address logged: {addrs:?}"))
        .1
}

/// An HTTP client whose every request is bounded by `TIMEOUT`.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(TIMEOUT).build().unwrap()
}

/// `GET path` on `addr`, its JSON body.
pub async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    http_client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Publishes `text` to `room` over HTTP; the id on `201`, otherwise why not.
pub async fn publish_to(addr: SocketAddr, room: &str, text: &str) -> Result<String, String> {
    let res = http_client()
        .post(format!("http://{addr}/rooms/{room}/messages"))
        .body(text.to_owned())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != 201 {
        return Err(res.status().to_string());
    }
    let v: serde_json::Value = res.json().await.map_err(|e| e.to_string())?;
    Ok(v["id"].as_str().unwrap().to_owned())
}

/// `publishers` concurrent HTTP publishers to `room`, each publishing until one of its
/// publishes fails (the server was killed, say); together they return every acknowledged
/// (id, text).
pub async fn publish_until_cut(
    addr: SocketAddr,
    room: &'static str,
    publishers: usize,
    cut: impl Future<Output = ()>,
) -> Vec<(String, String)> {
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..100_000 {
                    let text = format!("p{p} m{i}");
                    match publish_to(addr, room, &text).await {
                        Ok(id) => acked.push((id, text)),
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    cut.await;
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked
}

/// Every message of `room` a server holds, as (id, text), paging by cursor.
pub async fn history_of(addr: SocketAddr, room: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut since = String::new();
    for _ in 0..1000 {
        let url = format!("http://{addr}/rooms/{room}/messages?limit=1000{since}");
        let page: serde_json::Value = http_client()
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for m in page["messages"].as_array().unwrap() {
            out.push((
                m["id"].as_str().unwrap().to_owned(),
                m["text"].as_str().unwrap().to_owned(),
            ));
        }
        if page["more"] != true {
            return out;
        }
        since = format!("&since={}", page["next"].as_str().unwrap());
    }
    panic!("history did not end");
}

/// A UDP chat client on its own socket, connected to the server.
pub struct Udp(pub UdpSocket);

impl Udp {
    /// Connects and proves the address (the server's cookie exchange), so that the server
    /// makes it a member: its welcome is the next datagram.
    pub async fn connect(addr: SocketAddr) -> Self {
        let udp = Self::unverified(addr).await;
        udp.verify().await;
        udp
    }

    /// The cookie exchange: a probe as long as the answer, then the cookie sent back.
    pub async fn verify(&self) {
        self.send(&format!("/hello{}", " ".repeat(58))).await;
        // Skips what an earlier membership left unread.
        let challenge = self.recv_where(|d| d.starts_with("COOKIE ")).await;
        let cookie = challenge
            .strip_prefix("COOKIE ")
            .unwrap_or_else(|| panic!("a cookie, got {challenge:?}"));
        self.send(&format!("/cookie {cookie}")).await;
    }

    /// A socket that has not done the cookie exchange.
    pub async fn unverified(addr: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(addr).await.unwrap();
        Udp(socket)
    }
    pub async fn send(&self, text: &str) {
        self.0.send(text.as_bytes()).await.unwrap();
    }
    pub async fn recv(&self) -> String {
        self.try_recv(TIMEOUT).await.expect("a datagram in time")
    }
    pub async fn try_recv(&self, wait: Duration) -> Option<String> {
        let mut buf = vec![0u8; 70_000];
        let n = tokio::time::timeout(wait, self.0.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
    pub async fn recv_where(&self, pred: impl Fn(&str) -> bool) -> String {
        for _ in 0..1000 {
            let d = self.recv().await;
            if pred(&d) {
                return d;
            }
        }
        panic!("no matching datagram");
    }
}

/// This process's resident memory in bytes (the server under test runs in it).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A token signed with `secret` for `sub`, granting each of `grants` (`ROOM=ACTION,…`), valid
/// for ten minutes.
pub fn grant_token(secret: &str, sub: &str, grants: &[&str]) -> String {
    let mut g = switchboard::auth::Grants::default();
    for grant in grants {
        let (p, a) = switchboard::auth::Grants::parse_one(grant).unwrap();
        g.push(p, a);
    }
    switchboard::auth::sign(secret, sub, None, &g, 600).unwrap()
}
