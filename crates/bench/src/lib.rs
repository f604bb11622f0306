//! `switchboard bench`: the load generator.
//!
//! Modes: `broadcast` (N clients in one room, P of them publishing; every message reaches all
//! N, or all but its sender on TCP) and `echo` (each client sends and waits for its copy).
//! Transports: WebSocket (`ws://HOST:PORT/ws?room=…`, `ws://HOST:PORT/echo`), TCP
//! (`tcp://HOST:PORT[/ROOM]` for the chat, `tcp://HOST:PORT` of `echo-server` for echo) and
//! SSE (`http://HOST:PORT/events?room=…`, broadcast only). TCP chat does not echo a sender's
//! own lines, so in TCP broadcast the first connection that does not publish tells each
//! publisher when its message went round (its window). SSE is receive-only: the N connections
//! all listen, and P more publish with `POST /rooms/ROOM/messages` on keep-alive HTTP
//! connections; the first listener paces the publishers' windows.
//! Every payload carries its publisher, sequence number and send time (microseconds since
//! one `Instant` shared by all clients), so a receiver knows the exact latency and which
//! messages fall in the measured window. Loops are bounded by the duration; targets must be
//! loopback unless `--allow-remote`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

/// The room the server puts a client in when the target names none.
const DEFAULT_ROOM: &str = "lobby";

/// How the load is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Chat fan-out: publishers' messages reach every connection in the room.
    Broadcast,
    /// Request/response: each connection sends and waits for its own copy (`/echo`).
    Echo,
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct Options {
    /// `ws://HOST:PORT/PATH` (`/ws?room=…` for broadcast, `/echo` for echo),
    /// `tcp://HOST:PORT[/ROOM]`, or `http://HOST:PORT/events?room=…` (SSE).
    pub url: String,
    /// Broadcast or echo.
    pub mode: Mode,
    /// Connections to open.
    pub connections: usize,
    /// How many of them publish (broadcast mode).
    pub publishers: usize,
    /// Messages per second across all publishers; 0 = as fast as the window allows.
    pub rate: u64,
    /// Messages a publisher may have in flight when `rate` is 0.
    pub window: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time before measuring.
    pub warmup: Duration,
    /// Payload bytes (at least what the header needs).
    pub size: usize,
    /// Spread connections over this many source addresses 127.0.0.1, .2, ….
    pub sources: u8,
    /// The server's pid, to read its CPU time and memory from /proc.
    pub server_pid: Option<u32>,
    /// Allow a non-loopback target.
    pub allow_remote: bool,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad URL or options.
    #[error("{0}")]
    Usage(String),
    /// The target is not on this machine.
    #[error("{0} is not a loopback address; pass --allow-remote to load a remote server")]
    Remote(IpAddr),
    /// Too few connections could be opened.
    #[error("only {opened} of {wanted} connections opened; first error: {error}")]
    Connect {
        /// Connections opened.
        opened: usize,
        /// Connections asked for.
        wanted: usize,
        /// The first failure.
        error: String,
    },
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Broadcast or echo.
    pub mode: Mode,
    /// Connections open.
    pub connections: usize,
    /// Publishing connections.
    pub publishers: usize,
    /// Seconds to open every connection.
    pub connect_secs: f64,
    /// Connections opened per second.
    pub connect_rate: f64,
    /// Messages sent in the measured window.
    pub sent: u64,
    /// Deliveries expected for them.
    pub expected: u64,
    /// Deliveries that arrived.
    pub delivered: u64,
    /// `delivered / expected`.
    pub delivered_ratio: f64,
    /// Deliveries per second over the measured window.
    pub deliveries_per_sec: f64,
    /// Publish-to-receive latency of those deliveries.
    pub latency_ms: Latency,
    /// Connections that closed or failed during the run.
    pub errors: u64,
    /// What the first of those errors was, e.g. `POST …: 429 Too Many Requests` or
    /// `closed by the server: 1008 slow consumer`.
    pub first_error: Option<String>,
    /// Server CPU time per delivery, when `--server-pid` was given.
    pub server_cpu_ns_per_delivery: Option<f64>,
    /// The load generator's own CPU time per delivery. When it is close to the server's,
    /// the two share the machine's cores and the generator caps the figures.
    pub client_cpu_ns_per_delivery: Option<f64>,
    /// Server RSS growth per open connection once all are connected and before anything is
    /// sent, when `--server-pid` was given.
    pub server_rss_bytes_per_connection: Option<f64>,
    /// The same at the end of the run, after the traffic (buffers that were used stay
    /// resident), still connected.
    pub server_rss_bytes_per_connection_after: Option<f64>,
}

