//! The real binary: `connect` driven through stdin, `serve`/`echo-server` flags, signals, and
//! the seed's own Python clients run unchanged (only their port is pointed at the test server).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Line, SERVE_HTTP_ONLY, addr_of, spawn_logged, start_echo, start_server};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Runs `switchboard connect URL` with `input` on stdin; returns (stdout, stderr).
async fn connect(url: String, input: &'static str) -> (String, String) {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(["connect", &url, "--linger-ms", "300"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = wait_output(child, Duration::from_secs(10));
        (out.0, out.1)
    })
    .await
    .unwrap()
}

/// Waits for a child with a deadline, killing it if it overruns.
fn wait_output(mut child: Child, limit: Duration) -> (String, String, Option<i32>) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            use std::io::Read;
            child.stdout.take().map(|mut s| s.read_to_string(&mut out));
            child.stderr.take().map(|mut s| s.read_to_string(&mut err));
            return (out, err, status.code());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a child and returns what it printed.
/// Runs the binary with `args` to its end (10 s at most): stdout, stderr, exit code.
fn run_to_end(args: &[&str]) -> (String, String, Option<i32>) {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(10))
}

fn kill_output(mut child: Child) -> String {
    let _ = child.kill();
    let (out, _, _) = wait_output(child, Duration::from_secs(10));
    out
}

#[tokio::test]
async fn connect_relays_stdin_to_tcp_echo_without_prompts() {
    let server = start_echo().await;
    let (out, err) = connect(
        format!("tcp://{}", server.tcp()),
        "hello\nпривіт\nexit\nnot sent\n",
    )
    .await;
    assert_eq!(out, "hello\nпривіт\n");
    assert!(!err.contains("connected to"), "no prompt when piped: {err}");
}

#[tokio::test]
async fn connect_relays_stdin_to_udp() {
    let server = start_echo().await;
    let (out, _) = connect(format!("udp://{}", server.udp()), "ping\n").await;
    assert_eq!(out, "ping\n");
}

#[tokio::test]
async fn connect_chats_over_tcp() {
    let server = start_server().await;
    let (mut watcher, _) = Line::connect(server.tcp()).await;
    let (out, _) = connect(
        format!("tcp://{}", server.tcp()),
        "/nick scripted\nhi all\n",
    )
    .await;
    watcher
        .line_where(|l| l.ends_with("is now known as scripted"))
        .await;
    assert_eq!(watcher.line().await, "scripted: hi all");
    assert!(out.starts_with("* welcome guest-"), "{out}");
    assert!(out.contains("* you are now scripted\n"), "{out}");
}

#[tokio::test]
async fn connect_refuses_unknown_schemes_clearly() {
    let (_, err) = connect("gopher://127.0.0.1:1".into(), "").await;
    assert!(err.contains("unsupported URL"), "{err}");
}

