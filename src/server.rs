//! Binding listeners and running them until shutdown, for `serve` and `echo-server`.
//!
//! `bind` is separate from `run` so that tests bind port 0 and learn the real addresses before
//! the server starts. Shutdown follows mini-redis: cancel one token (listeners stop accepting,
//! every connection tells its client and closes), then wait for the tracked tasks, bounded by a
//! grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::broker::{Broker, Handler, RedisCluster};
use crate::config::{Config, StoreKind};
use crate::hub::{Cluster, Hub, HubConfig};
use crate::transport::context::Context;
use crate::transport::tls::Tls;
use crate::transport::{self, limits::Limiter, limits::Permit};
use crate::{BindFailure, Error, grpc, http, store};

/// How often idle rooms are looked for.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The addresses a server actually listens on (useful after binding port 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct Addrs {
    /// TCP listener, if on.
    pub tcp: Option<SocketAddr>,
    /// UDP socket, if on.
    pub udp: Option<SocketAddr>,
    /// HTTP listener, if on.
    pub http: Option<SocketAddr>,
    /// MQTT listener, if on.
    pub mqtt: Option<SocketAddr>,
    /// gRPC listener, if on.
    pub grpc: Option<SocketAddr>,
}

/// The listeners a server can have, in the order they are bound and started. Binding,
/// addresses, the log line and the task each runs are looked up by kind, so a new transport
/// is one more arm here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// TCP chat (or the echo server's TCP).
    Tcp,
    /// HTTP: WebSocket, SSE, the REST calls, the page.
    Http,
    /// MQTT 3.1.1 and 5.0.
    Mqtt,
    /// gRPC.
    Grpc,
    /// UDP chat.
    Udp,
    /// The echo server's TCP (`echo-server`): every byte back to its sender.
    EchoTcp,
    /// The echo server's UDP: every datagram back to its sender.
    EchoUdp,
}

impl Listener {
    /// The chat server's kinds, in binding order.
    pub const ALL: [Listener; 5] = [
        Listener::Tcp,
        Listener::Http,
        Listener::Mqtt,
        Listener::Grpc,
        Listener::Udp,
    ];

    /// The echo server's kinds.
    pub const ECHO: [Listener; 2] = [Listener::EchoTcp, Listener::EchoUdp];

    /// Its name, which is also the flag that sets its address (`--tcp`).
    pub fn name(self) -> &'static str {
        match self {
            Listener::Tcp => "tcp",
            Listener::Http => "http",
            Listener::Mqtt => "mqtt",
            Listener::Grpc => "grpc",
            Listener::Udp | Listener::EchoUdp => "udp",
            Listener::EchoTcp => "tcp",
        }
    }

    /// Where `config` puts it; `None` when it is off.
    pub fn addr(self, config: &Config) -> Option<SocketAddr> {
        match self {
            Listener::Tcp | Listener::EchoTcp => config.tcp,
            Listener::Http => config.http,
            Listener::Mqtt => config.mqtt,
            Listener::Grpc => config.grpc,
            Listener::Udp | Listener::EchoUdp => config.udp,
        }
    }

    async fn bind(self, addr: SocketAddr) -> Result<Socket, BindFailure> {
        match self {
            Listener::Udp | Listener::EchoUdp => UdpSocket::bind(addr)
                .await
                .map(Socket::Datagram)
                .map_err(|error| BindFailure {
                    what: self.name(),
                    addr,
                    error,
                }),
            _ => bind_tcp(self.name(), addr).await.map(Socket::Stream),
        }
    }
}

/// A bound socket.
#[derive(Debug)]
enum Socket {
    Stream(TcpListener),
    Datagram(UdpSocket),
}

