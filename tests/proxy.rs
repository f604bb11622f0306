//! Behind a real reverse proxy: Debian's nginx, started by the test, in front of the HTTP API
//! (`X-Forwarded-For`) and of the TCP chat (the stream module with `proxy_protocol on`).
//! Clients reach nginx from their own loopback addresses (127.0.0.2, .3, …), so the server
//! sees one peer (nginx, 127.0.0.1, trusted) and must name each client by what nginx says:
//! limits are per client, the connection list shows the client, and a client that forges
//! `X-Forwarded-For` directly is not believed.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{TIMEOUT, start_with, test_config};
use switchboard::Config;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const KEY: &str = "proxy-test-api-key-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx in the foreground, one process (`master_process off`), with its own prefix; killed
/// on drop.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The ports nginx listens on in front of each listener.
struct Fronts {
    http: u16,
    tcp: u16,
    mqtt: u16,
    grpc: u16,
}

fn nginx(dir: &Path, server: &support::TestServer, grpc: SocketAddr) -> (Nginx, Fronts) {
    let (http, tcp, mqtt) = (server.http(), server.tcp(), server.mqtt());
    let (front_http, front_tcp) = (free_port(), free_port());
    let (front_mqtt, front_grpc) = (free_port(), free_port());
    let stream_module = ["/usr/lib/nginx/modules/ngx_stream_module.so"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .map(|p| format!("load_module {p};"))
        .unwrap_or_default();
    let d = dir.display();
    let conf = format!(
        r#"{stream_module}
daemon off;
# One process, so that killing it leaves no worker behind holding its ports.
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen 127.0.0.1:{front_http};
    location / {{
      proxy_pass http://{http};
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
    }}
  }}
}}
stream {{
  server {{
    listen 127.0.0.1:{front_tcp};
    proxy_pass {tcp};
    proxy_protocol on;
  }}
  server {{
    listen 127.0.0.1:{front_mqtt};
    proxy_pass {mqtt};
    proxy_protocol on;
  }}
  server {{
    listen 127.0.0.1:{front_grpc};
    proxy_pass {grpc};
    proxy_protocol on;
  }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nginx runs (Debian package nginx)");
    let nginx = Nginx(child);
    let deadline = Instant::now() + TIMEOUT;
    for port in [front_http, front_tcp, front_mqtt, front_grpc] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "nginx did not start: {log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    (
        nginx,
        Fronts {
            http: front_http,
            tcp: front_tcp,
            mqtt: front_mqtt,
            grpc: front_grpc,
        },
    )
}

/// An HTTP client whose connections leave from `ip`.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .timeout(TIMEOUT)
        .build()
        .unwrap()
}

async fn post(client: &reqwest::Client, base: &str, text: &str, forged: Option<&str>) -> u16 {
    let mut req = client
        .post(format!("{base}/rooms/px/messages"))
        .body(text.to_owned());
    if let Some(forged) = forged {
        req = req.header("x-forwarded-for", forged);
    }
    req.send().await.unwrap().status().as_u16()
}

/// The addresses the server shows for `transport` connections.
async fn connection_addrs(http: SocketAddr, transport: &str) -> Vec<String> {
    let v: Value = support::http_client()
        .get(format!("http://{http}/admin/connections"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["transport"] == transport)
        .filter_map(|c| c["addr"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_each_client_is_itself() {
    let mut config = Config {
        publish_rate: 0.5,
        publish_burst: 1.0,
        trusted_proxies: switchboard::auth::proxies::TrustedProxies::new(vec![
            "127.0.0.1/32".parse().unwrap(),
        ]),
        proxy_protocol: true,
        ..test_config()
    };
    config.auth.api_keys = vec![KEY.into()];
    let grpc_port = free_port();
    config.grpc = Some(SocketAddr::from(([127, 0, 0, 1], grpc_port)));
    let server = start_with(config).await;
    let dir = tempfile::tempdir().unwrap();
    let grpc = SocketAddr::from(([127, 0, 0, 1], grpc_port));
    let (_nginx, fronts) = nginx(dir.path(), &server, grpc);
    let (front_http, front_tcp) = (fronts.http, fronts.tcp);
    let front = format!("http://127.0.0.1:{front_http}");

    // Two clients behind the one proxy: a bucket each (burst 1), not one for everyone.
    let (two, three) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    assert_eq!(post(&two, &front, "from .2", None).await, 201);
    assert_eq!(post(&three, &front, "from .3", None).await, 201);
    assert_eq!(post(&two, &front, "again from .2", None).await, 429);

    // A client's own X-Forwarded-For, sent straight to the server, is not believed: the
    // bucket it used is its own (127.0.0.4's), not the one it named (127.0.0.9's).
    let direct = format!("http://{}", server.http());
    let four = client_from("127.0.0.4");
    assert_eq!(post(&four, &direct, "forged", Some("127.0.0.9")).await, 201);
    assert_eq!(
        post(&client_from("127.0.0.9"), &front, "real .9", None).await,
        201
    );
    // nginx appends to a forged header: the rightmost hop it adds is still the client.
    let five = client_from("127.0.0.5");
    assert_eq!(
        post(&five, &front, "forged via nginx", Some("127.0.0.3")).await,
        201
    );

    // The connection list shows the client behind nginx, on SSE and on the TCP chat.
    let sse = client_from("127.0.0.6")
        .get(format!("{front}/events?room=px"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.7:0".parse().unwrap()).unwrap();
    let stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], front_tcp)))
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let welcome = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(welcome.starts_with("* welcome"), "{welcome}");
    write.write_all(b"/join px\n").await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let sse_addrs = connection_addrs(server.http(), "sse").await;
        let tcp_addrs = connection_addrs(server.http(), "tcp").await;
        let seen = sse_addrs.iter().any(|a| a.starts_with("127.0.0.6:"))
            && tcp_addrs.iter().any(|a| a.starts_with("127.0.0.7:"));
        if seen {
            assert!(
                !sse_addrs
                    .iter()
                    .chain(&tcp_addrs)
                    .any(|a| a.starts_with("127.0.0.1:")),
                "the proxy's own address shown: {sse_addrs:?} {tcp_addrs:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "clients not named: sse {sse_addrs:?}, tcp {tcp_addrs:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(sse);

    // MQTT and gRPC through nginx's PROXY header: without reading it first, the server would
    // take "PROXY TCP4 …" for the client's first bytes and drop the connection.
    let mut sub = std::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &fronts.mqtt.to_string(),
            "-t",
            "px/mqtt",
            "-C",
            "1",
        ])
        .args(["-W", "10"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs");
    let deadline = Instant::now() + TIMEOUT;
    while connection_addrs(server.http(), "mqtt").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the MQTT subscriber never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let published = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &fronts.mqtt.to_string(),
            "-t",
            "px/mqtt",
            "-m",
            "via nginx",
        ])
        .status()
        .unwrap();
    assert!(published.success());
    let out = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(sub.stdout.as_mut().unwrap(), &mut text).unwrap();
        let _ = sub.wait();
        text
    })
    .await
    .unwrap();
    assert_eq!(out.trim(), "via nginx");
    assert_eq!(
        grpc_health(fronts.grpc).await,
        "0",
        "grpc-status through nginx"
    );
    server.stop().await;
}

/// A gRPC health check over h2c to `port`: the `grpc-status` the server answered.
async fn grpc_health(port: u16) -> String {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = axum::http::Request::post(format!(
        "http://127.0.0.1:{port}/grpc.health.v1.Health/Check"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    // An empty HealthCheckRequest: no compression, length 0.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let response = tokio::time::timeout(TIMEOUT, response)
        .await
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    trailers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned()
}
