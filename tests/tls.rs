//! TLS with a certificate made in the test (rcgen): HTTPS with HTTP/2 by ALPN (curl), SSE over
//! HTTP/2, WSS (a rustls client under tungstenite), TLS on the TCP chat listener (rustls and
//! `switchboard connect tls://`), a certificate reload on SIGHUP that keeps connections, and the
//! Host/Origin guard alike on HTTP/1.1, HTTP/2 over TLS and h2c (the README recipe: tests/readme.rs).

mod support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::{TIMEOUT, addr_of, spawn_logged, start_with, test_config};
use switchboard::Config;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM files.
fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn connector(ca: &Path, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn tls_to(addr: SocketAddr, ca: &Path) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector(ca, &[])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// curl against the server with the test's CA; returns stdout.
fn curl(args: &[&str], ca: &Path, port: u16) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(args)
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // Exit 28 is the deadline a streaming read is given on purpose.
    assert!(
        out.status.success() || out.status.code() == Some(28),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The next line containing `needle`, skipping others; panics after `TIMEOUT`.
async fn line_with<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    needle: &str,
) -> String {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let l = lines.next_line().await.unwrap().expect("connection open");
            if l.contains(needle) {
                return l;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line with {needle:?}"))
}

fn tls_config(cert: PathBuf, key: PathBuf) -> Config {
    Config {
        tls: Some((cert, key)),
        ..test_config()
    }
}

// curl blocks its thread; the server runs on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_speaks_http2_and_sse_streams_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "a");
    let server = start_with(tls_config(cert.clone(), key)).await;
    let port = server.http().port();
    let url = format!("https://localhost:{port}");
    let (version, ca) = (
        curl(
            &[
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version}",
                &format!("{url}/healthz"),
            ],
            &cert,
            port,
        ),
        cert.clone(),
    );
    assert_eq!(version, "2");
    let version = curl(
        &[
            "--http1.1",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            &format!("{url}/healthz"),
        ],
        &ca,
        port,
    );
    assert_eq!(version, "1.1");
    // SSE over HTTP/2: curl reads until its deadline; the stream's first event arrives.
    let stream = tokio::task::spawn_blocking({
        let ca = ca.clone();
        let url = format!("{url}/events?room=h2");
        move || curl(&["--http2", "-N", "--max-time", "2", &url], &ca, port)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let published = curl(
        &[
            "--http2",
            "-X",
            "POST",
            "--data",
            "over h2",
            &format!("{url}/rooms/h2/messages"),
        ],
        &ca,
        port,
    );
    assert!(published.contains("\"id\""), "{published}");
    let events = stream.await.unwrap();
    assert!(
        events.contains("event: joined") && events.contains("over h2"),
        "{events}"
    );
    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    server.stop().await;
}

#[tokio::test]
async fn wss_and_tls_chat_meet_in_one_room() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "b");
    let server = start_with(tls_config(cert.clone(), key)).await;

    let tls = TcpStream::connect(server.http()).await.unwrap();
    let tls = connector(&cert, &[b"http/1.1"])
        .connect(ServerName::try_from("localhost").unwrap(), tls)
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/ws?nick=webby", server.http().port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("wss");

    let chat = tls_to(server.tcp(), &cert).await;
    let (r, mut w) = tokio::io::split(chat);
    let mut lines = BufReader::new(r).lines();
    let welcome = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(welcome.unwrap().starts_with("* welcome"));
    w.write_all(b"hello over tls\n").await.unwrap();
    let got = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await
                && t.contains("hello over tls")
            {
                return t.to_string();
            }
        }
    })
    .await
    .unwrap();
    assert!(got.ends_with(": hello over tls"), "{got}");
    ws.send(Message::text("and back")).await.unwrap();
    let line = line_with(&mut lines, "and back").await;
    assert_eq!(line, "webby: and back");

    // A client that connects and never says hello does not hold up the next one.
    let _silent = TcpStream::connect(server.tcp()).await.unwrap();
    let _second = tls_to(server.tcp(), &cert).await;
    server.stop().await;
}