impl Socket {
    fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Socket::Stream(l) => l.local_addr().ok(),
            Socket::Datagram(s) => s.local_addr().ok(),
        }
    }
}

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    /// Closed last, after every connection, so that the store is marked cleanly shut down.
    sqlite: Option<Arc<store::SqliteStore>>,
    /// Set in a cluster: its run loop runs while the server does.
    broker: Option<Arc<dyn Broker>>,
    shared: Arc<Context>,
    /// Bound, in `Listener::ALL`'s order; taken when they start.
    listeners: Vec<(Listener, Socket)>,
    /// Set when TCP chat and HTTP speak TLS.
    tls: Option<Tls>,
    /// The data directory, held while the server lives (`store::DirLock`).
    _data_lock: Option<store::DirLock>,
}

impl Server {
    /// Binds the chat server's listeners.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        Self::bind_kinds(&Listener::ALL, config).await
    }

    /// Binds the echo server's listeners (`config.tcp` and `config.udp`). It keeps nothing:
    /// no other listener, no store on disk or in Redis, no webhooks, no TLS.
    pub async fn bind_echo(config: Config) -> Result<Self, Error> {
        let config = Config {
            http: None,
            mqtt: None,
            grpc: None,
            store: StoreKind::Memory,
            redis: None,
            webhooks: None,
            tls: None,
            ..config
        };
        Self::bind_kinds(&Listener::ECHO, config).await
    }

    async fn bind_kinds(kinds: &[Listener], config: Config) -> Result<Self, Error> {
        let listeners = bind_all(kinds, &config).await?;
        // Before anything opens a file in it: history, kept state, the webhook queue.
        let uses_data_dir = config.store == StoreKind::Sqlite
            || (config.webhooks.is_some() && config.store != StoreKind::Memory);
        let data_lock = if uses_data_dir {
            Some(store::DirLock::take(&config.data_dir)?)
        } else {
            None
        };
        let Stores {
            sqlite,
            cluster,
            history,
        } = open_stores(&config)?;
        // Retained messages and parked MQTT sessions live beside durable history.
        let keep = match config.store {
            StoreKind::Sqlite => store::Keep::open(&config.data_dir)?,
            _ => store::Keep::memory(),
        };
        let (tls, auth) = trust(&config)?;
        if kinds == Listener::ALL {
            tracing::info!(policy = %config.auth.anonymous_policy(), "who may do what");
        }
        let shutdown = CancellationToken::new();
        let observer: Option<Arc<dyn crate::hub::Observer>> = match &config.webhooks {
            Some(hooks) => {
                // Durable beside the history (the directory the lock holds), except when
                // history itself is throw-away.
                let dir = data_lock.as_ref().map(|_| config.data_dir.as_path());
                Some(crate::webhook::Webhooks::start(
                    hooks.clone(),
                    dir,
                    shutdown.clone(),
                )?)
            }
            _ => None,
        };
        let hub = Hub::new(HubConfig {
            queue_capacity: config.queue_capacity,
            history,
            cluster: cluster.clone(),
            auth: Arc::clone(&auth),
            identity_rate: (config.publish_rate, config.publish_burst),
            limits: config.limits.clone(),
            observer,
        });
        if let Some(sqlite) = &sqlite {
            // Rooms are otherwise created on first use; those with history must be readable
            // (and resumable) right after a restart.
            let rooms = sqlite.rooms_with_history()?;
            for room in &rooms {
                hub.room(room);
            }
            tracing::info!(rooms = rooms.len(), "rooms with history loaded");
        }
        let shared = context(hub, config, shutdown, keep);
        Ok(Self {
            _data_lock: data_lock,
            sqlite,
            broker: cluster.map(|c| c.broker),
            shared: Arc::new(shared),
            listeners,
            tls,
        })
    }

    /// The bound addresses.
    pub fn addrs(&self) -> Addrs {
        let mut addrs = Addrs::default();
        for (kind, socket) in &self.listeners {
            let addr = socket.local_addr();
            match kind {
                Listener::Tcp | Listener::EchoTcp => addrs.tcp = addr,
                Listener::Http => addrs.http = addr,
                Listener::Mqtt => addrs.mqtt = addr,
                Listener::Grpc => addrs.grpc = addr,
                Listener::Udp | Listener::EchoUdp => addrs.udp = addr,
            }
        }
        addrs
    }

    /// The hub, for embedding and tests.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.shared.hub
    }

    /// Serves until `shutdown` resolves, then closes every connection cleanly.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        self.spawn_listeners();
        let shared = Arc::clone(&self.shared);
        if let Some(broker) = &self.broker {
            let handler: Arc<dyn Handler> = Arc::clone(&shared.hub) as Arc<dyn Handler>;
            shared
                .tasks
                .spawn(Arc::clone(broker).run(handler, shared.shutdown.clone()));
        }
        shared.tasks.spawn(sweep_loop(Arc::clone(&shared)));
        shared
            .tasks
            .spawn(Arc::clone(shared.hub.auth()).run(shared.shutdown.clone()));

        shutdown.await;
        tracing::info!("shutting down: closing listeners and telling clients");
        shared.shutdown.cancel();
        shared.tasks.close();
        if tokio::time::timeout(shared.config.shutdown_grace, shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = shared.tasks.len(),
                "connections still open after the grace period; closing them"
            );
        }
        if let Some(sqlite) = self.sqlite {
            sqlite.close().await;
        }
        if let Some(broker) = self.broker {
            broker.close().await;
        }
        Ok(())
    }

    /// Starts every bound listener on the task tracker.
    fn spawn_listeners(&mut self) {
        if let Some(tls) = self.tls.clone() {
            let shared = &self.shared;
            shared
                .tasks
                .spawn(tls.reload_on_hangup(shared.shutdown.clone()));
        }
        for (kind, socket) in std::mem::take(&mut self.listeners) {
            let addr = socket.local_addr();
            match socket {
                Socket::Stream(listener) => self.spawn_stream(kind, listener, addr),
                Socket::Datagram(socket) => self.spawn_datagram(kind, socket, addr),
            }
        }
    }

    /// Starts a TCP listener of `kind`, over TLS where the server has a certificate.
    fn spawn_stream(&self, kind: Listener, listener: TcpListener, addr: Option<SocketAddr>) {
        let shared = &self.shared;
        let tls = self.tls.clone();
        if let Some(addr) = addr {
            let secure = if tls.is_some() { "s" } else { "" };
            match kind {
                Listener::Http | Listener::Grpc => {}
                Listener::Tcp => tracing::info!(%addr, "tcp chat listening"),
                Listener::EchoTcp => tracing::info!(%addr, "tcp echo listening"),
                _ => tracing::info!(%addr, "{}{secure} listening", kind.name()),
            }
        }
        match kind {
            Listener::Http => spawn_api(shared, listener, tls, addr, http::Api::Http),
            Listener::Grpc => spawn_api(shared, listener, tls, addr, http::Api::Grpc),
            Listener::Tcp => spawn_accept(shared, listener, tls, transport::tcp::handle),
            Listener::Mqtt => spawn_accept(shared, listener, tls, transport::mqtt::handle),
            Listener::EchoTcp => {
                shared.tasks.spawn(transport::accept_loop(
                    listener,
                    Arc::clone(shared),
                    transport::echo::handle_tcp,
                ));
            }
            Listener::Udp | Listener::EchoUdp => unreachable!("UDP is a datagram socket"),
        }
    }

    /// Starts a UDP socket: chat, or the echo server's.
    fn spawn_datagram(&self, kind: Listener, socket: UdpSocket, addr: Option<SocketAddr>) {
        let shared = Arc::clone(&self.shared);
        let echo = kind == Listener::EchoUdp;
        if let Some(addr) = addr {
            tracing::info!(%addr, "udp {} listening", if echo { "echo" } else { "chat" });
        }
        match echo {
            false => self
                .shared
                .tasks
                .spawn(transport::udp::serve(socket, shared)),
            true => self
                .shared
                .tasks
                .spawn(transport::echo::serve_udp(socket, shared)),
        };
    }
}

