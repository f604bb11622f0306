//! Traffic: each publisher's paced or windowed sends, and each receiver's count and
//! latency histogram.

use super::*;

/// A publisher's share of `--rate`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    /// This publisher's messages per second.
    pub(super) each: f64,
    /// All publishers' together.
    pub(super) total: f64,
}

/// A publisher's write half.
pub(super) enum Sink {
    Ws(futures_util::stream::SplitSink<Ws, Message>),
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    /// An MQTT client's handle: QoS 0 PUBLISH to the topic.
    Mqtt(rumqttc::AsyncClient, String),
    /// A gRPC `Chat` stream's frames.
    Grpc(tokio::sync::mpsc::Sender<pb::ClientFrame>),
    /// SSE's publishers: `POST` on a keep-alive connection, one request at a time.
    Http {
        client: reqwest::Client,
        url: String,
    },
}

impl Sink {
    async fn send(&mut self, payload: String) -> Result<(), String> {
        match self {
            Sink::Ws(sink) => sink
                .send(Message::text(payload))
                .await
                .map_err(|e| format!("send: {e}")),
            Sink::Tcp(sink) => {
                let mut line = payload.into_bytes();
                line.push(b'\n');
                sink.write_all(&line)
                    .await
                    .map_err(|e| format!("send: {e}"))
            }
            Sink::Mqtt(client, topic) => client
                .publish(topic.as_str(), rumqttc::QoS::AtMostOnce, false, payload)
                .await
                .map_err(|e| format!("publish: {e}")),
            Sink::Grpc(frames) => frames
                .send(pb::ClientFrame {
                    r#ref: String::new(),
                    frame: Some(pb::client_frame::Frame::Publish(
                        pb::client_frame::Publish {
                            room: String::new(),
                            text: payload,
                            key: String::new(),
                        },
                    )),
                })
                .await
                .map_err(|_| "grpc: the stream closed".to_owned()),
            Sink::Http { client, url } => {
                let res = client
                    .post(url.as_str())
                    .header(reqwest::header::CONTENT_TYPE, "text/plain")
                    .body(payload)
                    .send()
                    .await
                    .map_err(|e| format!("POST {url}: {e}"))?;
                if res.status() == reqwest::StatusCode::CREATED {
                    return Ok(());
                }
                let status = res.status();
                let body = res.text().await.unwrap_or_default();
                Err(format!("POST {url}: {status} {}", body.trim()))
            }
        }
    }
}