/// Runs a seed Python client with its `PORT = 12345` pointed at `port`.
fn seed_python(script: &str, port: u16) -> Child {
    let source = std::fs::read_to_string(format!(
        "{}/tests/seed/{script}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert!(source.contains("PORT = 12345"));
    let source = source.replace("PORT = 12345", &format!("PORT = {port}"));
    Command::new("python3")
        // Unbuffered, so output is readable even when the client has to be killed.
        .args(["-u", "-c", &source])
        .env("PYTHONIOENCODING", "utf-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is installed by scripts/test.sh")
}

#[test]
fn seed_echo_client_works_against_echo_server_binary() {
    let (mut server, addrs) =
        spawn_logged(&["echo-server", "--tcp", "127.0.0.1:0", "--udp", "off"]);
    let port = addr_of(&addrs, "tcp").port();
    let mut client = seed_python("echo_client.py", port);
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all("hello seed\nпривіт\n".as_bytes()).unwrap();
    // The seed's client does one recv per message; give each its own round trip.
    std::thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"exit\n").unwrap();
    drop(stdin);
    let (out, err, code) = wait_output(client, Duration::from_secs(10));
    server.kill();
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Сервер відповів: hello seed"), "{out}");
    assert!(out.contains("Сервер відповів: привіт"), "{out}");
}

#[test]
fn seed_chat_clients_talk_through_serve_binary() {
    let (mut server, addrs) = spawn_logged(&[
        "serve",
        "--mqtt",
        "off",
        "--grpc",
        "off",
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "off",
        "--http",
        "off",
        "--store",
        "memory",
    ]);
    let port = addr_of(&addrs, "tcp").port();
    let mut a = seed_python("chat_client.py", port);
    let mut b = seed_python("chat_client.py", port);
    std::thread::sleep(Duration::from_millis(500));
    let mut a_in = a.stdin.take().unwrap();
    let mut b_in = b.stdin.take().unwrap();
    a_in.write_all("hello from A\n".as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    b_in.write_all("hello from B\n".as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The seed's chat client does not exit on `exit`: its receive thread stays blocked in
    // recv() after close() (the same against the seed's own server), so stop it ourselves.
    drop((a_in, b_in));
    let a_out = kill_output(a);
    let b_out = kill_output(b);
    server.kill();
    assert!(b_out.contains(": hello from A"), "B saw A: {b_out}");
    assert!(a_out.contains(": hello from B"), "A saw B: {a_out}");
    assert!(
        !a_out.contains(": hello from A"),
        "A does not see itself: {a_out}"
    );
}

#[test]
fn sigterm_tells_clients_and_exits_cleanly() {
    let (server, addrs) = spawn_logged(&[
        "serve",
        "--mqtt",
        "off",
        "--grpc",
        "off",
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--store",
        "memory",
    ]);
    let tcp = addr_of(&addrs, "tcp");
    let stream = std::net::TcpStream::connect(tcp).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut welcome = String::new();
    reader.read_line(&mut welcome).unwrap();
    assert!(welcome.starts_with("* welcome"));
    let server = server.take();
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut notice = String::new();
    reader.read_line(&mut notice).unwrap();
    assert_eq!(notice, "* server shutting down\n");
    let (_, _, code) = wait_output(server, Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

#[test]
fn bad_flags_and_config_are_explained() {
    let run = run_to_end;
    let (_, err, code) = run(&["serve", "--tcp", "nonsense"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("HOST:PORT"), "{err}");
    let (_, err, code) = run(&["serve", "--config", "/nonexistent/switchboard.toml"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot read config file"), "{err}");
    let (_, err, code) = run(&[
        "serve",
        "--mqtt",
        "off",
        "--grpc",
        "off",
        "--store",
        "sqlite",
        "--redis",
        "redis://127.0.0.1:1",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("history lives in Redis"), "{err}");
    let (_, err, code) = run(&["serve", "--store", "redis"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("redis needs --redis URL"), "{err}");
    let (_, err, code) = run(&["serve", "--redis", "localhost:6379"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("bad Redis URL"), "{err}");
    // Nothing listens on port 1: a clear refusal at startup, not a server that cannot publish.
    let (_, err, code) = run(&[&SERVE_HTTP_ONLY[..], &["--redis", "redis://127.0.0.1:1"]].concat());
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot reach Redis at redis://127.0.0.1:1"),
        "{err}"
    );
    let (out, _, code) = run(&["serve", "--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("SWITCHBOARD_REDIS"), "{out}");
    assert!(out.contains("SWITCHBOARD_TCP"), "{out}");
    assert!(out.contains("precedence"), "{out}");
}

#[test]
fn seed_fixtures_match_the_seed_document() {
    // The fixtures are copies of the tutorial's clients; when the seed is beside the repository
    // (as in CI), make sure they have not drifted.
    let seed = format!(
        "{}/../shared/seed/000_1b59b5d0ca5dcb4b.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let Ok(doc) = std::fs::read_to_string(&seed) else {
        eprintln!("seed document not found at {seed}; fixture check not run");
        return;
    };
    for fixture in ["echo_client.py", "chat_client.py", "chat.html"] {
        let text = std::fs::read_to_string(format!(
            "{}/tests/seed/{fixture}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert!(doc.contains(&text), "{fixture} is verbatim from the seed");
    }
}

#[tokio::test]
async fn connect_speaks_websocket_to_echo_and_chat() {
    let server = start_server().await;
    let (out, _) = connect(format!("ws://{}/echo", server.http()), "one\ntwo\n").await;
    assert_eq!(out, "one\ntwo\n");
    let (mut watcher, _) = Line::connect(server.tcp()).await;
    let (out, _) = connect(format!("ws://{}/ws?nick=wsbot", server.http()), "hi\n").await;
    watcher.line_where(|l| l == "wsbot: hi").await;
    assert!(
        out.starts_with("* wsbot joined lobby\nwsbot: hi\n"),
        "{out}"
    );
}

#[test]
fn a_second_serve_on_the_same_data_directory_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let serve = [&SERVE_HTTP_ONLY[..], &["--data-dir", data]].concat();
    let (first, _) = spawn_logged(&serve);
    let first = first.take();
    let (_, err, code) = run_to_end(&serve);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is in use by process"), "{err}");
    assert!(err.contains(&first.id().to_string()), "{err}");
    // Once the first is gone, however it went, the directory is free again.
    kill_output(first);
    let (again, addrs) = spawn_logged(&serve);
    assert!(addr_of(&addrs, "http").port() > 0);
    drop(again);
}

/// An error names each cause once, with no library internals: a refused connection is not
/// `Connection refused (os error 111): Connection refused (os error 111)`.
#[test]
fn errors_say_each_cause_once() {
    let (_, err, code) = run_to_end(&["connect", "tcp://127.0.0.1:1"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.matches("refused").count(), 1, "{err}");
    let (_, err, code) =
        run_to_end(&[&SERVE_HTTP_ONLY[..], &["--redis", "redis://127.0.0.1:1"]].concat());
    assert_eq!(code, Some(1));
    assert!(err.matches("refused").count() <= 1, "{err}");
    for line in err.lines().filter(|l| l.starts_with("switchboard:")) {
        let causes: Vec<&str> = line.split(": ").collect();
        for (i, cause) in causes.iter().enumerate() {
            assert!(!causes[i + 1..].contains(cause), "said twice: {line}");
        }
    }
}

/// Ports already taken: every listener is tried first, and each taken one is named with the
/// flag that moves it (not one failure per start, not the OS's words alone).
#[test]
fn taken_ports_are_all_named_with_their_flags() {
    let mqtt = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (mqtt_addr, grpc_addr) = (
        mqtt.local_addr().unwrap().to_string(),
        grpc.local_addr().unwrap().to_string(),
    );
    let (_, err, code) = run_to_end(&[
        "serve",
        "--tcp",
        "off",
        "--udp",
        "off",
        "--http",
        "127.0.0.1:0",
        "--store",
        "memory",
        "--mqtt",
        &mqtt_addr,
        "--grpc",
        &grpc_addr,
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "--mqtt {mqtt_addr} is in use (another program, or another switchboard, listens \
             there): pass --mqtt ADDR or --mqtt off"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("--grpc {grpc_addr} is in use")),
        "{err}"
    );
    assert_eq!(err.matches("in use").count(), 2, "{err}");
}

/// `docs/CONFIG.md` is what the code says every setting is (flags, environment variables,
/// TOML keys, defaults). `UPDATE_CONFIG_DOC=1` writes it again after a flag changes.
#[test]
fn config_reference_is_current() {
    let made = switchboard::cli::config_reference();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md");
    if std::env::var_os("UPDATE_CONFIG_DOC").is_some() {
        std::fs::write(path, &made).unwrap();
    }
    let written = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        written == made,
        "docs/CONFIG.md is not current: run UPDATE_CONFIG_DOC=1 cargo test --test cli config_reference"
    );
}

/// `Config::resolve` over a config file holding `toml`, every listener off.
fn resolve_file(toml: &str) -> Result<switchboard::Config, String> {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, toml).unwrap();
    let cli = switchboard::cli::Cli::try_parse_from([
        "switchboard",
        "serve",
        "--config",
        path.to_str().unwrap(),
    ])
    .unwrap();
    let switchboard::cli::Command::Serve(args) = cli.command else {
        unreachable!()
    };
    switchboard::Config::resolve(&args).map_err(|e| e.to_string())
}

/// Every key the reference names is one the file takes, and every key the file takes is in
/// the reference: the list of keys the file takes is the parser's own, from its answer to a
/// key it does not know.
#[test]
fn the_reference_and_the_config_file_name_the_same_keys() {
    let reference =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md")).unwrap();
    let keys: Vec<String> = reference
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            // Flag rows: | flag | env | key | …; file rows: | key | default | meaning |.
            let key = if l.starts_with("| `--") {
                cells.get(2)?
            } else {
                cells.first()?
            };
            let key = key.trim_start_matches("| ").trim_matches('`');
            (!key.starts_with('[') && key != "—").then(|| key.to_owned())
        })
        .collect();
    assert!(keys.len() > 40, "{keys:?}");
    for key in &keys {
        let toml = match key.split_once('.') {
            Some((table, key)) => format!("[{table}]\n{key} = 0\n"),
            None => format!("{key} = 0\n"),
        };
        if let Err(e) = resolve_file(&toml) {
            assert!(!e.contains("unknown field"), "{key}: {e}");
        }
    }
    for (table, probe) in [
        ("", "not_a_key = 0\n"),
        ("limits.", "[limits]\nnot_a_key = 0\n"),
    ] {
        let e = resolve_file(probe).unwrap_err();
        let known = e
            .split("expected one of")
            .nth(1)
            .unwrap_or_else(|| panic!("{e}"));
        for name in known.split('`').skip(1).step_by(2) {
            if matches!(name, "rooms" | "webhooks" | "limits") {
                continue;
            }
            let key = format!("{table}{name}");
            assert!(
                keys.contains(&key),
                "{key} is taken by the file but not in docs/CONFIG.md"
            );
        }
    }
}

/// Old key names still work, with a warning that names the new one; relative paths in the
/// file are relative to the file.
#[test]
fn old_key_names_work_with_a_warning_and_paths_are_the_files() {
    let config = resolve_file(
        "auth_secrets = [\"old-name-secret-0123456789abcdef0123\"]\n\
         data_dir = \"beside\"\n",
    )
    .unwrap();
    assert_eq!(
        config.auth.secrets,
        ["old-name-secret-0123456789abcdef0123"]
    );
    assert!(config.data_dir.ends_with("beside") && config.data_dir.is_absolute());
    assert!(
        resolve_file("api_keys = [\"a\"]\napi_key = [\"b\"]\n")
            .unwrap_err()
            .contains("both")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.toml");
    std::fs::write(
        &path,
        "auth_secrets = [\"old-name-secret-0123456789abcdef0123\"]\n",
    )
    .unwrap();
    let (out, err, code) = run_to_end(&["token", "--sub", "u", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.trim().split('.').count() == 3, "{out}");
    assert!(err.contains("`auth_secrets` is now `auth_secret`"), "{err}");
}

/// The README's sample config file is one the server takes.
#[test]
fn the_readme_sample_config_is_valid() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```toml\n# switchboard.toml")
        .expect("the sample");
    let sample = &readme[start + 8..];
    let sample = &sample[..sample.find("```").unwrap()];
    let config = resolve_file(sample).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.history_max_messages, 1000);
}

/// The membership caps and the IPv6 prefix are read from `[limits]` and checked.
#[test]
fn membership_caps_and_the_ipv6_prefix_are_settings() {
    let config = resolve_file(
        "[limits]\nrooms_per_connection = 7\nmemberships_per_ip = 70\nipv6_prefix = 48\n",
    )
    .unwrap();
    assert_eq!(config.limits.rooms_per_connection, 7);
    assert_eq!(config.limits.memberships_per_ip, 70);
    assert_eq!(config.limits.ipv6_prefix, 48);
    let e = resolve_file("[limits]\nipv6_prefix = 8\n").unwrap_err();
    assert!(
        e.contains("limits.ipv6_prefix") && e.contains("16 to 128"),
        "{e}"
    );
    let e = resolve_file("[limits]\nrooms_per_connection = 0\n").unwrap_err();
    assert!(e.contains("at least 1"), "{e}");
}