/// Binds every listener `config` turns on. Every one is tried before a failure is reported,
/// so that one start names every taken port rather than one per attempt.
async fn bind_all(kinds: &[Listener], config: &Config) -> Result<Vec<(Listener, Socket)>, Error> {
    let mut bound = Vec::new();
    let mut failed = Vec::new();
    for &kind in kinds {
        let Some(addr) = kind.addr(config) else {
            continue;
        };
        match kind.bind(addr).await {
            Ok(socket) => bound.push((kind, socket)),
            Err(failure) => failed.push(failure),
        }
    }
    if failed.is_empty() {
        Ok(bound)
    } else {
        Err(Error::Bind(failed))
    }
}

/// What every connection shares: the hub, the config, and the limiters built from it.
fn context(
    hub: Arc<Hub>,
    config: Config,
    shutdown: CancellationToken,
    keep: store::Keep,
) -> Context {
    let limiter = Limiter::new(config.max_connections, config.max_connections_per_ip);
    let limits = &config.limits;
    crate::auth::throttle::set_ipv6_prefix(limits.ipv6_prefix);
    let http_limiter = Limiter::new(limits.http_connections, limits.http_connections_per_ip);
    // One address may hold at most half the descriptors, so that others still get in.
    let budget = socket_budget(limits.reserved_fds);
    let per_ip = config
        .max_connections_per_ip
        .max(limits.http_connections_per_ip)
        .min((budget / 2).max(1));
    let sockets = Limiter::new(budget, per_ip);
    transport::fds::RESERVE.hold();
    Context {
        hub,
        config,
        limiter,
        http_limiter,
        sockets,
        shutdown,
        tasks: TaskTracker::new(),
        mqtt: transport::mqtt::Mqtt::new(keep),
    }
}

