//! MQTT with real clients: Debian's `mosquitto_sub` and `mosquitto_pub` against the server,
//! the server's rooms seen from TCP, SSE and HTTP, and raw packets for what no client sends.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use support::{Line, TIMEOUT, publish_to, start_with, test_config};
use switchboard::Config;
use switchboard::auth::{Action, AuthConfig, Pattern, RoomRule};

/// A running `mosquitto_sub`: its printed messages, one line each (`-F` decides the form).
struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Messages printed before the awaited debug line.
    early: std::cell::RefCell<std::collections::VecDeque<String>>,
}

impl Sub {
    /// Starts `mosquitto_sub` with `args` and waits until the server has acknowledged its
    /// subscriptions.
    fn start(addr: SocketAddr, args: &[&str]) -> Sub {
        // Line-buffered: a pipe would otherwise hold its lines until it exits.
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-d",
                "-h",
                "127.0.0.1",
                "-p",
                &addr.port().to_string(),
                "-W",
                "30",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub installed (Debian mosquitto-clients)");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let sub = Sub {
            child,
            lines,
            early: Default::default(),
        };
        sub.debug_until("received SUBACK");
        sub
    }

    /// Waits for a debug line containing `needle`.
    fn debug_until(&self, needle: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(line) if is_debug(&line) => continue,
                Ok(line) => self.early.borrow_mut().push_back(line),
                Err(e) => panic!("no {needle:?} from mosquitto_sub: {e}"),
            }
        }
    }

    /// The next printed message, skipping debug lines; `None` after `wait`.
    fn try_next(&self, wait: Duration) -> Option<String> {
        if let Some(line) = self.early.borrow_mut().pop_front() {
            return Some(line);
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            if !is_debug(&line) {
                return Some(line);
            }
        }
    }

    fn next(&self) -> String {
        self.try_next(TIMEOUT)
            .expect("a message within the timeout")
    }

    /// Kills the client without a DISCONNECT (as a device losing power would).
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the client to exit by itself (after `-C N` messages, or when cut).
    fn wait_exit(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mosquitto_sub did not exit");
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line `-d` prints about the protocol rather than a message.
fn is_debug(line: &str) -> bool {
    line.starts_with("Client ") || line.starts_with("Subscribed")
}

/// Runs `mosquitto_pub` with `args`; its output.
fn publish(addr: SocketAddr, args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .args(["10", "mosquitto_pub", "-h", "127.0.0.1"])
        .args(["-p", &addr.port().to_string()])
        .args(args)
        .output()
        .expect("mosquitto_pub installed")
}

fn publish_ok(addr: SocketAddr, args: &[&str]) {
    let out = publish(addr, args);
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `test_config` on the SQLite store in `dir`, so that a server started again finds what
/// the first one kept.
fn durable_config(dir: &std::path::Path) -> Config {
    Config {
        store: switchboard::config::StoreKind::Sqlite,
        data_dir: dir.to_owned(),
        ..test_config()
    }
}

/// `%r %q %t %p`: retained flag, QoS, topic, payload.
const FORMAT: &[&str] = &["-F", "%r %q %t %p"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qos_0_1_and_2_reach_wildcard_subscribers_in_order() {
    let server = start_with(test_config()).await;
    let mqtt = server.mqtt();
    let all = Sub::start(mqtt, &[FORMAT, &["-q", "2", "-t", "sensors/#"]].concat());
    let one = Sub::start(
        mqtt,
        &[FORMAT, &["-q", "1", "-t", "sensors/+/temp"]].concat(),
    );
    for (qos, topic, value) in [
        ("0", "sensors/kitchen/temp", "21.5"),
        ("1", "sensors/hall/temp", "19.0"),
        ("2", "sensors/hall/humidity", "40"),
    ] {
        publish_ok(mqtt, &["-q", qos, "-t", topic, "-m", value]);
    }
    // Delivered at the subscription's QoS: every room message is stored.
    assert_eq!(all.next(), "0 2 sensors/kitchen/temp 21.5");
    assert_eq!(all.next(), "0 2 sensors/hall/temp 19.0");
    assert_eq!(all.next(), "0 2 sensors/hall/humidity 40");
    assert_eq!(one.next(), "0 1 sensors/kitchen/temp 21.5");
    assert_eq!(one.next(), "0 1 sensors/hall/temp 19.0");
    assert_eq!(one.try_next(Duration::from_millis(300)), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mqtt_tcp_sse_and_http_share_one_room() {
    let server = start_with(test_config()).await;
    let (mqtt, http) = (server.mqtt(), server.http());
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    tcp.say("/join sensors/kitchen").await;
    tcp.line_where(|l| l.contains("joined sensors/kitchen"))
        .await;
    let res = support::http_client()
        .get(format!("http://{http}/events?room=sensors/kitchen"))
        .send()
        .await
        .unwrap();
    let mut sse = Box::pin(res.bytes_stream().eventsource());
    let sub = Sub::start(mqtt, &["-v", "-q", "1", "-t", "sensors/kitchen"]);

    publish_ok(
        mqtt,
        &[
            "-i",
            "thermo",
            "-q",
            "1",
            "-t",
            "sensors/kitchen",
            "-m",
            "21.5",
        ],
    );
    assert_eq!(
        tcp.line_where(|l| l.starts_with("thermo")).await,
        "thermo: 21.5"
    );
    let event = tokio::time::timeout(TIMEOUT, async {
        loop {
            let e = sse.next().await.unwrap().unwrap();
            if e.event == "message" {
                return e;
            }
        }
    })
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        (v["nick"].as_str(), v["text"].as_str()),
        (Some("thermo"), Some("21.5"))
    );
    assert_eq!(sub.next(), "sensors/kitchen 21.5");

    tcp.say("from the terminal").await;
    assert_eq!(sub.next(), "sensors/kitchen from the terminal");
    publish_to(http, "sensors%2Fkitchen", "from a backend")
        .await
        .unwrap();
    assert_eq!(sub.next(), "sensors/kitchen from a backend");
    let body = support::get_json(http, "/rooms/sensors%2Fkitchen/messages").await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 3, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retained_messages_are_kept_across_a_restart_and_cleared_by_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let durable = || durable_config(dir.path());
    let server = start_with(durable()).await;
    publish_ok(
        server.mqtt(),
        &["-r", "-q", "1", "-t", "home/door", "-m", "open"],
    );
    let sub = Sub::start(server.mqtt(), &[FORMAT, &["-t", "home/#"]].concat());
    assert_eq!(sub.next(), "1 0 home/door open");
    drop(sub);
    server.stop().await;

    let server = start_with(durable()).await;
    let sub = Sub::start(
        server.mqtt(),
        &[FORMAT, &["-q", "1", "-t", "home/door"]].concat(),
    );
    assert_eq!(sub.next(), "1 1 home/door open");
    publish_ok(server.mqtt(), &["-r", "-t", "home/door", "-n"]);
    drop(sub);
    let sub = Sub::start(server.mqtt(), &[FORMAT, &["-t", "home/door"]].concat());
    assert_eq!(sub.try_next(Duration::from_millis(300)), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_will_is_published_when_a_client_vanishes_but_not_when_it_says_goodbye() {
    let server = start_with(test_config()).await;
    let mqtt = server.mqtt();
    let watcher = Sub::start(mqtt, &["-v", "-t", "status/+"]);
    let device = Sub::start(
        mqtt,
        &[
            "-t",
            "cmd/d1",
            "--will-topic",
            "status/d1",
            "--will-payload",
            "offline",
        ],
    );
    device.kill();
    assert_eq!(watcher.next(), "status/d1 offline");
    let polite = Sub::start(
        mqtt,
        &[
            "-t",
            "cmd/d2",
            "-C",
            "1",
            "--will-topic",
            "status/d2",
            "--will-payload",
            "offline",
        ],
    );
    publish_ok(mqtt, &["-t", "cmd/d2", "-m", "stop"]);
    assert!(polite.wait_exit().success());
    assert_eq!(watcher.try_next(Duration::from_millis(300)), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_persistent_session_gets_what_it_missed_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let durable = || durable_config(dir.path());
    let server = start_with(durable()).await;
    let persistent = ["-c", "-i", "dev-7", "-q", "1", "-v", "-t", "fleet/+/cmd"];
    let sub = Sub::start(server.mqtt(), &persistent);
    publish_ok(
        server.mqtt(),
        &["-q", "1", "-t", "fleet/a/cmd", "-m", "first"],
    );
    assert_eq!(sub.next(), "fleet/a/cmd first");
    sub.kill();
    // While it is away: a message to a room it is in, and one to a room made since.
    publish_to(server.http(), "fleet%2Fa%2Fcmd", "while away")
        .await
        .unwrap();
    publish_to(server.http(), "fleet%2Fb%2Fcmd", "new room")
        .await
        .unwrap();
    server.stop().await;

    let server = start_with(durable()).await;
    publish_to(server.http(), "fleet%2Fa%2Fcmd", "after restart")
        .await
        .unwrap();
    let sub = Sub::start(server.mqtt(), &persistent);
    let mut got = vec![sub.next(), sub.next(), sub.next()];
    got.sort();
    assert_eq!(
        got,
        [
            "fleet/a/cmd after restart",
            "fleet/a/cmd while away",
            "fleet/b/cmd new room"
        ]
    );
    assert_eq!(sub.try_next(Duration::from_millis(300)), None);
    // A clean session starts empty and forgets the parked one.
    sub.kill();
    let clean = Sub::start(server.mqtt(), &["-i", "dev-7", "-v", "-t", "other"]);
    publish_to(server.http(), "fleet%2Fa%2Fcmd", "not for you")
        .await
        .unwrap();
    assert_eq!(clean.try_next(Duration::from_millis(300)), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let server = start_with(test_config()).await;
    // The first holder is a raw 3.1.1 connection called "same".
    let mut first = TcpStream::connect(server.mqtt()).unwrap();
    first.set_read_timeout(Some(TIMEOUT)).unwrap();
    first
        .write_all(b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04same")
        .unwrap();
    let mut connack = [0; 4];
    first.read_exact(&mut connack).unwrap();
    assert_eq!(connack, *b"\x20\x02\x00\x00");
    let second = Sub::start(server.mqtt(), &["-i", "same", "-v", "-t", "a"]);
    publish_ok(server.mqtt(), &["-t", "a", "-m", "hi"]);
    assert_eq!(second.next(), "a hi");
    // The first is closed (3.1.1 has no server DISCONNECT).
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mqtt_5_carries_the_message_id_and_says_why_it_refuses() {
    let server = start_with(test_config()).await;
    let mqtt = server.mqtt();
    let sub = Sub::start(mqtt, &["-V", "5", "-F", "%t %p %P", "-t", "v5/room"]);
    publish_ok(
        mqtt,
        &["-V", "5", "-q", "1", "-t", "v5/room", "-m", "hello"],
    );
    let line = sub.next();
    let (_, id) = line.split_once("id:").expect("id user property");
    let history = support::history_of(server.http(), "v5%2Froom").await;
    assert_eq!(history, [(id.to_owned(), "hello".to_owned())]);
    // Not a room name: refused with a reason code (0x90, topic name invalid).
    let out = publish(
        mqtt,
        &["-V", "5", "-q", "1", "-d", "-t", "bad//topic", "-m", "x"],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("RC:144"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sys_topics_give_live_figures() {
    let server = start_with(test_config()).await;
    let sub = Sub::start(
        server.mqtt(),
        &["-v", "-t", "$SYS/broker/clients/connected", "-t", "#"],
    );
    assert_eq!(sub.next(), "$SYS/broker/clients/connected 1");
    // `#` does not match `$SYS`: only a publish to a room comes next.
    publish_ok(server.mqtt(), &["-t", "x", "-m", "y"]);
    assert_eq!(sub.next(), "x y");
}

const SECRET: &str = "mqtt-secret-0123456789abcdef-0123456789";

fn token(sub: &str, grants: &[&str]) -> String {
    support::grant_token(SECRET, sub, grants)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passwords_are_tokens_and_grants_decide_topics() {
    let config = Config {
        auth: AuthConfig {
            secrets: vec![SECRET.into()],
            rooms: vec![RoomRule {
                pattern: Pattern::new("public/*"),
                anonymous: [Action::Subscribe].into_iter().collect(),
                users: None,
            }],
            ..AuthConfig::default()
        },
        ..test_config()
    };
    let server = start_with(config).await;
    let mqtt = server.mqtt();
    let refused = publish(
        mqtt,
        &["-u", "x", "-P", "not-a-token", "-t", "public/a", "-m", "x"],
    );
    assert!(!refused.status.success());
    let anonymous = Sub::start(mqtt, &["-v", "-t", "public/#"]);
    let sensor = token("sensor-1", &["public/*=publish"]);
    publish_ok(
        mqtt,
        &[
            "-u", "sensor-1", "-P", &sensor, "-t", "public/a", "-m", "21",
        ],
    );
    assert_eq!(anonymous.next(), "public/a 21");
    // Anonymous clients may read public/ but not write it: 3.1.1 has no refusal but the
    // connection's end, so nothing reaches the room.
    let _ = publish(mqtt, &["-q", "1", "-t", "public/a", "-m", "spoof"]);
    assert_eq!(anonymous.try_next(Duration::from_millis(300)), None);
    // A subscription outside the grants is refused in SUBACK (0x80).
    let out = Command::new("timeout")
        .args([
            "10",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            &mqtt.port().to_string(),
        ])
        .args(["-t", "private/x", "-E", "-d"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("128"), "{said}");
}

/// Raw packets for what well-behaved clients never send.
fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

const CONNECT_V4: &[u8] = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
const CONNECT_V5: &[u8] = b"\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00";
const CONNECT_V4_KEEPALIVE_1: &[u8] = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x01\x00\x00";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_packets_get_the_right_answer_and_a_close() {
    let server = start_with(test_config()).await;
    let mqtt = server.mqtt();
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        // MQTT 3.1 ("MQIsdp", level 3): CONNACK 1, unacceptable protocol version.
        (
            "level 3",
            b"\x10\x0e\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x00".to_vec(),
            b"\x20\x02\x00\x01".to_vec(),
        ),
        ("http", b"GET / HTTP/1.1\r\n\r\n".to_vec(), Vec::new()),
        ("publish first", b"\x30\x03\x00\x01a".to_vec(), Vec::new()),
        // 3.1.1: a packet over the size limit closes; 5.0 says 0x95 first.
        (
            "v4 too large",
            [CONNECT_V4, b"\x30\xff\xff\xff\x07"].concat(),
            b"\x20\x02\x00\x00".to_vec(),
        ),
        (
            "second connect",
            [CONNECT_V4, CONNECT_V4].concat(),
            b"\x20\x02\x00\x00".to_vec(),
        ),
        (
            "bad qos",
            [CONNECT_V4, b"\x36\x03\x00\x01a"].concat(),
            b"\x20\x02\x00\x00".to_vec(),
        ),
    ];
    for (what, sent, answer) in cases {
        let got = raw(mqtt, &sent);
        assert_eq!(got, answer, "{what}");
    }
    let got = raw(mqtt, &[CONNECT_V5, b"\x30\xff\xff\xff\x07"].concat());
    assert_eq!(got[0], 0x20, "CONNACK first: {got:?}");
    let disconnect = &got[2 + got[1] as usize..];
    assert_eq!(&disconnect[..1], b"\xe0", "{got:?}");
    assert_eq!(disconnect[2], 0x95, "packet too large: {got:?}");
    // Keep-alive: 1 s, so cut after 1.5 s of silence.
    let got = raw(mqtt, CONNECT_V4_KEEPALIVE_1);
    assert_eq!(got, b"\x20\x02\x00\x00");
    // The server is still fine.
    let sub = Sub::start(mqtt, &["-v", "-t", "still/up"]);
    publish_ok(mqtt, &["-t", "still/up", "-m", "yes"]);
    assert_eq!(sub.next(), "still/up yes");
}

/// A client asking for no keep-alive is held to the idle timeout: 5.0 is told the server's
/// keep-alive in its CONNACK, and both versions are closed after 1.5× it of silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_keep_alive_means_the_idle_timeout() {
    let server = start_with(Config {
        idle_timeout: Some(Duration::from_secs(1)),
        ..test_config()
    })
    .await;
    let mqtt = server.mqtt();
    let started = std::time::Instant::now();
    // 3.1.1, keep-alive 0: CONNACK, then closed (read_to_end returns) well before TIMEOUT.
    let got = raw(mqtt, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x00\x00\x00");
    assert_eq!(got, b"\x20\x02\x00\x00");
    assert!(started.elapsed() < TIMEOUT, "closed, not held");
    // 5.0, keep-alive 0: CONNACK carries Server Keep Alive (0x13) = 1 s; then DISCONNECT
    // 0x8D (keep-alive timeout).
    let got = raw(mqtt, b"\x10\x0d\x00\x04MQTT\x05\x02\x00\x00\x00\x00\x00");
    let keep_alive = got.windows(3).any(|w| w == b"\x13\x00\x01");
    assert!(keep_alive, "Server Keep Alive 1 s in {got:?}");
    let disconnect = got.iter().rposition(|&b| b == 0xe0).expect("a DISCONNECT");
    assert_eq!(got[disconnect + 2], 0x8d, "keep-alive timeout: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_terminal_client_speaks_mqtt_and_shows_text_safely() {
    let server = start_with(test_config()).await;
    let mqtt = server.mqtt();
    let watcher = Sub::start(mqtt, &["-v", "-t", "cli/room"]);
    let mut cli = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "connect",
            &format!("mqtt://127.0.0.1:{}/cli/room", mqtt.port()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = cli.stdin.take().unwrap();
    // Once the client has subscribed, what it types reaches the room.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        writeln!(stdin, "typed").unwrap();
        if watcher.try_next(Duration::from_millis(200)).as_deref() == Some("cli/room typed") {
            break;
        }
        assert!(Instant::now() < deadline, "the client never published");
    }
    let stdout = cli.stdout.take().unwrap();
    let (tx, printed) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    publish_ok(mqtt, &["-t", "cli/room", "-m", "esc\u{1b}[2Jape"]);
    let shown = loop {
        let line = printed
            .recv_timeout(TIMEOUT)
            .expect("the client prints the message");
        if line.contains("esc") {
            break line;
        }
    };
    assert_eq!(shown, "cli/room: esc\u{241b}[2Jape");
    drop(stdin);
    let status = tokio::task::spawn_blocking(move || cli.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

/// The packets in a byte stream a server sent: (first byte, body).
fn packets(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let (mut len, mut shift, mut at) = (0usize, 0, 1);
        while at < bytes.len() {
            len |= usize::from(bytes[at] & 0x7f) << shift;
            shift += 7;
            at += 1;
            if bytes[at - 1] & 0x80 == 0 {
                break;
            }
        }
        if bytes.len() < at + len {
            break;
        }
        out.push((bytes[0], bytes[at..at + len].to_vec()));
        bytes = &bytes[at + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_that_never_acks_is_cut_with_0x97_and_the_room_goes_on() {
    let server = start_with(Config {
        queue_capacity: 64,
        ..support::flood_config()
    })
    .await;
    let mqtt = server.mqtt();
    let fast = Sub::start(mqtt, &["-C", "300", "-t", "slow/room"]);
    // 5.0, reads everything, acknowledges nothing.
    let mut stalled = TcpStream::connect(mqtt).unwrap();
    stalled.set_read_timeout(Some(TIMEOUT)).unwrap();
    stalled.write_all(CONNECT_V5).unwrap();
    stalled
        .write_all(b"\x82\x0f\x00\x01\x00\x00\x09slow/room\x01")
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = stalled.read_to_end(&mut got);
        got
    });
    // The stalled client's subscription is in place once its SUBACK (after the CONNACK) is.
    let deadline = Instant::now() + TIMEOUT;
    while support::get_json(server.http(), "/rooms/slow%2Froom/presence").await["members"]
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(Instant::now() < deadline, "both subscribers joined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..300 {
        publish_to(
            server.http(),
            "slow%2Froom",
            &format!("{i} {}", "p".repeat(100)),
        )
        .await
        .unwrap();
    }
    // The room went on: the reading subscriber got everything.
    assert!(fast.wait_exit().success());
    let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    let packets = packets(&got);
    let publishes = packets.iter().filter(|(b, _)| b >> 4 == 3).count();
    assert!(
        (64..300).contains(&publishes),
        "{publishes} publishes before the cut"
    );
    let last = packets.last().expect("packets");
    assert_eq!(
        (last.0, last.1[0]),
        (0xe0, 0x97),
        "quota exceeded: {:?}",
        &packets[packets.len() - 1]
    );
}

/// A raw 3.1.1 connection with a client id and clean session off.
fn persistent_raw(addr: SocketAddr, id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut connect = b"\x00\x04MQTT\x04\x00\x00\x3c".to_vec();
    connect.extend_from_slice(&(id.len() as u16).to_be_bytes());
    connect.extend_from_slice(id.as_bytes());
    let mut packet = vec![0x10, connect.len() as u8];
    packet.extend_from_slice(&connect);
    stream.write_all(&packet).unwrap();
    stream
}

/// Reads packets until `n` PUBLISHes have come; their bodies' payload texts and packet ids.
fn read_publishes(stream: &mut TcpStream, n: usize) -> Vec<(String, u16, bool)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let publishes: Vec<(String, u16, bool)> = packets(&got)
            .into_iter()
            .filter(|(b, _)| b >> 4 == 3)
            .map(|(b, body)| {
                let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let at = 2 + topic_len;
                let pkid = u16::from_be_bytes([body[at], body[at + 1]]);
                (
                    String::from_utf8_lossy(&body[at + 2..]).into_owned(),
                    pkid,
                    b & 0x08 != 0,
                )
            })
            .collect();
        if publishes.len() >= n {
            return publishes;
        }
        let read = stream.read(&mut buf).expect("publishes within the timeout");
        assert!(read > 0, "closed after {publishes:?}");
        got.extend_from_slice(&buf[..read]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unacknowledged_qos_1_messages_come_again_on_reconnect() {
    let server = start_with(test_config()).await;
    let mut first = persistent_raw(server.mqtt(), "meter-9");
    // SUBSCRIBE pkid 1, "m/1" at QoS 1.
    first.write_all(b"\x82\x08\x00\x01\x00\x03m/1\x01").unwrap();
    // CONNACK (4 bytes) and SUBACK (5): subscribed before anything is published.
    let mut acks = [0u8; 9];
    first.read_exact(&mut acks).unwrap();
    assert_eq!((acks[0], acks[4]), (0x20, 0x90), "{acks:?}");
    publish_to(server.http(), "m%2F1", "one").await.unwrap();
    publish_to(server.http(), "m%2F1", "two").await.unwrap();
    let got = read_publishes(&mut first, 2);
    let texts: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(texts, ["one", "two"]);
    // Only "one" is acknowledged before the connection drops.
    first
        .write_all(&[0x40, 0x02, (got[0].1 >> 8) as u8, got[0].1 as u8])
        .unwrap();
    // A PINGRESP means the PUBACK before it was taken: packets are handled in order.
    first.write_all(b"\xc0\x00").unwrap();
    let mut pong = [0u8; 2];
    first.read_exact(&mut pong).unwrap();
    assert_eq!(pong, *b"\xd0\x00");
    drop(first);
    // Parked once the server saw it go: only then is "three" kept for it.
    for _ in 0..100 {
        let presence = support::get_json(server.http(), "/rooms/m%2F1/presence").await;
        if presence["members"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish_to(server.http(), "m%2F1", "three").await.unwrap();
    let mut again = persistent_raw(server.mqtt(), "meter-9");
    let got = read_publishes(&mut again, 2);
    let texts: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(texts, ["two", "three"]);
}

/// Splits a shell command line on spaces, honouring single quotes (all the docs use).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_protocol_docs_mqtt_example_runs_as_written() {
    let server = start_with(test_config()).await;
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let start = docs
        .find("<!-- mqtt-example")
        .expect("the example's start marker");
    let end = docs
        .find("<!-- /mqtt-example -->")
        .expect("the example's end marker");
    let block: Vec<&str> = docs[start..end]
        .lines()
        .filter(|l| !l.starts_with("<!--") && !l.starts_with("```"))
        .collect();
    let commands: Vec<&str> = block.iter().filter_map(|l| l.strip_prefix("$ ")).collect();
    let expected: Vec<&str> = block
        .iter()
        .copied()
        .filter(|l| !l.starts_with("$ "))
        .collect();
    assert!(
        commands[0].starts_with("mosquitto_sub") && expected.len() == 3,
        "{block:?}"
    );
    // The subscriber, with the server's own port in place of -h/-p.
    let mut args = shell_words(commands[0]);
    args.remove(0);
    while let Some(at) = args.iter().position(|a| a == "-h" || a == "-p") {
        args.drain(at..at + 2);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sub = Sub::start(server.mqtt(), &args);
    for command in &commands[1..] {
        let command = command
            .replace("-p 1883", &format!("-p {}", server.mqtt().port()))
            .replace("127.0.0.1:8000", &server.http().to_string())
            .replace("127.0.0.1:12345", &server.tcp().to_string())
            .replace(
                "| switchboard ",
                &format!("| {} ", env!("CARGO_BIN_EXE_switchboard")),
            );
        let out = Command::new("timeout")
            .args(["10", "bash", "-c", &command])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(out.success(), "{command}");
    }
    for want in expected {
        assert_eq!(sub.next(), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_sensor_to_dashboard_example_runs_as_written() {
    let server = start_with(test_config()).await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("<!-- sensor-example").expect("start marker");
    let end = readme.find("<!-- /sensor-example -->").expect("end marker");
    let commands: Vec<String> = readme[start..end]
        .lines()
        .filter(|l| l.starts_with("curl") || l.starts_with("mosquitto_pub"))
        .map(|l| {
            l.split("  #")
                .next()
                .unwrap()
                .trim()
                .replace("127.0.0.1:8000", &server.http().to_string())
                .replace(
                    "-h 127.0.0.1",
                    &format!("-h 127.0.0.1 -p {}", server.mqtt().port()),
                )
        })
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let mut dashboard = Command::new("timeout")
        .args(["20", "bash", "-c", &commands[0]])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let out = dashboard.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || lines.recv_timeout(TIMEOUT).expect("the feed goes on");
    while next() != "event: joined" {}
    let status = Command::new("bash")
        .args(["-c", &commands[1]])
        .status()
        .unwrap();
    assert!(status.success());
    loop {
        let line = next();
        if line.starts_with("data:") && line.contains("\"type\":\"message\"") {
            assert!(line.contains("\"text\":\"21.5\""), "{line}");
            break;
        }
    }
    let _ = dashboard.kill();
    let _ = dashboard.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_qos_2_message_resent_after_reconnecting_is_published_once() {
    let server = start_with(test_config()).await;
    let publish = b"\x34\x0c\x00\x03q/2\x00\x07exact".to_vec();
    let mut first = persistent_raw(server.mqtt(), "exact-1");
    first.write_all(&publish).unwrap();
    // CONNACK, then PUBREC for packet 7 once it is stored.
    let mut answer = [0u8; 8];
    first.read_exact(&mut answer).unwrap();
    assert_eq!(answer, *b"\x20\x02\x00\x00\x50\x02\x00\x07");
    drop(first);
    // Reconnected, the client sends it again (DUP set), then releases it.
    let mut again = persistent_raw(server.mqtt(), "exact-1");
    let mut dup = publish.clone();
    dup[0] |= 0x08;
    again.write_all(&dup).unwrap();
    again.write_all(b"\x62\x02\x00\x07").unwrap();
    let mut answer = [0u8; 12];
    again.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[..4], b"\x20\x02\x01\x00", "session present");
    assert_eq!(
        &answer[4..],
        b"\x50\x02\x00\x07\x70\x02\x00\x07",
        "PUBREC then PUBCOMP"
    );
    let history = support::history_of(server.http(), "q%2F2").await;
    assert_eq!(history.len(), 1, "{history:?}");
}

/// An MQTT 3.1.1 CONNECT with a will (QoS 0), clean session, keep-alive 60 s.
fn connect_with_will(client_id: &str, topic: &str, payload: &[u8]) -> Vec<u8> {
    let field = |bytes: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    let mut body = b"\x00\x04MQTT\x04\x06\x00\x3c".to_vec();
    field(client_id.as_bytes(), &mut body);
    field(topic.as_bytes(), &mut body);
    field(payload, &mut body);
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// A will is a publish: charged to its sender's publish bucket (here 3 at once, then 1 a
/// second), so connecting and vanishing over and over publishes wills no faster than
/// messages (before: 54,800 wills of 64 KB in 20 s from one address); and a will over 4 KiB
/// is refused at CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wills_are_paced_like_publishes_and_capped_in_size() {
    let server = start_with(Config {
        publish_rate: 1.0,
        publish_burst: 3.0,
        ..test_config()
    })
    .await;
    let mqtt = server.mqtt();
    let watcher = Sub::start(mqtt, &["-v", "-t", "wills/#"]);
    for i in 0..10 {
        let mut stream = TcpStream::connect(mqtt).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream
            .write_all(&connect_with_will(&format!("w{i}"), "wills/x", b"gone"))
            .unwrap();
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
        // Vanish without DISCONNECT: the will is due.
        drop(stream);
    }
    let mut heard = 0;
    while watcher.try_next(Duration::from_millis(700)).is_some() {
        heard += 1;
    }
    assert!((3..=5).contains(&heard), "{heard} of 10 wills published");
    let big = connect_with_will("big", "wills/big", &vec![b'x'; 5 * 1024]);
    let answer = raw(mqtt, &big);
    // 3.1.1 has no "too large" code: 3, server unavailable (5.0 says 0x95).
    assert_eq!(answer, [0x20, 0x02, 0x00, 0x03]);
    server.stop().await;
}
