//! Running out of file descriptors, on the real binary under `ulimit -n`: idle sockets from
//! one address cannot take every descriptor, other clients still get in on every listener,
//! and the server recovers when the flood ends.

mod support;

use std::time::Duration;

use support::{Line, TIMEOUT, addr_of, spawn_with_nofile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_from_one_address_cannot_starve_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.toml");
    std::fs::write(&config, "[limits]\nhttp_header_timeout_secs = 2\n").unwrap();
    // 256 descriptors: 192 for sockets after the reserve, at most 96 from one address.
    let (_server, addrs) = spawn_with_nofile(
        256,
        &[
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
            "127.0.0.1:0",
            "--store",
            "memory",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let (tcp, http) = (addr_of(&addrs, "tcp"), addr_of(&addrs, "http"));
    // 400 idle sockets from 127.0.0.1, half to each listener, far past the process limit.
    let mut idle = Vec::new();
    let mut refused = 0;
    for i in 0..400 {
        let target = if i % 2 == 0 { http } else { tcp };
        let Ok(Ok(mut s)) =
            tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(target)).await
        else {
            continue;
        };
        if target == http {
            let _ = s.write_all(b"GET / HTTP/1.1\r\n").await;
        }
        idle.push(s);
    }
    // Those over the per-address budget are answered and closed at once, not left hanging.
    for s in idle.iter_mut() {
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.contains("too many connections from your address")
                || text.contains("too_many_from_address")
            {
                refused += 1;
            }
        }
    }
    assert!(refused >= 150, "refused {refused} of 400");
    // Another address still gets the TCP welcome and an HTTP answer.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = tokio::time::timeout(TIMEOUT, other.connect(tcp))
        .await
        .unwrap()
        .unwrap();
    let mut chat = Line::from_stream(stream);
    let welcome = chat.line().await;
    assert!(welcome.starts_with("* welcome"), "{welcome}");
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let health = client
        .get(format!("http://{http}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // The idle HTTP sockets time out (2 s), which frees the first address's places.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let health = support::http_client()
        .get(format!("http://{http}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    drop(idle);
}