/// Serves `api` on `listener` through `http::serve`'s loop (HTTP/2 and HTTP/1.1, the same
/// caps and timeouts for both), over TLS when `tls` is set.
fn spawn_api(
    shared: &Arc<Context>,
    listener: TcpListener,
    tls: Option<Tls>,
    addr: Option<SocketAddr>,
    api: http::Api,
) {
    let router = match api {
        http::Api::Http => http::router(Arc::clone(shared)),
        http::Api::Grpc => grpc::router(Arc::clone(shared)),
    };
    if let Some(addr) = addr {
        match (api, &tls) {
            (http::Api::Http, Some(_)) => {
                tracing::info!(%addr, alpn = "h2,http/1.1", "https listening")
            }
            (http::Api::Http, None) => tracing::info!(%addr, "http listening"),
            (http::Api::Grpc, Some(_)) => tracing::info!(%addr, "grpcs listening"),
            (http::Api::Grpc, None) => tracing::info!(%addr, "grpc listening"),
        }
    }
    let acceptor = tls.map(|tls| tls.http().clone());
    shared.tasks.spawn(http::serve(
        listener,
        router,
        acceptor,
        Arc::clone(shared),
        api,
    ));
}

/// Sockets the process may have open at once: its file limit (raised to the hard limit)
/// less `reserved` for the store, the UDP socket, the listeners and the spare that refuses
/// connections when the rest are taken.
fn socket_budget(reserved: usize) -> usize {
    match transport::fds::raise_limit() {
        Some(limit) => {
            let budget = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_sub(reserved);
            tracing::debug!(limit, budget, "open file limit");
            budget.max(1)
        }
        None => usize::MAX,
    }
}

/// Where history lives: the SQLite store, the Redis cluster, or memory.
struct Stores {
    sqlite: Option<Arc<store::SqliteStore>>,
    cluster: Option<Cluster>,
    history: store::HistoryFactory,
}

