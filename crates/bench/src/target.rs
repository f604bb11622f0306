//! Targets: parsing the URL, and opening one connection (WebSocket, TCP or SSE).

use super::*;

pub(super) type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// An SSE response body, parsed into events.
pub(super) type SseEvents = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// One load-generator connection.
pub(super) enum Conn {
    Ws(Box<Ws>),
    Tcp(TcpStream),
    Sse(SseEvents),
    /// rumqttc's client: its handle publishes, its event loop (polled by the receiver)
    /// does the IO.
    Mqtt(rumqttc::AsyncClient, Box<rumqttc::EventLoop>, String),
    /// A `Chat` stream: frames go out through the sender, events come back on the stream.
    Grpc(
        tokio::sync::mpsc::Sender<pb::ClientFrame>,
        tonic::Streaming<pb::Event>,
    ),
}

/// The client generated from the server's .proto (`build.rs`).
#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic
)]
pub(super) mod pb {
    tonic::include_proto!("switchboard.v1");
}

/// Which protocol the URL speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire {
    Ws,
    Tcp,
    Sse,
    Mqtt,
    Grpc,
}

/// What the URL names.
pub(super) struct Target {
    pub(super) wire: Wire,
    pub(super) addr: SocketAddr,
    /// SSE: where publishers POST.
    pub(super) publish_url: Option<String>,
}

pub(super) fn parse_target(url: &str) -> Result<Target, BenchError> {
    let usage = || {
        BenchError::Usage(format!(
            "{url}: expected ws://HOST:PORT/PATH, tcp://HOST:PORT[/ROOM], \
             http://HOST:PORT/events?room=ROOM, mqtt://HOST:PORT/TOPIC or grpc://HOST:PORT[/ROOM]"
        ))
    };
    let (wire, rest) = if let Some(rest) = url.strip_prefix("ws://") {
        (Wire::Ws, rest)
    } else if let Some(rest) = url.strip_prefix("tcp://") {
        (Wire::Tcp, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (Wire::Sse, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (Wire::Mqtt, rest)
    } else if let Some(rest) = url.strip_prefix("grpc://") {
        (Wire::Grpc, rest)
    } else {
        return Err(usage());
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    use std::net::ToSocketAddrs;
    let addr = host
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| BenchError::Usage(format!("cannot resolve {host}")))?;
    let publish_url = match wire {
        Wire::Sse => {
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            if path != "events" {
                return Err(usage());
            }
            let room = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("room="))
                .filter(|r| !r.is_empty())
                .unwrap_or(DEFAULT_ROOM);
            Some(format!("http://{host}/rooms/{room}/messages"))
        }
        _ => None,
    };
    Ok(Target {
        wire,
        addr,
        publish_url,
    })
}

/// Opens one SSE stream and waits for its `joined` event, so the listener is in the room
/// before anyone publishes.
pub(super) async fn connect_sse(client: &reqwest::Client, url: &str) -> Result<Conn, String> {
    use eventsource_stream::Eventsource;
    let res = client
        .get(url)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !res.status().is_success() {
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        return Err(format!("GET {url}: {status} {}", body.trim()));
    }
    let mut events: SseEvents = Box::pin(res.bytes_stream().eventsource());
    match events.next().await {
        Some(Ok(event)) if event.event == "joined" => Ok(Conn::Sse(events)),
        Some(Ok(event)) => Err(format!(
            "expected a `joined` event first, got `{}`",
            event.event
        )),
        Some(Err(e)) => Err(format!("reading {url}: {e}")),
        None => Err(format!("{url} ended before the `joined` event")),
    }
}

pub(super) async fn connect(
    url: &str,
    target: SocketAddr,
    source: Option<IpAddr>,
) -> Result<Conn, String> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| e.to_string())?;
    if let Some(ip) = source {
        // A plain bind to port 0 reserves a port by the local address alone, searching every
        // port in use (and in TIME_WAIT from earlier runs): perf showed the kernel's
        // `inet_csk_get_port` taking most of the machine, and 19,000 connections took 20-35 s
        // to open. IP_BIND_ADDRESS_NO_PORT leaves the port to `connect`, which only needs
        // the whole 4-tuple to be unique.
        #[cfg(target_os = "linux")]
        let _ = nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        );
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let stream = socket
        .connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    if let Some(rest) = url.strip_prefix("tcp://") {
        let mut stream = stream;
        if let Some((_, room)) = rest.split_once('/').filter(|(_, r)| !r.is_empty()) {
            stream
                .write_all(format!("/join {room}\n").as_bytes())
                .await
                .map_err(|e| format!("join: {e}"))?;
        }
        return Ok(Conn::Tcp(stream));
    }
    // tungstenite's default 128 KiB read buffer is zero-filled on every read; with a
    // thousand connections on a shared machine that memset would be the generator's main cost.
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(handshake_error)?;
    Ok(Conn::Ws(Box::new(ws)))
}