#[tokio::test]
async fn connect_tls_and_a_sighup_reload_keep_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "live");
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let (server, addrs) = spawn_logged(&[
        "serve",
        "--mqtt",
        "off",
        "--grpc",
        "off",
        "--store",
        "memory",
        "--udp",
        "off",
        "--tcp",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--tls-cert",
        cert_s,
        "--tls-key",
        key_s,
    ]);
    let tcp = addr_of(&addrs, "tcp");
    assert_eq!(addr_of(&addrs, "https").ip(), tcp.ip());

    // `switchboard connect tls://` with the test's CA.
    let mut client = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "connect",
            &format!("tls://localhost:{}", tcp.port()),
            "--tls-ca",
            cert_s,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = client.stdout.take().unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = seen_tx.send(line);
        }
    });
    // The CLI is connected (its welcome came) before the certificate changes: otherwise
    // its handshake could meet the new certificate with the old one as its CA, and fail.
    let welcome = tokio::time::timeout(TIMEOUT, seen.recv()).await.unwrap();
    assert!(welcome.is_some_and(|l| l.starts_with("* welcome")));
    let old = tls_to(tcp, &cert).await;
    let (r, mut old_w) = tokio::io::split(old);
    let mut old_lines = BufReader::new(r).lines();
    old_lines.next_line().await.unwrap();

    // New certificate files, then SIGHUP: new handshakes need the new one.
    let (new_cert, new_key) = make_cert(dir.path(), "next");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let pid = server.take();
    let hup = Command::new("kill")
        .args(["-HUP", &pid.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let tcp_stream = TcpStream::connect(tcp).await.unwrap();
        let with_new = connector(&new_cert, &[])
            .connect(ServerName::try_from("localhost").unwrap(), tcp_stream)
            .await;
        if with_new.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "reload not seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection made before the reload still works, and meets the CLI client.
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"from the cli\n").unwrap();
    let line = line_with(&mut old_lines, "from the cli").await;
    assert!(line.ends_with(": from the cli"), "{line}");
    old_w.write_all(b"before and after\n").await.unwrap();
    let shown = tokio::time::timeout(TIMEOUT, async {
        let mut all = Vec::new();
        while let Some(l) = seen.recv().await {
            let done = l.contains("before and after");
            all.push(l);
            if done {
                return all;
            }
        }
        panic!("cli output ended: {all:?}");
    })
    .await
    .expect("the cli prints the other connection's line");
    assert!(
        shown
            .last()
            .is_some_and(|l| l.ends_with(": before and after")),
        "{shown:?}"
    );
    drop(stdin);
    let _ = tokio::task::spawn_blocking(move || client.wait()).await;
    let mut pid = pid;
    let _ = pid.kill();
    let _ = pid.wait();
}

#[tokio::test]
async fn connect_wss_chats_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "c");
    let server = start_with(tls_config(cert.clone(), key)).await;
    let chat = tls_to(server.tcp(), &cert).await;
    let (r, _w) = tokio::io::split(chat);
    let mut lines = BufReader::new(r).lines();
    lines.next_line().await.unwrap();
    let url = format!("wss://localhost:{}/ws?nick=clippy", server.http().port());
    let mut client = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["connect", &url, "--tls-ca", cert.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"hi from wss\n").unwrap();
    let line = line_with(&mut lines, "hi from wss").await;
    assert_eq!(line, "clippy: hi from wss");
    drop(stdin);
    let _ = tokio::task::spawn_blocking(move || client.wait()).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mqtt_speaks_tls_when_the_server_has_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "mqtt");
    let server = start_with(tls_config(cert.clone(), key)).await;
    let port = server.mqtt().port().to_string();
    // A mosquitto client over TLS to the server, trusting the test's certificate.
    let mosquitto = |tool: &str| {
        let mut command = Command::new("timeout");
        command
            .args(["10", tool, "-h", "localhost", "-p", &port, "--cafile"])
            .arg(&cert)
            .args(["-t", "secure/room"]);
        command
    };
    let mut sub = mosquitto("mosquitto_sub")
        .args(["-C", "1", "-v"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Publish until the subscriber (which connects on its own time) has one.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let out = mosquitto("mosquitto_pub")
            .args(["-m", "sealed"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if sub.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriber got nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = sub.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "secure/room sealed\n");
    // Plain MQTT on the TLS listener gets nowhere.
    let plain = Command::new("timeout")
        .args([
            "5",
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "x",
            "-m",
            "y",
        ])
        .output()
        .unwrap();
    assert!(!plain.status.success());
}

/// `curl -w '%{http_code} %{http_version}'`: the status and the HTTP version it was sent over.
fn status_over(args: &[&str], ca: &Path, port: u16) -> String {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code} %{http_version}"];
    all.extend_from_slice(args);
    curl(&all, ca, port)
}

/// The Host and Origin policies read one authority on every HTTP version: HTTP/2 sends none
/// in `Host` (curl turns `-H 'Host: …'` into `:authority`), so a guard that read only `Host`
/// let a rebinding name through over h2 and h2c and refused the page's own origin over h2.
// curl blocks its thread; the server runs on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_and_origin_guard_is_the_same_on_h1_h2_and_h2c() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "a");
    let allowed_hosts = vec!["chat.test".to_owned()];
    let tls = start_with(Config {
        allowed_hosts: allowed_hosts.clone(),
        ..tls_config(cert.clone(), key)
    })
    .await;
    let plain = start_with(Config {
        allowed_hosts,
        ..test_config()
    })
    .await;
    let (tls_port, plain_port) = (tls.http().port(), plain.http().port());
    let https = format!("https://localhost:{tls_port}");
    let http = format!("http://127.0.0.1:{plain_port}");
    let versions: [(&str, &str, u16, &str); 3] = [
        ("--http1.1", &http, plain_port, "1.1"),
        ("--http2-prior-knowledge", &http, plain_port, "2"),
        ("--http2", &https, tls_port, "2"),
    ];
    for (flag, base, port, version) in versions {
        let rebinding = status_over(
            &[flag, "-H", "Host: evil.example", &format!("{base}/healthz")],
            &cert,
            port,
        );
        assert_eq!(rebinding, format!("421 {version}"), "{flag}: evil.example");
        let own = status_over(&[flag, &format!("{base}/healthz")], &cert, port);
        assert_eq!(own, format!("200 {version}"), "{flag}: its own name");
        // A page served from the server's own (non-loopback) name posts to it.
        let origin = if port == tls_port {
            format!("https://chat.test:{port}")
        } else {
            format!("http://chat.test:{port}")
        };
        let posted = status_over(
            &[
                flag,
                "-H",
                &format!("Host: chat.test:{port}"),
                "-H",
                &format!("Origin: {origin}"),
                "--data",
                "same origin",
                &format!("{base}/rooms/guard/messages"),
            ],
            &cert,
            port,
        );
        assert_eq!(posted, format!("201 {version}"), "{flag}: same-origin POST");
        let cross = status_over(
            &[
                flag,
                "-H",
                &format!("Host: chat.test:{port}"),
                "-H",
                "Origin: https://evil.example",
                "--data",
                "cross site",
                &format!("{base}/rooms/guard/messages"),
            ],
            &cert,
            port,
        );
        assert_eq!(cross, format!("403 {version}"), "{flag}: cross-site POST");
    }
    tls.stop().await;
    plain.stop().await;
}

