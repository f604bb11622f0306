//! gRPC with a real client: Python's grpcio (tests/grpc/client.py, stubs generated from the
//! shipped .proto), against a server on real sockets, beside TCP and WebSocket clients.
//! `scripts/test.sh` installs grpcio into `target/grpc-venv`.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::{Line, TIMEOUT, publish_to, start_with, test_config};
use switchboard::Config;
use switchboard::auth::{Action, AuthConfig, Pattern, RoomRule};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "grpc-secret-0123456789abcdef-0123456789";
const API_KEY: &str = "grpc-backend-key-77";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python with grpcio: `SWITCHBOARD_PYTHON`, else the test command's venv.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("SWITCHBOARD_PYTHON") {
        return python.into();
    }
    let venv = root().join("target/grpc-venv/bin/python");
    assert!(
        venv.exists(),
        "no {} : run ./scripts/test.sh, which installs grpcio there",
        venv.display()
    );
    venv
}

/// The client's command for `args` against `addr`, credentials from `env`.
fn client(addr: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(python());
    command
        .arg(root().join("tests/grpc/client.py"))
        .arg(addr.to_string())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// A running client whose JSON lines are read with a deadline each; killed when dropped.
struct Py {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Py {
    fn spawn(addr: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> Py {
        let mut child = client(addr, args, env).spawn().expect("python runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().take(100_000) {
                let Ok(line) = line else { return };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("client printed {line:?}: {e}"));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        Py { child, lines }
    }

    /// The next line; panics after `wait` (generous: the client imports grpc first).
    fn next(&self, wait: Duration) -> Value {
        self.lines
            .recv_timeout(wait)
            .expect("a line from the grpc client in time")
    }

    /// Lines until one has a `status` (the end of a call), all of them.
    fn until_status(&self) -> Vec<Value> {
        let mut got = Vec::new();
        for _ in 0..100_000 {
            let line = self.next(TIMEOUT * 2);
            let done = line.get("status").is_some();
            got.push(line);
            if done {
                return got;
            }
        }
        panic!("no status in 100,000 lines");
    }

    /// Events of `kind` among `lines`.
    fn kinds<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
        lines.iter().filter(|l| l["kind"] == kind).collect()
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one call to completion; its one answer line.
fn call(addr: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> Value {
    let py = Py::spawn(addr, args, env);
    py.next(TIMEOUT * 2)
}

/// Runs `call` on a blocking thread (the client blocks; the server runs on this runtime).
async fn call_async(addr: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> Value {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        call(addr, &args, &env)
    })
    .await
    .unwrap()
}

fn grpc(server: &support::TestServer) -> SocketAddr {
    server.addrs.grpc.expect("grpc on")
}

/// Polls `check` (bounded: 100 tries, 50 ms apart) until it holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_history_pages_presence_and_rooms() {
    let server = start_with(test_config()).await;
    let addr = grpc(&server);
    let mut ids = Vec::new();
    for i in 0..5 {
        let reply = call_async(addr, &["publish", "lobby", &format!("m{i}")], &[]).await;
        ids.push(reply["id"].as_str().expect("an id").to_owned());
        assert_eq!(reply["duplicate"], false);
    }
    // A retried publish with the same key is stored once.
    let first = call_async(addr, &["publish", "lobby", "once", "k-1"], &[]).await;
    let again = call_async(addr, &["publish", "lobby", "once", "k-1"], &[]).await;
    assert_eq!(
        (first["id"].clone(), again["duplicate"].clone()),
        (again["id"].clone(), true.into())
    );

    // Paging: two at a time from the start, each page's `next` the following page's `since`.
    let mut texts = Vec::new();
    let mut since = String::new();
    for _ in 0..10 {
        let page = call_async(addr, &["history", "lobby", &since, "2"], &[]).await;
        texts.extend(
            page["texts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned()),
        );
        since = page["next"].as_str().unwrap().to_owned();
        if page["more"] == false {
            break;
        }
    }
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4", "once"]);
    let page = call_async(addr, &["history", "lobby", &ids[2], "0"], &[]).await;
    assert_eq!(page["texts"], serde_json::json!(["m3", "m4", "once"]));
    assert_eq!(page["from"][0], "anonymous");

    // Presence sees a TCP client (in the lobby from its first line).
    let (_tcp, nick) = Line::connect(server.tcp()).await;
    let presence = call_async(addr, &["presence", "lobby"], &[]).await;
    assert_eq!(
        presence["members"],
        serde_json::json!([{"nick": nick, "transport": "tcp"}])
    );
    let rooms = call_async(addr, &["rooms"], &[]).await;
    assert_eq!(rooms["rooms"][0]["name"], "lobby");
    assert_eq!(rooms["rooms"][0]["members"], 1);
    assert_eq!(rooms["rooms"][0]["last_id"], first["id"]);

    // Bad input is INVALID_ARGUMENT with the reason.
    let bad = call_async(addr, &["publish", "no spaces", "x"], &[]).await;
    assert_eq!(bad["status"], "INVALID_ARGUMENT", "{bad}");
    let bad = call_async(addr, &["history", "lobby", "not-an-id"], &[]).await;
    assert_eq!(bad["status"], "INVALID_ARGUMENT", "{bad}");
    assert!(
        bad["details"].as_str().unwrap().contains("EPOCH-SEQ"),
        "{bad}"
    );
    let bad = call_async(addr, &["history", "lobby", "", "5000"], &[]).await;
    assert_eq!(bad["status"], "INVALID_ARGUMENT", "{bad}");
    let bad = call_async(addr, &["publish", "lobby", "   "], &[]).await;
    assert_eq!(bad["status"], "INVALID_ARGUMENT", "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_resumes_from_a_cursor_and_sees_every_transport() {
    let server = start_with(test_config()).await;
    let addr = grpc(&server);
    let a = publish_to(server.http(), "lobby", "a").await.unwrap();
    publish_to(server.http(), "lobby", "b").await.unwrap();
    publish_to(server.http(), "lobby", "c").await.unwrap();
    // Resume after "a": the replay (b, c) then live messages, without gap or duplicate.
    let since = format!("lobby={a}");
    let sub = Py::spawn(addr, &["subscribe", "4", &since], &[]);
    let welcome = sub.next(TIMEOUT * 2);
    assert_eq!(welcome["kind"], "KIND_WELCOME", "{welcome}");
    let mut replayed = Vec::new();
    loop {
        let line = sub.next(TIMEOUT);
        if line["kind"] == "KIND_JOINED" {
            break;
        }
        if line["kind"] == "KIND_MESSAGE" {
            replayed.push(line);
        }
    }
    let texts: Vec<&str> = replayed
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["b", "c"]);

    // A TCP client and a WebSocket client publish; the gRPC subscriber sees both.
    let (mut tcp, tcp_nick) = Line::connect(server.tcp()).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?nick=wendy", server.http()))
            .await
            .unwrap();
    tcp.say("from tcp").await;
    ws.send(Message::text("from ws")).await.unwrap();
    let rest = tokio::task::spawn_blocking(move || sub.until_status())
        .await
        .unwrap();
    let messages: Vec<(String, String)> = Py::kinds(&rest, "KIND_MESSAGE")
        .iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap().into(),
                m["text"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        messages.contains(&(tcp_nick.clone(), "from tcp".into())),
        "{messages:?}"
    );
    assert!(
        messages.contains(&("wendy".into(), "from ws".into())),
        "{messages:?}"
    );
    assert_eq!(rest.last().unwrap()["status"], "OK");
    // Each message carries its id, which resumes any transport.
    assert!(
        Py::kinds(&rest, "KIND_MESSAGE")
            .iter()
            .all(|m| m["id"].as_str().is_some())
    );

    // A gRPC publish reaches the TCP and WebSocket clients, under its x-nick.
    let reply = call_async(
        addr,
        &["publish", "lobby", "from grpc"],
        &[("SB_NICK", "svc")],
    )
    .await;
    assert!(reply["id"].is_string(), "{reply}");
    tcp.line_where(|l| l == "svc: from grpc").await;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .expect("the ws client hears the grpc publish")
            .unwrap()
            .unwrap();
        if frame.to_text().unwrap() == "svc: from grpc" {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chat_joins_publishes_with_acks_and_receives() {
    let server = start_with(test_config()).await;
    let addr = grpc(&server);
    let (mut tcp, _) = Line::connect(server.tcp()).await;
    let chat = Py::spawn(
        addr,
        &["chat", "lobby", "one", "two"],
        &[("SB_NICK", "chatty")],
    );
    let lines = tokio::task::spawn_blocking(move || chat.until_status())
        .await
        .unwrap();
    assert_eq!(lines.last().unwrap()["status"], "OK", "{lines:?}");
    assert_eq!(lines[0]["kind"], "KIND_WELCOME");
    assert_eq!(lines[0]["from"], "chatty");
    let joined = Py::kinds(&lines, "KIND_JOINED");
    assert_eq!(joined[0]["ref"], "j");
    assert!(
        joined[0]["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "chatty")
    );
    // Refusals are events with the frame's ref and the code; the stream goes on.
    let errors: Vec<(&str, &str)> = Py::kinds(&lines, "KIND_ERROR")
        .iter()
        .map(|e| (e["ref"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(errors, [("x", "not_joined"), ("e", "bad_frame")]);
    // Each publish is acked with the id the room gave it, which is the echo's id.
    let acks = Py::kinds(&lines, "KIND_ACK");
    let echoes = Py::kinds(&lines, "KIND_MESSAGE");
    for (i, text) in ["one", "two"].iter().enumerate() {
        let ack = acks
            .iter()
            .find(|a| a["ref"].as_str() == Some(i.to_string().as_str()))
            .expect("an ack");
        let echo = echoes
            .iter()
            .find(|e| e["text"] == *text)
            .expect("the echo");
        assert_eq!(ack["id"], echo["id"]);
        assert_eq!(echo["from"], "chatty");
    }
    tcp.line_where(|l| l == "chatty: one").await;
    tcp.line_where(|l| l == "chatty: two").await;
    // The stream is gone, and so is its member.
    let http = server.http();
    eventually("the chat stream's member leaves", || async move {
        let presence = support::get_json(http, "/rooms/lobby/presence").await;
        !presence["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["nick"] == "chatty")
    })
    .await;
}

fn auth_config() -> Config {
    Config {
        auth: AuthConfig {
            secrets: vec![SECRET.into()],
            api_keys: vec![API_KEY.into()],
            rooms: vec![RoomRule {
                pattern: Pattern::new("public"),
                anonymous: [Action::Subscribe, Action::History].into_iter().collect(),
                users: None,
            }],
            ..AuthConfig::default()
        },
        ..test_config()
    }
}

fn token(sub: &str, grants: &[&str]) -> String {
    support::grant_token(SECRET, sub, grants)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identity_comes_from_metadata_and_grants_decide() {
    let server = start_with(auth_config()).await;
    let addr = grpc(&server);
    // No credentials where a token is needed; a bad token; a token without the grant.
    let none = call_async(addr, &["publish", "ops", "x"], &[]).await;
    assert_eq!(none["status"], "UNAUTHENTICATED", "{none}");
    assert!(
        none["details"].as_str().unwrap().contains("needs a token"),
        "{none}"
    );
    let bad = call_async(addr, &["publish", "ops", "x"], &[("SB_TOKEN", "not.a.jwt")]).await;
    assert_eq!(bad["status"], "UNAUTHENTICATED", "{bad}");
    assert!(
        bad["details"]
            .as_str()
            .unwrap()
            .contains("credentials refused"),
        "{bad}"
    );
    let reader = token("rita", &["ops=subscribe,history"]);
    let denied = call_async(addr, &["publish", "ops", "x"], &[("SB_TOKEN", &reader)]).await;
    assert_eq!(denied["status"], "PERMISSION_DENIED", "{denied}");
    let denied = call_async(addr, &["presence", "ops"], &[("SB_TOKEN", &reader)]).await;
    assert_eq!(denied["status"], "PERMISSION_DENIED", "{denied}");
    // Anonymous may read `public` but not publish there.
    let anon = call_async(addr, &["publish", "public", "x"], &[]).await;
    assert_eq!(anon["status"], "UNAUTHENTICATED", "{anon}");
    let anon_sub = call_async(addr, &["subscribe", "1", "ops"], &[]).await;
    assert_eq!(anon_sub["status"], "UNAUTHENTICATED", "{anon_sub}");

    // A writer publishes under its verified name; a backend key names anyone.
    let writer = token("wes", &["ops=publish,subscribe,history"]);
    let ok = call_async(
        addr,
        &["publish", "ops", "by wes"],
        &[("SB_TOKEN", &writer)],
    )
    .await;
    assert!(ok["id"].is_string(), "{ok}");
    let ok = call_async(
        addr,
        &["publish", "ops", "by the backend"],
        &[("SB_API_KEY", API_KEY), ("SB_NICK", "deploy-bot")],
    )
    .await;
    assert!(ok["id"].is_string(), "{ok}");
    let impostor = call_async(
        addr,
        &["publish", "ops", "x"],
        &[("SB_TOKEN", &writer), ("SB_NICK", "someone-else")],
    )
    .await;
    assert_eq!(impostor["status"], "PERMISSION_DENIED", "{impostor}");
    let bad_key = call_async(addr, &["publish", "ops", "x"], &[("SB_API_KEY", "nope")]).await;
    assert_eq!(bad_key["status"], "UNAUTHENTICATED", "{bad_key}");
    let page = call_async(addr, &["history", "ops"], &[("SB_TOKEN", &reader)]).await;
    assert_eq!(
        page["texts"],
        serde_json::json!(["by wes", "by the backend"])
    );
    assert_eq!(page["from"], serde_json::json!(["wes", "deploy-bot"]));

    // A Chat stream keeps its identity: publishing where the token does not allow is an
    // error event, not the end of the stream.
    let chat = Py::spawn(addr, &["chat", "ops", "hello"], &[("SB_TOKEN", &writer)]);
    let lines = tokio::task::spawn_blocking(move || chat.until_status())
        .await
        .unwrap();
    assert_eq!(lines.last().unwrap()["status"], "OK", "{lines:?}");
    let echo = Py::kinds(&lines, "KIND_MESSAGE");
    assert_eq!(
        (echo[0]["from"].clone(), echo[0]["user"].clone()),
        ("wes".into(), "wes".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadline_ends_the_stream_and_its_membership() {
    let server = start_with(test_config()).await;
    let addr = grpc(&server);
    let started = Instant::now();
    let sub = Py::spawn(
        addr,
        &["subscribe", "100", "lobby"],
        &[("SB_TIMEOUT", "1.5"), ("SB_NICK", "brief")],
    );
    let lines = tokio::task::spawn_blocking(move || sub.until_status())
        .await
        .unwrap();
    assert_eq!(
        lines.last().unwrap()["status"],
        "DEADLINE_EXCEEDED",
        "{lines:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let http = server.http();
    eventually("the expired stream's member leaves", || async move {
        let presence = support::get_json(http, "/rooms/lobby/presence").await;
        presence["members"].as_array().unwrap().is_empty()
    })
    .await;
    // A unary call past its deadline: a publish to a store that answers in time is fine,
    // so a deadline too short to send the call at all stands in.
    let late = call_async(
        addr,
        &["publish", "lobby", "x"],
        &[("SB_TIMEOUT", "0.000001")],
    )
    .await;
    assert_eq!(late["status"], "DEADLINE_EXCEEDED", "{late}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reflection_lists_the_service_and_health_says_serving() {
    let server = start_with(test_config()).await;
    let addr = grpc(&server);
    let listed = call_async(addr, &["reflect"], &[]).await;
    let services: Vec<&str> = listed["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        services.contains(&"switchboard.v1.Switchboard"),
        "{services:?}"
    );
    assert!(services.contains(&"grpc.health.v1.Health"), "{services:?}");
    let health = call_async(addr, &["health", "switchboard.v1.Switchboard"], &[]).await;
    assert_eq!(health["status"], "SERVING");
    let health = call_async(addr, &["health"], &[]).await;
    assert_eq!(health["status"], "SERVING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_that_does_not_read_is_cut_and_the_room_goes_on() {
    let server = start_with(support::flood_config()).await;
    let addr = grpc(&server);
    // The client reads its first event, then sleeps while the room floods.
    let slow = Py::spawn(addr, &["stall", "lobby", "4"], &[("SB_TIMEOUT", "30")]);
    assert_eq!(slow.next(TIMEOUT * 2)["kind"], "KIND_WELCOME");
    let (flooder, _) = Line::connect(server.tcp()).await;
    let (_fr, fw) = flooder.into_parts();
    const COUNT: usize = 5_000;
    let writer = support::flood(fw, COUNT, 2_000);
    writer.await.unwrap();
    let end = tokio::task::spawn_blocking(move || slow.until_status())
        .await
        .unwrap();
    let last = end.last().unwrap();
    assert_eq!(last["status"], "RESOURCE_EXHAUSTED", "{last}");
    assert!(
        last["details"].as_str().unwrap().contains("slow consumer"),
        "{last}"
    );
}

/// The README's Python example, run as written against a server (its address swapped in).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_python_example_works() {
    let server = start_with(test_config()).await;
    let addr = grpc(&server);
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("<!-- grpc-example")
        .nth(1)
        .and_then(|b| b.split("<!-- /grpc-example").next())
        .expect("the README's grpc-example marker");
    let sh = block
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the shell block");
    let py = block
        .split("```python\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the python block");
    assert_eq!(py.lines().count(), 3, "three lines of Python: {py}");
    let dir = tempfile::tempdir().unwrap();
    // The generation command, from the repository root, its output in the temp dir.
    let words: Vec<String> = sh
        .split_whitespace()
        .map(|w| {
            w.replace(
                "--python_out=.",
                &format!("--python_out={}", dir.path().display()),
            )
        })
        .map(|w| {
            w.replace(
                "--grpc_python_out=.",
                &format!("--grpc_python_out={}", dir.path().display()),
            )
        })
        .collect();
    assert_eq!(words[0], "python", "{sh}");
    let generated = Command::new(python())
        .args(&words[1..])
        .current_dir(root())
        .status()
        .unwrap();
    assert!(generated.success());
    let script = py.replace("127.0.0.1:50051", &addr.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .args(["-c", &script])
            .current_dir(dir.path())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let page = support::history_of(server.http(), "lobby").await;
    assert!(page.iter().any(|(i, _)| *i == id), "{id} in {page:?}");
}

/// A gRPC call over raw HTTP/2 (the h2 crate), for what generated clients never send: a
/// deadline the client does not enforce itself, an oversized message, a bad header. Returns
/// the response's message count and its `grpc-status` (from the trailers, or the headers of a
/// trailers-only answer).
async fn raw_call(
    addr: SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
    message: &[u8],
) -> (usize, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut request =
        axum::http::Request::post(format!("http://{addr}/switchboard.v1.Switchboard/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut send) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    send.reserve_capacity(framed.len());
    send.send_data(framed.into(), true).unwrap();
    let response = tokio::time::timeout(TIMEOUT, response)
        .await
        .expect("an answer in time")
        .unwrap();
    let (parts, mut body) = response.into_parts();
    if let Some(status) = parts.headers.get("grpc-status") {
        return (0, status.to_str().unwrap().to_owned());
    }
    let mut bytes = 0;
    for _ in 0..100_000 {
        match tokio::time::timeout(TIMEOUT, body.data())
            .await
            .expect("data in time")
        {
            Some(Ok(chunk)) => {
                bytes += chunk.len();
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            Some(Err(e)) => panic!("stream failed: {e}"),
            None => break,
        }
    }
    let trailers = tokio::time::timeout(TIMEOUT, body.trailers())
        .await
        .expect("trailers in time")
        .unwrap()
        .expect("trailers");
    (bytes, trailers["grpc-status"].to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_enforces_deadlines_and_limits_itself() {
    use prost::Message as _;
    use switchboard::grpc::pb;
    let server = start_with(test_config()).await;
    let addr = grpc(&server);
    // A client that never cancels: the stream still ends at its grpc-timeout, as
    // DEADLINE_EXCEEDED (4), after the welcome and the joined events.
    let subscribe = pb::SubscribeRequest {
        rooms: vec!["lobby".into()],
        ..Default::default()
    }
    .encode_to_vec();
    let started = Instant::now();
    let (bytes, status) =
        raw_call(addr, "Subscribe", &[("grpc-timeout", "700m")], &subscribe).await;
    assert_eq!(status, "4");
    assert!(bytes > 0, "events before the deadline");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < TIMEOUT,
        "{took:?}"
    );
    // A malformed timeout is INVALID_ARGUMENT (3).
    let (_, status) = raw_call(addr, "Subscribe", &[("grpc-timeout", "soon")], &subscribe).await;
    assert_eq!(status, "3");
    // A message over the limit is refused before it is read: OUT_OF_RANGE (11), tonic's code.
    let big = pb::PublishRequest {
        room: "lobby".into(),
        text: "x".repeat(Config::default().ws_max_message + 2048),
        key: String::new(),
    }
    .encode_to_vec();
    let (_, status) = raw_call(addr, "Publish", &[], &big).await;
    assert_eq!(status, "11");
    // Bytes that are not a PublishRequest: INTERNAL (13), and the server carries on.
    let (_, status) = raw_call(addr, "Publish", &[], b"\xff\xff\xff\xff").await;
    assert_eq!(status, "13");
    let ok = pb::PublishRequest {
        room: "lobby".into(),
        text: "still here".into(),
        key: String::new(),
    }
    .encode_to_vec();
    let (bytes, status) = raw_call(addr, "Publish", &[], &ok).await;
    assert_eq!((status.as_str(), bytes > 0), ("0", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_speaks_tls_with_the_servers_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let server = start_with(Config {
        tls: Some((cert_path.clone(), key_path)),
        ..test_config()
    })
    .await;
    let addr = grpc(&server);
    let ca = cert_path.to_str().unwrap();
    let reply = call_async(addr, &["publish", "lobby", "over tls"], &[("SB_CA", ca)]).await;
    assert!(reply["id"].is_string(), "{reply}");
    let health = call_async(addr, &["health"], &[("SB_CA", ca)]).await;
    assert_eq!(health["status"], "SERVING");
    // Plain HTTP/2 to the TLS listener gets nowhere.
    let plain = call_async(addr, &["publish", "lobby", "x"], &[("SB_TIMEOUT", "3")]).await;
    assert_eq!(plain["status"], "UNAVAILABLE", "{plain}");
}