/// A refused handshake with the server's reason: switchboard answers every refusal with
/// `{"error": why, "code": …}`, which says more than the status line.
fn handshake_error(e: tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    if let Error::Http(res) = &e {
        let why = res
            .body()
            .as_deref()
            .and_then(|body| serde_json::from_slice::<serde_json::Value>(body).ok())
            .and_then(|v| v["error"].as_str().map(str::to_owned));
        if let Some(why) = why {
            return format!("handshake: {}: {why}", res.status());
        }
    }
    format!("handshake: {e}")
}

/// Opens one MQTT 3.1.1 connection and subscribes it (QoS 0) to the URL's topic, waiting for
/// the SUBACK so that it is subscribed before anyone publishes.
pub(super) async fn connect_mqtt(url: &str, target: SocketAddr, n: usize) -> Result<Conn, String> {
    use rumqttc::{Event, MqttOptions, Packet, QoS};
    let topic = url
        .strip_prefix("mqtt://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, topic)| topic)
        .filter(|t| !t.is_empty())
        .unwrap_or("bench")
        .to_owned();
    let mut options = MqttOptions::new(
        format!("bench-{}-{n}", std::process::id()),
        target.ip().to_string(),
        target.port(),
    );
    options.set_keep_alive(Duration::from_secs(60));
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(options, 1024);
    client
        .subscribe(&topic, QoS::AtMostOnce)
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                return Ok(Conn::Mqtt(client, Box::new(events), topic));
            }
            Ok(_) => {}
            Err(e) => return Err(format!("mqtt: {e}")),
        }
    }
}

/// Opens one gRPC `Chat` stream on a connection of its own and joins the URL's room, waiting
/// for the `KIND_JOINED` answer so that it is in the room before anyone publishes.
pub(super) async fn connect_grpc(url: &str, target: SocketAddr) -> Result<Conn, String> {
    use pb::client_frame::{Frame, Join};
    let room = url
        .strip_prefix("grpc://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, room)| room)
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_ROOM)
        .to_owned();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| format!("grpc endpoint: {e}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("grpc connect: {e}"))?;
    let mut client = pb::switchboard_client::SwitchboardClient::new(channel);
    let (frames, outgoing) = tokio::sync::mpsc::channel(1024);
    frames
        .send(pb::ClientFrame {
            r#ref: "join".into(),
            frame: Some(Frame::Join(Join {
                room,
                since: String::new(),
            })),
        })
        .await
        .map_err(|_| "grpc: the stream closed".to_owned())?;
    let outgoing = futures_util::stream::unfold(outgoing, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    });
    let mut events = client
        .chat(outgoing)
        .await
        .map_err(|status| format!("grpc chat: {status}"))?
        .into_inner();
    for _ in 0..1000 {
        match events.message().await {
            Ok(Some(event)) if event.kind == pb::event::Kind::Joined as i32 => {
                return Ok(Conn::Grpc(frames, events));
            }
            Ok(Some(event)) if event.kind == pb::event::Kind::Error as i32 => {
                return Err(format!("grpc join refused: {}", event.text));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("grpc: the stream ended before joining".into()),
            Err(status) => return Err(format!("grpc: {status}")),
        }
    }
    Err("grpc: no answer to the join".into())
}