struct Shared {
    start: Instant,
    /// Send times inside [from, to) microseconds are measured.
    from_us: u64,
    to_us: u64,
    stop_sending: AtomicBool,
    sent: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::OnceLock<String>,
    mode: Mode,
    /// Tells receivers to stop and hand in what they measured.
    done: tokio_util::sync::CancellationToken,
}

impl Shared {
    /// Counts an error; the first one is kept for the report.
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let _ = self.first_error.set(what);
    }
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    fn measured(&self, t: u64) -> bool {
        (self.from_us..self.to_us).contains(&t)
    }
}

/// Runs a benchmark and returns its report.
pub async fn run(opts: Options) -> Result<Report, BenchError> {
    let Target {
        wire,
        addr: target,
        publish_url,
    } = parse_target(&opts.url)?;
    if !target.ip().is_loopback() && !opts.allow_remote {
        return Err(BenchError::Remote(target.ip()));
    }
    if opts.connections == 0 {
        return Err(BenchError::Usage("--connections must be at least 1".into()));
    }
    let publishers = publishers(&opts, wire)?;
    let rss_before = opts.server_pid.and_then(rss_bytes);
    let opened = open_all(&opts, wire, target).await?;
    // Let join notices and the server's per-connection setup settle before measuring memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = opts.server_pid.and_then(rss_bytes);

    let start = Instant::now();
    let shared = Arc::new(Shared {
        start,
        from_us: opts.warmup.as_micros() as u64,
        to_us: (opts.warmup + opts.duration).as_micros() as u64,
        stop_sending: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: std::sync::OnceLock::new(),
        mode: opts.mode,
        done: tokio_util::sync::CancellationToken::new(),
    });
    let connect_secs = opened.secs;
    let receivers = start_clients(&opts, wire, publishers, publish_url, opened, &shared);
    let measured = measure(&opts, &shared, receivers).await;
    Ok(report(
        &opts,
        wire,
        publishers,
        connect_secs,
        &shared,
        measured,
        Rss {
            before: rss_before,
            connected: rss_connected,
        },
    ))
}

/// How many connections publish, refusing combinations the wire cannot run.
fn publishers(opts: &Options, wire: Wire) -> Result<usize, BenchError> {
    let tcp = wire == Wire::Tcp;
    let publishers = match (opts.mode, wire) {
        (Mode::Echo, Wire::Sse) => {
            return Err(BenchError::Usage(
                "SSE is receive-only: use --mode broadcast (publishers POST to the room)".into(),
            ));
        }
        // SSE publishers are extra HTTP connections, not some of the listeners.
        (Mode::Broadcast, Wire::Sse) => opts.publishers.max(1),
        (Mode::Broadcast, _) => opts.publishers.clamp(1, opts.connections),
        (Mode::Echo, _) => opts.connections,
    };
    if tcp && opts.mode == Mode::Broadcast && publishers >= opts.connections && opts.rate == 0 {
        return Err(BenchError::Usage(
            "TCP chat does not echo a sender's own lines: with --rate 0, open more connections \
             than publishers, so that one can pace them"
                .into(),
        ));
    }
    Ok(publishers)
}

/// Every connection, open; the HTTP clients SSE publishers share; how long opening took.
struct Opened {
    conns: Vec<Conn>,
    http_clients: Vec<reqwest::Client>,
    secs: f64,
}

