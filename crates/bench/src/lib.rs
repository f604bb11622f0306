//! `switchboard bench`: the load generator.
//!
//! Modes: `broadcast` (N clients in one room, P of them publishing; every message reaches all
//! N, or all but its sender on TCP) and `echo` (each client sends and waits for its copy).
//! Transports: WebSocket (`ws://HOST:PORT/ws?room=…`, `ws://HOST:PORT/echo`), TCP
//! (`tcp://HOST:PORT[/ROOM]` for the chat, `tcp://HOST:PORT` of `echo-server` for echo) and
//! SSE (`http://HOST:PORT/events?room=…`, broadcast only) and MQTT 3.1.1
//! (`mqtt://HOST:PORT/TOPIC`, QoS 0, broadcast: any MQTT broker, Mosquitto included) and gRPC
//! (`grpc://HOST:PORT[/ROOM]`: one `Chat` stream per connection, publishing and receiving on
//! it; its acks are skipped). TCP chat does not echo a sender's
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

mod measure;
mod progress;
mod target;
mod traffic;

use measure::*;
use progress::{Counts, Progress};
use target::*;
use traffic::*;

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
    /// Draw a progress bar on stderr (only where stderr is a terminal).
    pub progress: bool,
    /// SSE only: the publishers are WebSocket connections to this `ws://…/ws?room=ROOM` URL
    /// (the same room) instead of HTTP POSTs, so that the listeners get bursts as WebSocket
    /// listeners do and SSE's own delivery cost is what is measured.
    pub publish_ws: Option<String>,
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
    /// Messages sent, warm-up included (the progress bar's count).
    attempted: AtomicU64,
    /// Messages received, in or out of the measured window: what the progress bar shows
    /// (receivers add theirs in batches, so that the count costs them nothing).
    received: AtomicU64,
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
    let progress =
        Progress::new(opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    progress.connecting(opts.connections);
    let opened = open_all(&opts, wire, target, &progress).await?;
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
        attempted: AtomicU64::new(0),
        received: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: std::sync::OnceLock::new(),
        mode: opts.mode,
        done: tokio_util::sync::CancellationToken::new(),
    });
    let connect_secs = opened.secs;
    // Each publisher's window of messages in flight, given back by the receivers.
    let windows: Arc<Vec<Arc<Semaphore>>> = Arc::new(
        (0..publishers)
            .map(|_| Arc::new(Semaphore::new(opts.window.max(1))))
            .collect(),
    );
    let publish_url = match (&opts.publish_ws, wire) {
        (Some(ws), Wire::Sse) => {
            start_ws_publishers(ws, target, &windows, &opts, &shared).await?;
            None
        }
        (Some(_), _) => {
            return Err(BenchError::Usage(
                "--publish-ws is for SSE targets (http://…/events?room=…)".into(),
            ));
        }
        (None, _) => publish_url,
    };
    let receivers = start_clients(
        &opts,
        wire,
        publishers,
        publish_url,
        opened,
        windows,
        &shared,
    );
    let measured = measure(&opts, &shared, receivers, &progress).await;
    progress.finish();
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
async fn open_all(
    opts: &Options,
    wire: Wire,
    target: SocketAddr,
    progress: &Progress,
) -> Result<Opened, BenchError> {
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
        let bar = progress.handle();
        handshakes.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let conn = match http {
                Some(client) => connect_sse(&client, &url).await,
                None if url.starts_with("mqtt://") => connect_mqtt(&url, target, i).await,
                None if url.starts_with("grpc://") => connect_grpc(&url, target).await,
                None => connect(&url, target, source).await,
            };
            bar.inc(u64::from(conn.is_ok()));
            conn
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
    windows: Arc<Vec<Arc<Semaphore>>>,
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
            Conn::Mqtt(client, events, topic) => {
                (Some(Sink::Mqtt(client, topic)), Source::Mqtt(events))
            }
            Conn::Grpc(frames, events) => (Some(Sink::Grpc(frames)), Source::Grpc(events)),
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

/// SSE publishers over WebSocket (`--publish-ws`): `publishers` connections to `url`, each
/// publishing with its window; what the server echoes to them is read and dropped, uncounted.
async fn start_ws_publishers(
    url: &str,
    target: SocketAddr,
    windows: &[Arc<Semaphore>],
    opts: &Options,
    shared: &Arc<Shared>,
) -> Result<(), BenchError> {
    let publishers = windows.len();
    let pace = (opts.rate > 0).then(|| Pace {
        each: opts.rate as f64 / publishers as f64,
        total: opts.rate as f64,
    });
    // The first SSE listener gives these windows back (`windows_for`).
    for (me, window) in windows.iter().enumerate() {
        let conn = connect(url, target, None)
            .await
            .map_err(|error| BenchError::Connect {
                opened: me,
                wanted: publishers,
                error,
            })?;
        let Conn::Ws(ws) = conn else {
            return Err(BenchError::Usage("--publish-ws must be a ws:// URL".into()));
        };
        let (sink, mut stream) = (*ws).split();
        tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        tokio::spawn(publish(
            Sink::Ws(sink),
            me as u32,
            Arc::clone(shared),
            Arc::clone(window),
            pace,
            opts.size,
        ));
    }
    Ok(())
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
async fn measure(
    opts: &Options,
    shared: &Shared,
    receivers: Vec<Receiver>,
    progress: &Progress,
) -> Measured {
    let start = shared.start;
    let counts = || Counts {
        sent: shared.attempted.load(Ordering::Relaxed),
        delivered: shared.received.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
    };
    progress.running(opts.warmup + opts.duration);
    // The bar is redrawn on its own tick; this loop only updates its counters.
    let warm = start + opts.warmup;
    while Instant::now() < warm {
        tokio::time::sleep(progress::TICK.min(warm - Instant::now())).await;
        progress.load("warm-up", start.elapsed(), counts());
    }
    let cpu_before = opts.server_pid.and_then(cpu_ticks);
    let own_cpu_before = cpu_ticks(std::process::id());
    let end = warm + opts.duration;
    while Instant::now() < end {
        tokio::time::sleep(progress::TICK.min(end - Instant::now())).await;
        progress.load("measuring", start.elapsed(), counts());
    }
    let cpu_after = opts.server_pid.and_then(cpu_ticks);
    let own_cpu_after = cpu_ticks(std::process::id());
    shared.stop_sending.store(true, Ordering::Relaxed);
    progress.draining();
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