/// A refused POST with a body gets its JSON answer: the answer waits for the body, so curl
/// over HTTP/2 (TLS and h2c) no longer reports `(92) Stream error in the HTTP/2 framing layer`
/// for the 401 it was sent before the body was read.
// curl blocks its thread; the server runs on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_posts_with_bodies_get_their_json_over_http2() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "a");
    let closed = switchboard::auth::AuthConfig {
        secrets: vec!["a-secret-of-thirty-two-bytes-0123456789".into()],
        ..Default::default()
    };
    let tls = start_with(Config {
        auth: closed.clone(),
        ..tls_config(cert.clone(), key)
    })
    .await;
    let plain = start_with(Config {
        auth: closed,
        ..test_config()
    })
    .await;
    let body = dir.path().join("body.txt");
    std::fs::write(&body, "x".repeat(48 * 1024)).unwrap();
    let data = format!("@{}", body.display());
    let urls = [
        (
            "--http2",
            format!(
                "https://localhost:{}/rooms/closed/messages",
                tls.http().port()
            ),
            tls.http().port(),
        ),
        (
            "--http2-prior-knowledge",
            format!(
                "http://127.0.0.1:{}/rooms/closed/messages",
                plain.http().port()
            ),
            plain.http().port(),
        ),
        (
            "--http1.1",
            format!(
                "http://127.0.0.1:{}/rooms/closed/messages",
                plain.http().port()
            ),
            plain.http().port(),
        ),
    ];
    for (flag, url, port) in urls {
        for _ in 0..5 {
            let out = curl(
                &[flag, "-w", "\n%{http_code}", "--data-binary", &data, &url],
                &cert,
                port,
            );
            assert!(out.ends_with("\n401"), "{flag}: {out}");
            assert!(out.contains("\"code\":\"unauthorized\""), "{flag}: {out}");
        }
    }
    tls.stop().await;
    plain.stop().await;
}

/// `connect --tls-server-name`: a certificate that names only `chat.test` verifies when the
/// server is reached by address and the name is given; without it the handshake fails and
/// says so, once.
#[test]
fn connect_checks_the_name_given_by_tls_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["chat.test".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("named.pem"), dir.path().join("named.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(start_with(tls_config(cert_path.clone(), key_path)));
    let url = format!("tls://127.0.0.1:{}", server.tcp().port());
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["connect", &url, "--tls-ca", cert_path.to_str().unwrap()])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = run(&["--tls-server-name", "chat.test"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("* welcome"), "{stdout}");
    let (ok, _, stderr) = run(&[]);
    assert!(!ok);
    assert!(stderr.contains("handshake with 127.0.0.1"), "{stderr}");
    runtime.block_on(server.stop());
}