pub(super) async fn publish(
    mut sink: Sink,
    me: u32,
    shared: Arc<Shared>,
    window: Arc<Semaphore>,
    rate: Option<Pace>,
    size: usize,
) {
    let padding = "x".repeat(size.saturating_sub(40));
    let mut ticker = rate.map(|pace| {
        // Publishers take turns: publisher `me` starts `me / total` seconds in, so the sends
        // are spread evenly instead of every publisher firing at once at the start.
        let first = tokio::time::Instant::now() + Duration::from_secs_f64(me as f64 / pace.total);
        let period = Duration::from_secs_f64(1.0 / pace.each.max(0.001));
        let mut t = tokio::time::interval_at(first, period);
        // A tick that came late is made up at once: the asked rate is what gets sent, as
        // long as the generator can keep up at all (`sent` in the report says so).
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut seq = 0u64;
    while !shared.stop_sending.load(Ordering::Relaxed) {
        match ticker.as_mut() {
            Some(t) => {
                t.tick().await;
            }
            None => match window.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => return,
            },
        }
        let t = shared.now_us();
        let payload = format!("b {me} {seq} {t} {padding}");
        seq += 1;
        if let Err(e) = sink.send(payload).await {
            shared.error(e);
            return;
        }
        shared.attempted.fetch_add(1, Ordering::Relaxed);
        if shared.measured(t) {
            shared.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Keep the write half until the receivers are done: dropping a TCP write half shuts the
    // connection down, and the server would close it before the last deliveries are counted.
    shared.done.cancelled().await;
    drop(sink);
}

/// A receiver's read half.
pub(super) enum Source {
    Ws(futures_util::stream::SplitStream<Ws>),
    Tcp(tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>),
    Sse(SseEvents),
    Mqtt(Box<rumqttc::EventLoop>),
    Grpc(tonic::Streaming<pb::Event>),
}

/// A received message's text, without a copy where the client library allows.
pub(super) enum Text {
    Shared(tokio_tungstenite::tungstenite::Utf8Bytes),
    Owned(String),
}

impl Text {
    fn as_str(&self) -> &str {
        match self {
            Text::Shared(t) => t.as_str(),
            Text::Owned(t) => t,
        }
    }
}

/// The part of an SSE `message` event the generator reads.
#[derive(serde::Deserialize)]
pub(super) struct SseMessage {
    text: String,
}

impl Source {
    /// The next text message or line, or why there is none: the connection ended or failed.
    async fn next(&mut self) -> Option<Result<Text, String>> {
        match self {
            Source::Ws(stream) => loop {
                return match stream.next().await? {
                    // A refusal in plain mode (a publish over the server's per-connection
                    // rate, say): the publisher's window would never refill, so say why.
                    Ok(Message::Text(t)) if t.starts_with("ERR ") => Some(Err(t.to_string())),
                    Ok(Message::Text(t)) => Some(Ok(Text::Shared(t))),
                    Ok(Message::Close(Some(frame))) => Some(Err(format!(
                        "closed by the server: {} {}",
                        u16::from(frame.code),
                        frame.reason
                    ))),
                    Ok(Message::Close(None)) => Some(Err("closed by the server".into())),
                    Err(e) => Some(Err(format!("receive: {e}"))),
                    Ok(_) => continue,
                };
            },
            Source::Tcp(lines) => match lines.next_line().await {
                Ok(Some(line)) if line.starts_with("ERR ") => Some(Err(line)),
                Ok(Some(line)) => Some(Ok(Text::Owned(line))),
                Ok(None) => Some(Err("closed by the server".into())),
                Err(e) => Some(Err(format!("receive: {e}"))),
            },
            Source::Mqtt(events) => loop {
                return match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => Some(Ok(
                        Text::Owned(String::from_utf8_lossy(&p.payload).into_owned()),
                    )),
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Disconnect)) => {
                        Some(Err("disconnected by the server".into()))
                    }
                    Ok(_) => continue,
                    Err(e) => Some(Err(format!("mqtt: {e}"))),
                };
            },
            // Room messages; acks and other answers are skipped.
            Source::Grpc(events) => loop {
                return match events.message().await {
                    Ok(Some(event)) if event.kind == pb::event::Kind::Message as i32 => {
                        Some(Ok(Text::Owned(event.text)))
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => Some(Err("the stream ended".into())),
                    Err(status) => Some(Err(format!(
                        "ended by the server: {:?} {}",
                        status.code(),
                        status.message()
                    ))),
                };
            },
            Source::Sse(events) => loop {
                return match events.next().await {
                    Some(Ok(event)) if event.event == "message" => {
                        match serde_json::from_str::<SseMessage>(&event.data) {
                            Ok(m) => Some(Ok(Text::Owned(m.text))),
                            Err(e) => Some(Err(format!("bad SSE message event: {e}"))),
                        }
                    }
                    Some(Ok(event)) if event.event == "close" => {
                        Some(Err(format!("closed by the server: {}", event.data)))
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => Some(Err(format!("receive: {e}"))),
                    None => Some(Err("closed by the server".into())),
                };
            },
        }
    }
}

/// Who a receiver gives window permits back to.
#[derive(Clone)]
pub(super) enum Windows {
    /// Its own publisher's, when it sees its own message (WebSocket echoes the sender).
    Own(Arc<Semaphore>),
    /// Every publisher's (the TCP observer: TCP chat does not echo the sender).
    All(Arc<Vec<Arc<Semaphore>>>),
    /// None.
    Nobody,
}

pub(super) async fn receive(
    mut source: Source,
    me: u32,
    shared: Arc<Shared>,
    windows: Windows,
) -> Result<(Histogram<u32>, u64), ()> {
    let mut histogram = new_histogram().map_err(|_| ())?;
    let mut count = 0u64;
    // Received but not yet added to `shared.received` (one atomic add per batch).
    let mut unreported = 0u64;
    loop {
        if unreported == 256 {
            shared.received.fetch_add(unreported, Ordering::Relaxed);
            unreported = 0;
        }
        let message = tokio::select! {
            _ = shared.done.cancelled() => break,
            m = source.next() => match m {
                Some(m) => m,
                None => break,
            },
        };
        let text = match message {
            Ok(text) => text,
            Err(e) => {
                shared.error(e);
                break;
            }
        };
        unreported += 1;
        let text = text.as_str();
        // "nick: b PUB SEQ T …" from the chat, "b PUB SEQ T …" from an echo.
        let Some(at) = text.find("b ") else { continue };
        let mut fields = text[at + 2..].split(' ');
        let (Some(publisher), Some(_seq), Some(t)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Ok(publisher), Ok(t)) = (publisher.parse::<u32>(), t.parse::<u64>()) else {
            continue;
        };
        match &windows {
            Windows::Own(window) if publisher == me => window.add_permits(1),
            Windows::All(all) => {
                if let Some(window) = all.get(publisher as usize) {
                    window.add_permits(1);
                }
            }
            _ => {}
        }
        if shared.measured(t) && (shared.mode == Mode::Broadcast || publisher == me) {
            let _ = histogram.record(shared.now_us().saturating_sub(t).max(1));
            count += 1;
        }
    }
    shared.received.fetch_add(unreported, Ordering::Relaxed);
    Ok((histogram, count))
}