/// Opens the configured store (the echo server's is always memory).
fn open_stores(config: &Config) -> Result<Stores, Error> {
    let retention = store::Retention {
        max_messages: config.history_max_messages,
        max_age: config.history_max_age,
        key_window: config.limits.idempotency_window,
    };
    Ok(match (config.store, &config.redis) {
        (StoreKind::Sqlite, _) => {
            let store = store::SqliteStore::open(&config.data_dir, retention)?;
            Stores {
                history: store.factory(),
                sqlite: Some(store),
                cluster: None,
            }
        }
        (StoreKind::Redis, Some(url)) => {
            let redis = RedisCluster::connect(url, &config.redis_prefix, retention)?;
            Stores {
                history: redis.factory(),
                sqlite: None,
                cluster: Some(Cluster {
                    broker: Arc::clone(&redis) as Arc<dyn Broker>,
                    presence: redis,
                }),
            }
        }
        _ => Stores {
            history: store::memory(retention),
            sqlite: None,
            cluster: None,
        },
    })
}

/// The certificate and the token verifier; warns when tokens would cross the network in
/// clear.
fn trust(config: &Config) -> Result<(Option<Tls>, Arc<Auth>), Error> {
    let invalid = |key: &'static str, message: String| {
        Error::Config(crate::config::ConfigError::Invalid { key, message })
    };
    let tls = match &config.tls {
        Some((cert, key)) => Some(Tls::load(cert, key).map_err(|e| invalid("tls", e.to_string()))?),
        None => None,
    };
    let auth = Arc::new(Auth::new(&config.auth).map_err(|m| invalid("auth", m))?);
    let exposed = [config.tcp, config.http]
        .into_iter()
        .flatten()
        .any(|a| !a.ip().is_loopback());
    if exposed && tls.is_none() && !config.auth.is_empty() {
        tracing::warn!(
            "listening beyond loopback without TLS: tokens and API keys cross the network \
             in clear; give --tls-cert and --tls-key (or terminate TLS in front)"
        );
    }
    Ok((tls, auth))
}

/// Drops rooms nobody uses any more (no members, no history, no holder), and prunes the
/// publish rate limiter's idle buckets, until shutdown.
async fn sweep_loop(shared: Arc<Context>) {
    // The first sweep one period after start, not at once (an interval's first tick is
    // immediate): a room made in the first moments gets its full idle period too.
    let mut every =
        tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
    let mut presence = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = presence.tick() => shared.hub.flush_presence(),
            _ = every.tick() => {
                shared.hub.identities().prune();
                let expired = shared.mqtt.expire();
                if expired > 0 {
                    tracing::debug!(expired, "expired mqtt sessions forgotten");
                }
                let dropped = shared.hub.sweep();
                if dropped > 0 {
                    tracing::debug!(dropped, "idle rooms dropped");
                }
            }
        }
    }
}

async fn bind_tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, BindFailure> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|error| BindFailure { what, addr, error })?;
    // Restarting right after a stop must not fail on sockets still in TIME_WAIT.
    let _ = socket.set_reuseaddr(true);
    socket
        .bind(addr)
        .and_then(|()| socket.listen(1024))
        .map_err(|error| BindFailure { what, addr, error })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Accepts a stream transport's connections (TCP chat, MQTT), each served by `serve` with
/// the TLS acceptor when the server has a certificate.
fn spawn_accept<F, Fut>(shared: &Arc<Context>, listener: TcpListener, tls: Option<Tls>, serve: F)
where
    F: Fn(TcpStream, SocketAddr, Permit, Arc<Context>, Option<tokio_rustls::TlsAcceptor>) -> Fut,
    F: Copy + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let acceptor = tls.map(|tls| tls.chat().clone());
    shared.tasks.spawn(transport::accept_loop(
        listener,
        Arc::clone(shared),
        move |stream, addr, permit, ctx| serve(stream, addr, permit, ctx, acceptor.clone()),
    ));
}