/// Opens every connection, 256 handshakes at a time, spread over the source addresses.
async fn open_all(opts: &Options, wire: Wire, target: SocketAddr) -> Result<Opened, BenchError> {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(256));
    let sources: Vec<Option<IpAddr>> = if target.ip().is_loopback() && target.is_ipv4() {
        (0..opts.sources.max(1))
            .map(|k| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + k))))
            .collect()
    } else {
        vec![None]
    };
    // SSE goes through reqwest: one client (connection pool) per source address.
    let http_clients = if wire == Wire::Sse {
        sources
            .iter()
            .map(|ip| {
                reqwest::Client::builder()
                    .local_address(*ip)
                    .build()
                    .map_err(|e| BenchError::Usage(format!("HTTP client: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    let mut handshakes = Vec::with_capacity(opts.connections);
    for i in 0..opts.connections {
        let gate = Arc::clone(&gate);
        let url = opts.url.clone();
        let source = sources[i % sources.len()];
        let http = http_clients.get(i % sources.len()).cloned();
        handshakes.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            match http {
                Some(client) => connect_sse(&client, &url).await,
                None => connect(&url, target, source).await,
            }
        }));
    }
    let mut sockets = Vec::with_capacity(opts.connections);
    let mut first_error = None;
    for h in handshakes {
        match h.await {
            Ok(Ok(ws)) => sockets.push(ws),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(e.to_string())),
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    if sockets.len() < opts.connections {
        return Err(BenchError::Connect {
            opened: sockets.len(),
            wanted: opts.connections,
            error: first_error.unwrap_or_default(),
        });
    }
    Ok(Opened {
        conns: sockets,
        http_clients,
        secs: connect_secs,
    })
}

/// Starts a receiver task per connection and a publisher task per publisher.
fn start_clients(
    opts: &Options,
    wire: Wire,
    publishers: usize,
    publish_url: Option<String>,
    opened: Opened,
    shared: &Arc<Shared>,
) -> Vec<Receiver> {
    let Opened {
        conns: sockets,
        http_clients,
        ..
    } = opened;
    let pace = (opts.rate > 0).then(|| Pace {
        each: opts.rate as f64 / publishers as f64,
        total: opts.rate as f64,
    });
    let windows: Arc<Vec<Arc<Semaphore>>> = Arc::new(
        (0..publishers)
            .map(|_| Arc::new(Semaphore::new(opts.window.max(1))))
            .collect(),
    );
    let mut receivers = Vec::with_capacity(sockets.len());
    for (i, conn) in sockets.into_iter().enumerate() {
        let (sink, source) = match conn {
            Conn::Ws(ws) => {
                let (sink, stream) = (*ws).split();
                (Some(Sink::Ws(sink)), Source::Ws(stream))
            }
            Conn::Tcp(stream) => {
                let (read, write) = stream.into_split();
                (
                    Some(Sink::Tcp(write)),
                    Source::Tcp(BufReader::new(read).lines()),
                )
            }
            Conn::Sse(events) => (None, Source::Sse(events)),
        };
        let own = match wire {
            Wire::Sse => None,
            _ => windows.get(i).cloned(),
        };
        let returns = windows_for(wire, opts.mode, i, publishers, &own, &windows);
        match (own, sink) {
            (Some(window), Some(sink)) => {
                tokio::spawn(publish(
                    sink,
                    i as u32,
                    Arc::clone(shared),
                    window,
                    pace,
                    opts.size,
                ));
            }
            (_, Some(sink)) => {
                // Receivers keep their write half so the connection stays open.
                tokio::spawn(async move {
                    let _sink = sink;
                    std::future::pending::<()>().await;
                });
            }
            (_, None) => {}
        }
        receivers.push(tokio::spawn(receive(
            source,
            i as u32,
            Arc::clone(shared),
            returns,
        )));
    }

    if let Some(url) = publish_url {
        start_http_publishers(url, &http_clients, &windows, pace, opts.size, shared);
    }
    receivers
}

/// SSE publishers: one per window, each POSTing on a keep-alive client.
fn start_http_publishers(
    url: String,
    http_clients: &[reqwest::Client],
    windows: &[Arc<Semaphore>],
    pace: Option<Pace>,
    size: usize,
    shared: &Arc<Shared>,
) {
    for (me, window) in windows.iter().enumerate() {
        let sink = Sink::Http {
            client: http_clients[me % http_clients.len()].clone(),
            url: url.clone(),
        };
        tokio::spawn(publish(
            sink,
            me as u32,
            Arc::clone(shared),
            Arc::clone(window),
            pace,
            size,
        ));
    }
}

/// Which publishers' windows receiver `i` gives back when their messages reach it.
fn windows_for(
    wire: Wire,
    mode: Mode,
    i: usize,
    publishers: usize,
    own: &Option<Arc<Semaphore>>,
    windows: &Arc<Vec<Arc<Semaphore>>>,
) -> Windows {
    match (wire, mode, own) {
        // TCP chat: the first non-publisher sees every publisher's messages.
        (Wire::Tcp, Mode::Broadcast, _) if i == publishers => Windows::All(Arc::clone(windows)),
        (Wire::Tcp, Mode::Broadcast, _) => Windows::Nobody,
        // SSE: every listener sees every publisher's messages; the first one paces.
        (Wire::Sse, _, _) if i == 0 => Windows::All(Arc::clone(windows)),
        (Wire::Sse, _, _) => Windows::Nobody,
        (_, _, Some(window)) => Windows::Own(Arc::clone(window)),
        _ => Windows::Nobody,
    }
}

/// A receiver task's answer: its latency histogram and how many deliveries it counted.
type Receiver = tokio::task::JoinHandle<Result<(Histogram<u32>, u64), ()>>;

/// What the measured window gave.
struct Measured {
    histogram: Histogram<u64>,
    delivered: u64,
    cpu: (Option<u64>, Option<u64>),
    own_cpu: (Option<u64>, Option<u64>),
    rss_end: Option<u64>,
}

/// Server RSS before and after connecting.
struct Rss {
    before: Option<u64>,
    connected: Option<u64>,
}

/// Waits out the warm-up and the measured window (CPU sampled at both ends), stops the
/// publishers, lets the last deliveries land, and merges the receivers' histograms.
async fn measure(opts: &Options, shared: &Shared, receivers: Vec<Receiver>) -> Measured {
    let start = shared.start;
    let cpu_from = tokio::time::sleep_until((start + opts.warmup).into());
    cpu_from.await;
    let cpu_before = opts.server_pid.and_then(cpu_ticks);
    let own_cpu_before = cpu_ticks(std::process::id());
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let end = start + opts.warmup + opts.duration;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
        if progress {
            eprint!(
                "\r  {:>4.0} s  sent {:>10}",
                start.elapsed().as_secs_f64(),
                shared.sent.load(Ordering::Relaxed)
            );
        }
    }
    let cpu_after = opts.server_pid.and_then(cpu_ticks);
    let own_cpu_after = cpu_ticks(std::process::id());
    shared.stop_sending.store(true, Ordering::Relaxed);
    if progress {
        eprintln!();
    }
    // Deliveries of messages sent near the end are still on their way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_end = opts.server_pid.and_then(rss_bytes);
    let mut histogram: Histogram<u64> = new_histogram().expect("valid bounds");
    let mut delivered = 0u64;
    shared.done.cancel();
    for r in receivers {
        if let Ok(Ok((h, n))) = r.await {
            for v in h.iter_recorded() {
                let _ = histogram.record_n(v.value_iterated_to(), u64::from(v.count_at_value()));
            }
            delivered += n;
        }
    }
    Measured {
        histogram,
        delivered,
        cpu: (cpu_before, cpu_after),
        own_cpu: (own_cpu_before, own_cpu_after),
        rss_end,
    }
}

fn report(
    opts: &Options,
    wire: Wire,
    publishers: usize,
    connect_secs: f64,
    shared: &Shared,
    measured: Measured,
    rss: Rss,
) -> Report {
    let tcp = wire == Wire::Tcp;
    let Measured {
        histogram,
        delivered,
        cpu: (cpu_before, cpu_after),
        own_cpu: (own_cpu_before, own_cpu_after),
        rss_end,
    } = measured;
    let (rss_before, rss_connected) = (rss.before, rss.connected);
    let sent = shared.sent.load(Ordering::Relaxed);
    let expected = match opts.mode {
        // TCP chat does not send a line back to its sender.
        Mode::Broadcast if tcp => sent * (opts.connections as u64 - 1),
        Mode::Broadcast => sent * opts.connections as u64,
        Mode::Echo => sent,
    };
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    Report {
        mode: opts.mode,
        connections: opts.connections,
        publishers,
        connect_secs,
        connect_rate: opts.connections as f64 / connect_secs.max(1e-9),
        sent,
        expected,
        delivered,
        delivered_ratio: if expected == 0 {
            0.0
        } else {
            delivered as f64 / expected as f64
        },
        deliveries_per_sec: delivered as f64 / opts.duration.as_secs_f64(),
        latency_ms: Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: histogram.max() as f64 / 1000.0,
        },
        errors: shared.errors.load(Ordering::Relaxed),
        first_error: shared.first_error.get().cloned(),
        server_cpu_ns_per_delivery: match (cpu_before, cpu_after) {
            (Some(a), Some(b)) if delivered > 0 => {
                Some((b - a) as f64 / ticks_per_sec * 1e9 / delivered as f64)
            }
            _ => None,
        },
        client_cpu_ns_per_delivery: match (own_cpu_before, own_cpu_after) {
            (Some(a), Some(b)) if delivered > 0 => {
                Some((b - a) as f64 / ticks_per_sec * 1e9 / delivered as f64)
            }
            _ => None,
        },
        server_rss_bytes_per_connection: match (rss_before, rss_connected) {
            (Some(a), Some(b)) => Some((b as f64 - a as f64) / opts.connections as f64),
            _ => None,
        },
        server_rss_bytes_per_connection_after: match (rss_before, rss_end) {
            (Some(a), Some(b)) => Some((b as f64 - a as f64) / opts.connections as f64),
            _ => None,
        },
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// An SSE response body, parsed into events.
type SseEvents = std::pin::Pin<
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
enum Conn {
    Ws(Box<Ws>),
    Tcp(TcpStream),
    Sse(SseEvents),
}

/// Which protocol the URL speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Ws,
    Tcp,
    Sse,
}

/// What the URL names.
struct Target {
    wire: Wire,
    addr: SocketAddr,
    /// SSE: where publishers POST.
    publish_url: Option<String>,
}

fn parse_target(url: &str) -> Result<Target, BenchError> {
    let usage = || {
        BenchError::Usage(format!(
            "{url}: expected ws://HOST:PORT/PATH, tcp://HOST:PORT[/ROOM] or \
             http://HOST:PORT/events?room=ROOM"
        ))
    };
    let (wire, rest) = if let Some(rest) = url.strip_prefix("ws://") {
        (Wire::Ws, rest)
    } else if let Some(rest) = url.strip_prefix("tcp://") {
        (Wire::Tcp, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (Wire::Sse, rest)
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
async fn connect_sse(client: &reqwest::Client, url: &str) -> Result<Conn, String> {
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

async fn connect(url: &str, target: SocketAddr, source: Option<IpAddr>) -> Result<Conn, String> {
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
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(Conn::Ws(Box::new(ws)))
}

/// A publisher's share of `--rate`.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// This publisher's messages per second.
    each: f64,
    /// All publishers' together.
    total: f64,
}

/// A publisher's write half.
enum Sink {
    Ws(futures_util::stream::SplitSink<Ws, Message>),
    Tcp(tokio::net::tcp::OwnedWriteHalf),
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

async fn publish(
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
enum Source {
    Ws(futures_util::stream::SplitStream<Ws>),
    Tcp(tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>),
    Sse(SseEvents),
}

/// A received message's text, without a copy where the client library allows.
enum Text {
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
struct SseMessage {
    text: String,
}

impl Source {
    /// The next text message or line, or why there is none: the connection ended or failed.
    async fn next(&mut self) -> Option<Result<Text, String>> {
        match self {
            Source::Ws(stream) => loop {
                return match stream.next().await? {
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
enum Windows {
    /// Its own publisher's, when it sees its own message (WebSocket echoes the sender).
    Own(Arc<Semaphore>),
    /// Every publisher's (the TCP observer: TCP chat does not echo the sender).
    All(Arc<Vec<Arc<Semaphore>>>),
    /// None.
    Nobody,
}

async fn receive(
    mut source: Source,
    me: u32,
    shared: Arc<Shared>,
    windows: Windows,
) -> Result<(Histogram<u32>, u64), ()> {
    let mut histogram = new_histogram().map_err(|_| ())?;
    let mut count = 0u64;
    loop {
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
    Ok((histogram, count))
}

/// A latency histogram in microseconds, 1 µs to 10 minutes, within 1 %. Every receiving
/// connection has one: with three significant figures and `u64` counts each was 160 KiB,
/// and recording into a thousand of them missed the cache so often that it was the
/// generator's largest cost (10 % of its samples in W2). Two figures and `u32` counts make
/// one 12 KiB.
fn new_histogram<T: hdrhistogram::Counter>() -> Result<Histogram<T>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, 600_000_000, 2)
}

/// The process's CPU time (user + system) in clock ticks, from /proc.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The process's resident memory in bytes, from /proc.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Report {
    /// A human-readable summary.
    pub fn text(&self) -> String {
        let mut out = format!(
            "mode {:?}, {} connections ({} publishing), connected in {:.2} s ({:.0}/s)\n\
             sent {}  delivered {}/{} ({:.2} %)  {:.0} deliveries/s  errors {}\n\
             latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n",
            self.mode,
            self.connections,
            self.publishers,
            self.connect_secs,
            self.connect_rate,
            self.sent,
            self.delivered,
            self.expected,
            self.delivered_ratio * 100.0,
            self.deliveries_per_sec,
            self.errors,
            self.latency_ms.p50,
            self.latency_ms.p90,
            self.latency_ms.p99,
            self.latency_ms.p999,
            self.latency_ms.max,
        );
        if let Some(e) = &self.first_error {
            out.push_str(&format!("first error: {e}\n"));
        }
        if let Some(ns) = self.server_cpu_ns_per_delivery {
            out.push_str(&format!("server CPU per delivery {ns:.0} ns\n"));
        }
        if let Some(ns) = self.client_cpu_ns_per_delivery {
            out.push_str(&format!("load generator CPU per delivery {ns:.0} ns\n"));
        }
        if let (Some(b), Some(after)) = (
            self.server_rss_bytes_per_connection,
            self.server_rss_bytes_per_connection_after,
        ) {
            out.push_str(&format!(
                "server RSS per connection {:.1} KiB connected, {:.1} KiB after the run\n",
                b / 1024.0,
                after / 1024.0
            ));
        }
        out
    }
}
