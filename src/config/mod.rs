//! One `Config` for `serve`, resolved from flags, `SWITCHBOARD_*` environment variables, an
//! optional TOML file and defaults, in that order of precedence.
//!
//! clap already merges flags over environment variables (both land in `ServeArgs` as `Some`),
//! and the file is read into a `ServeArgs` too (`args.rs`: one field per setting serves as
//! flag and as key), so resolving is: the argument if given, else the file's value, else the
//! default below.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::auth::AuthConfig;
use serde::Deserialize;

mod args;
mod limits;
pub mod webhooks;

pub use args::ServeArgs;
pub use limits::Limits;

/// Default TCP chat address, the seed's.
pub const DEFAULT_TCP: &str = "127.0.0.1:12345";
/// Default UDP chat address, the seed's port on UDP.
pub const DEFAULT_UDP: &str = "127.0.0.1:12345";
/// Default MQTT listener (MQTT's registered port).
pub const DEFAULT_MQTT: &str = "127.0.0.1:1883";
/// Where gRPC listens unless told otherwise (the port gRPC's examples use).
pub const DEFAULT_GRPC: &str = "127.0.0.1:50051";
/// Default HTTP/WebSocket address, the seed's.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8000";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for our keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file named by `--config`.
        path: PathBuf,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// A value is out of its allowed range.
    #[error("{key}: {message}")]
    Invalid {
        /// The setting's name as written in the file.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// A listening address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if matches!(
            s.to_ascii_lowercase().as_str(),
            "off" | "none" | "false" | "no"
        ) {
            return Ok(Listen(None));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Listen(Some(addr)));
        }
        match s.to_socket_addrs() {
            Ok(mut addrs) => addrs
                .next()
                .map(|a| Listen(Some(a)))
                .ok_or_else(|| format!("{s:?} resolves to no address")),
            Err(_) => Err(format!(
                "{s:?} is not an address: expected HOST:PORT (e.g. 127.0.0.1:8000) or off"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where room history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// SQLite under the data directory: history survives restarts and crashes.
    Sqlite,
    /// In memory: lost when the process ends (throw-away runs, tests).
    Memory,
    /// Redis Streams, shared by every node given the same `--redis` (implied by it).
    Redis,
}

/// Default prefix of every Redis key switchboard writes.
pub const DEFAULT_REDIS_PREFIX: &str = "switchboard";

/// Default data directory, relative to where the server is started.
pub const DEFAULT_DATA_DIR: &str = "switchboard-data";

/// Everything `serve` needs, fully resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP chat listener; `None` when switched off.
    pub tcp: Option<SocketAddr>,
    /// UDP chat socket; `None` when switched off.
    pub udp: Option<SocketAddr>,
    /// HTTP and WebSocket listener; `None` when switched off.
    pub http: Option<SocketAddr>,
    /// MQTT listener; `None` when switched off.
    pub mqtt: Option<SocketAddr>,
    /// gRPC listener; `None` when switched off.
    pub grpc: Option<SocketAddr>,
    /// Largest MQTT packet taken, in bytes.
    pub mqtt_max_packet: usize,
    /// Where history is kept.
    pub store: StoreKind,
    /// Directory of the SQLite store.
    pub data_dir: PathBuf,
    /// Redis shared by every node of a cluster, as `redis://host:port[/db]`.
    pub redis: Option<String>,
    /// Prefix of every Redis key, so that several clusters can share one Redis.
    pub redis_prefix: String,
    /// Connections across all transports at once; past it new ones get `ERR server full`.
    pub max_connections: usize,
    /// Connections from one IP address at once.
    pub max_connections_per_ip: usize,
    /// Longest TCP line in bytes.
    pub max_line_bytes: usize,
    /// A TCP chat connection silent this long is told so, and closed if it stays silent a
    /// minute more (`idle_grace`); `None` never does. 15 minutes by default, so that idle
    /// sockets cannot hold the descriptor budget for ever.
    pub idle_timeout: Option<Duration>,
    /// Events a subscriber may have queued before it is disconnected as a slow consumer.
    pub queue_capacity: usize,
    /// Text with no newline is delivered once the sender pauses this long.
    pub line_flush: Duration,
    /// A UDP member that sends nothing for this long leaves its room.
    pub udp_ttl: Duration,
    /// Largest datagram accepted from a UDP client, in bytes.
    pub udp_max_in: usize,
    /// Largest datagram sent to a UDP client, in bytes.
    pub udp_max_out: usize,
    /// Largest WebSocket chat message (after reassembly and decompression); larger closes 1009.
    pub ws_max_message: usize,
    /// Largest message on `/echo`. Larger than the chat's because the conformance suite sends
    /// messages up to 16 MiB there.
    pub ws_echo_max_message: usize,
    /// Ping a WebSocket client after this long without traffic from it; 0 turns pings off.
    pub ws_ping_interval: Duration,
    /// Close a WebSocket client that does not answer a ping within this long.
    pub ws_pong_timeout: Duration,
    /// Offer permessage-deflate to WebSocket clients that ask for it.
    pub ws_deflate: bool,
    /// Browser origins allowed to open WebSockets besides the server's own host and localhost;
    /// `*` allows any.
    pub allowed_origins: Vec<String>,
    /// End each SSE stream after this long so clients reconnect (resuming with
    /// `Last-Event-ID`), e.g. to spread them over nodes; `None` (the default) never does.
    pub sse_max_lifetime: Option<Duration>,
    /// Publishes per second per identity (a user, or an anonymous client's IP) on every
    /// transport together, on average; 0 = unlimited.
    pub publish_rate: f64,
    /// Publishes one identity may make at once before the rate applies.
    pub publish_burst: f64,
    /// What one client, identity or creator may ask of the server.
    pub limits: Limits,
    /// Most messages each room keeps for resume and history.
    pub history_max_messages: usize,
    /// Oldest message each room keeps.
    pub history_max_age: Duration,
    /// How long shutdown waits for connections to close after telling them.
    pub shutdown_grace: Duration,
    /// Tokens, API keys and room rules (`crate::auth`).
    pub auth: AuthConfig,
    /// Serve beyond loopback with no auth configured.
    pub allow_anonymous: bool,
    /// Certificate chain and private key (PEM files): HTTP becomes HTTPS/WSS (HTTP/2 by
    /// ALPN) and the TCP chat listener speaks TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Host names (besides loopback ones) the HTTP listener answers to while it listens on
    /// loopback, against DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Signed POSTs of what happens in rooms; `None` when no endpoint is configured.
    pub webhooks: Option<self::webhooks::WebhookConfig>,
    /// Reverse proxies whose word on the client's address is taken.
    pub trusted_proxies: crate::auth::proxies::TrustedProxies,
    /// Trusted proxies send a PROXY protocol header on the TCP chat, MQTT and gRPC listeners.
    pub proxy_protocol: bool,
}

/// The defaults are `resolve`'s with no flag and no file: each default is written once, in
/// the line of `resolve` that picks its setting.
impl Default for Config {
    fn default() -> Self {
        Config::resolve(&ServeArgs::default()).expect("the defaults are a valid configuration")
    }
}

/// `[[webhooks]]`: one receiver, with optional filters and its own secret.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileWebhook {
    url: String,
    /// Event names (room_occupied, room_vacated, member_joined, member_left, message);
    /// absent = all.
    #[serde(default)]
    events: Vec<self::webhooks::HookKind>,
    /// Room patterns; absent = every room.
    #[serde(default)]
    rooms: Vec<String>,
    /// This receiver's signing key; absent = `webhook_secret`.
    secret: Option<String>,
}

impl std::fmt::Debug for FileWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWebhook")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("rooms", &self.rooms)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// Default bounds of each webhook endpoint's queue, in events and in bytes.
pub const WEBHOOK_QUEUE_MAX: usize = 10_000;
/// See `WEBHOOK_QUEUE_MAX`.
pub const WEBHOOK_QUEUE_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The webhook endpoints of the file, then one per `--webhook` flag (all events, all rooms),
/// each URL checked; `None` when there are none.
/// The key `url`'s payloads are signed with: its own or the shared one, at least 16 bytes.
fn endpoint_secret(url: &str, secret: Option<String>) -> Result<String, ConfigError> {
    let secret = secret.ok_or_else(|| ConfigError::Invalid {
        key: "webhook_secret",
        message: format!(
            "webhooks are signed: give --webhook-secret (or SWITCHBOARD_WEBHOOK_SECRET, or \
             webhook_secret in the file, or a secret in {url:?}'s [[webhooks]] entry), at \
             least 16 bytes"
        ),
    })?;
    if secret.len() < 16 {
        return Err(ConfigError::Invalid {
            key: "webhook_secret",
            message: format!(
                "the secret for {url:?} is {} bytes, too short; use at least 16",
                secret.len()
            ),
        });
    }
    Ok(secret)
}

fn resolve_webhooks(
    args: &ServeArgs,
    file: &mut ServeArgs,
) -> Result<Option<self::webhooks::WebhookConfig>, ConfigError> {
    use self::webhooks::{Endpoint, WebhookConfig};
    let invalid = |message: String| ConfigError::Invalid {
        key: "webhooks",
        message,
    };
    // One key for the endpoints that have none of their own.
    let shared = args.webhook_secret.clone().or(file.webhook_secret.take());
    let from_file = std::mem::take(&mut file.hooks)
        .into_iter()
        .map(|w| (w.url, w.events, w.rooms, w.secret));
    let from_flags = args
        .webhooks
        .iter()
        .map(|url| (url.clone(), Vec::new(), Vec::new(), None));
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for (url, events, rooms, own) in from_file.chain(from_flags) {
        let parsed =
            reqwest::Url::parse(&url).map_err(|e| invalid(format!("{url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(invalid(format!(
                "{url:?} must be an http:// or https:// URL with a host"
            )));
        }
        if endpoints.iter().any(|e| e.url == parsed) {
            return Err(invalid(format!("{url:?} is configured twice")));
        }
        let secret = endpoint_secret(&url, own.or_else(|| shared.clone()))?;
        endpoints.push(Endpoint {
            url: parsed,
            secret,
            events,
            rooms: rooms.iter().map(|r| crate::auth::Pattern::new(r)).collect(),
        });
    }
    if endpoints.is_empty() {
        return Ok(None);
    }
    let queue_max = file.webhook_queue_max.unwrap_or(WEBHOOK_QUEUE_MAX);
    if queue_max == 0 {
        return Err(ConfigError::Invalid {
            key: "webhook_queue_max",
            message: "must be at least 1".into(),
        });
    }
    let queue_max_bytes = file
        .webhook_queue_max_bytes
        .unwrap_or(WEBHOOK_QUEUE_MAX_BYTES);
    if queue_max_bytes < 1024 * 1024 {
        return Err(ConfigError::Invalid {
            key: "webhook_queue_max_bytes",
            message: "must be at least 1 MiB (one message is up to 64 KiB)".into(),
        });
    }
    Ok(Some(WebhookConfig {
        endpoints,
        queue_max,
        queue_max_bytes,
        batch_max: 100,
        timeout: Duration::from_secs(10),
    }))
}

/// Keys of the config file that were renamed to match their flags: the old name still works,
/// with a warning at start.
pub const RENAMED_KEYS: &[(&str, &str)] = &[
    ("idle_timeout_secs", "idle_timeout"),
    ("udp_ttl_secs", "udp_ttl"),
    ("ws_ping_interval_secs", "ws_ping_interval"),
    ("sse_max_lifetime_secs", "sse_max_lifetime"),
    ("history_max_age_secs", "history_max_age"),
    ("allowed_origins", "allowed_origin"),
    ("auth_secrets", "auth_secret"),
    ("auth_public_keys", "auth_public_key"),
    ("auth_leeway_secs", "auth_leeway"),
    ("api_keys", "api_key"),
    ("allowed_hosts", "allowed_host"),
];

impl ServeArgs {
    /// The TOML file's settings: every key optional, unknown keys refused (typos are
    /// caught), old names taken with a warning, relative paths made relative to the file.
    fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message,
        };
        let table: toml::Table = toml::from_str(&text).map_err(|e| parse_error(e.to_string()))?;
        let old: Vec<&(&str, &str)> = RENAMED_KEYS
            .iter()
            .filter(|(old, _)| table.contains_key(*old))
            .collect();
        let mut file: ServeArgs = if old.is_empty() {
            // Straight from the text, so that an error names its line and column.
            toml::from_str(&text).map_err(|e| parse_error(e.to_string()))?
        } else {
            let mut table = table;
            for (old, new) in old {
                if table.contains_key(*new) {
                    return Err(parse_error(format!(
                        "both `{old}` and `{new}` are set; `{old}` is the old name of `{new}`"
                    )));
                }
                if let Some(value) = table.remove(*old) {
                    tracing::warn!(file = %path.display(), "config key `{old}` is now `{new}` (named like its flag); the old name still works");
                    table.insert((*new).to_owned(), value);
                }
            }
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| parse_error(e.to_string()))?
        };
        // A relative path in the file means relative to the file, wherever serve was started.
        let base = path.parent().unwrap_or(Path::new("."));
        let beside = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let paths = [&mut file.data_dir, &mut file.tls_cert, &mut file.tls_key];
        for path in paths.into_iter().flatten() {
            beside(path);
        }
        for key in &mut file.auth_public_keys {
            beside(key);
        }
        Ok(file)
    }
}

/// The secret `switchboard token` signs with: the flag (or its environment variable), else
/// the first of the file's `auth_secrets`.
pub fn signing_secret(flag: Option<String>, file: Option<&Path>) -> Result<String, ConfigError> {
    let from_file = match file {
        Some(path) => ServeArgs::load(path)?.auth_secrets.into_iter().next(),
        None => None,
    };
    let secret = flag.or(from_file).ok_or(ConfigError::Invalid {
        key: "auth_secret",
        message: "no secret to sign with: give --auth-secret, SWITCHBOARD_AUTH_SECRET or a \
                  --config file with auth_secret"
            .into(),
    })?;
    if secret.len() < 32 {
        return Err(ConfigError::Invalid {
            key: "auth_secret",
            message: format!("{} bytes is too short; use at least 32", secret.len()),
        });
    }
    Ok(secret)
}

/// The token, key and certificate settings, taken out of `file`.
fn resolve_trust(
    args: &ServeArgs,
    file: &mut ServeArgs,
) -> Result<(AuthConfig, Option<(PathBuf, PathBuf)>), ConfigError> {
    let auth = AuthConfig {
        secrets: pick_list(&args.auth_secrets, &mut file.auth_secrets),
        public_keys: pick_list(&args.auth_public_keys, &mut file.auth_public_keys),
        jwks_url: args.auth_jwks_url.clone().or(file.auth_jwks_url.take()),
        leeway_secs: pick(args.auth_leeway, file.auth_leeway, 30),
        api_keys: pick_list(&args.api_keys, &mut file.api_keys),
        rooms: std::mem::take(&mut file.rooms),
    };
    let tls = match (
        args.tls_cert.clone().or(file.tls_cert.take()),
        args.tls_key.clone().or(file.tls_key.take()),
    ) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Invalid {
                key: "tls_cert/tls_key",
                message: "give both the certificate and its key, or neither".into(),
            });
        }
    };
    Ok((auth, tls))
}

/// The list from the flags if any were given, else the file's.
/// An address or a CIDR network (`127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`).
pub(crate) fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            format!("{text:?} is not an address or a CIDR network (e.g. 127.0.0.1 or 10.0.0.0/8)")
        })
}

fn pick_list<T: Clone>(flag: &[T], file: &mut Vec<T>) -> Vec<T> {
    if flag.is_empty() {
        std::mem::take(file)
    } else {
        flag.to_vec()
    }
}

/// The flag (or its environment variable, merged by clap), else the file's key, else the
/// default.
impl From<&ServeArgs> for limits::FlagLimits {
    fn from(args: &ServeArgs) -> Self {
        Self {
            connection_rate: args.connection_rate,
            queue_bytes: args.queue_bytes,
            max_rooms: args.max_rooms,
        }
    }
}

/// `--trusted-proxies`, else the file's `trusted_proxies`, each a CIDR or an address.
fn resolve_proxies(args: &ServeArgs, file: &mut ServeArgs) -> crate::auth::proxies::TrustedProxies {
    crate::auth::proxies::TrustedProxies::new(pick_list(
        &args.trusted_proxies,
        &mut file.trusted_proxies,
    ))
}

/// A duration in seconds where 0 turns the thing off; `default` when none is given.
fn off_or_secs(given: Option<u64>, default: Option<Duration>) -> Option<Duration> {
    match given {
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
        None => default,
    }
}

fn pick<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
    flag.or(file).unwrap_or(default)
}

/// The store asked for, else Redis when `--redis` is given (history lives there too), else
/// SQLite.
fn store_kind(given: Option<StoreKind>, redis: bool) -> StoreKind {
    match (given, redis) {
        (Some(store), _) => store,
        (None, true) => StoreKind::Redis,
        (None, false) => StoreKind::Sqlite,
    }
}

impl Config {
    /// Resolves flags and environment (already merged by clap) over the file over defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Self, ConfigError> {
        let mut file = match &args.config {
            Some(path) => ServeArgs::load(path)?,
            None => ServeArgs::default(),
        };
        let (auth, tls) = resolve_trust(args, &mut file)?;
        let secs = Duration::from_secs;
        let redis = args.redis.clone().or(file.redis.clone());
        let limits = Limits::resolve(args.into(), std::mem::take(&mut file.limits))?;
        let webhooks = resolve_webhooks(args, &mut file)?;
        // A setting given as a flag, else in the file, else its default (written here, once).
        macro_rules! pick {
            ($field:ident, $default:expr) => {
                pick(args.$field.clone(), file.$field.take(), $default)
            };
        }
        // A listener's address, `off`, or its default.
        macro_rules! listen {
            ($field:ident, $default:expr) => {
                args.$field
                    .or(file.$field)
                    .map_or($default.parse().ok(), |l| l.0)
            };
        }
        let trusted_proxies = resolve_proxies(args, &mut file);
        let config = Config {
            tcp: listen!(tcp, DEFAULT_TCP),
            udp: listen!(udp, DEFAULT_UDP),
            http: listen!(http, DEFAULT_HTTP),
            mqtt: listen!(mqtt, DEFAULT_MQTT),
            grpc: listen!(grpc, DEFAULT_GRPC),
            // A 64 KiB message and room for its topic and properties.
            mqtt_max_packet: pick!(mqtt_max_packet, 64 * 1024 + 1024),
            store: store_kind(args.store.or(file.store), redis.is_some()),
            data_dir: pick!(data_dir, PathBuf::from(DEFAULT_DATA_DIR)),
            redis,
            redis_prefix: pick!(redis_prefix, DEFAULT_REDIS_PREFIX.to_owned()),
            max_connections: pick!(max_connections, 100_000),
            max_connections_per_ip: pick!(max_connections_per_ip, 1_000),
            max_line_bytes: pick!(max_line_bytes, 64 * 1024),
            // 15 minutes, so that idle sockets cannot hold the descriptor budget for ever.
            idle_timeout: off_or_secs(args.idle_timeout.or(file.idle_timeout), Some(secs(900))),
            // 1,024 events is about a second of a busy room at 1,000 msg/s: enough to ride out
            // a scheduling hiccup, small enough that a stalled client is noticed quickly and
            // costs at most ~16 KiB of queue slots.
            queue_capacity: pick!(queue_capacity, 1024),
            line_flush: Duration::from_millis(pick!(line_flush_ms, 50)),
            udp_ttl: secs(pick!(udp_ttl, 60)),
            udp_max_in: pick!(udp_max_in, 64 * 1024),
            udp_max_out: pick!(udp_max_out, 1200),
            ws_max_message: pick!(ws_max_message, 64 * 1024),
            // The conformance suite sends messages up to 16 MiB to /echo.
            ws_echo_max_message: file.ws_echo_max_message.unwrap_or(16 * 1024 * 1024 + 1024),
            ws_ping_interval: secs(pick!(ws_ping_interval, 30)),
            ws_pong_timeout: secs(file.ws_pong_timeout_secs.unwrap_or(10)),
            ws_deflate: pick!(ws_deflate, true),
            allowed_origins: pick_list(&args.allowed_origins, &mut file.allowed_origins),
            history_max_messages: pick!(history_max_messages, 1_000),
            history_max_age: secs(pick!(history_max_age, 24 * 60 * 60)),
            sse_max_lifetime: off_or_secs(args.sse_max_lifetime.or(file.sse_max_lifetime), None),
            publish_rate: pick!(publish_rate, 20.0),
            publish_burst: pick!(publish_burst, 50.0),
            shutdown_grace: secs(5),
            auth,
            allow_anonymous: args.allow_anonymous || file.allow_anonymous,
            allowed_hosts: pick_list(&args.allowed_hosts, &mut file.allowed_hosts),
            trusted_proxies,
            proxy_protocol: args.proxy_protocol || file.proxy_protocol,
            tls,
            limits,
            webhooks,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return Err(ConfigError::Invalid {
                key: "proxy_protocol",
                message: "--proxy-protocol takes the PROXY header only from --trusted-proxies; \
                          name the proxies (e.g. --trusted-proxies 127.0.0.1)"
                    .into(),
            });
        }
        let positive = [
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_line_bytes", self.max_line_bytes),
            ("queue_capacity", self.queue_capacity),
            ("udp_max_in", self.udp_max_in),
            ("ws_max_message", self.ws_max_message),
            ("ws_echo_max_message", self.ws_echo_max_message),
            ("history_max_messages", self.history_max_messages),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                });
            }
        }
        self.validate_store()?;
        if !(64..=65_507).contains(&self.udp_max_out) {
            return Err(ConfigError::Invalid {
                key: "udp_max_out",
                message: format!(
                    "{} is outside 64..=65507 (the largest UDP payload)",
                    self.udp_max_out
                ),
            });
        }
        if !(self.publish_rate >= 0.0 && self.publish_burst >= 1.0) {
            return Err(ConfigError::Invalid {
                key: "publish_rate/publish_burst",
                message: "rate must be 0 or more and burst at least 1".into(),
            });
        }
        self.check_exposure()?;
        if !(64..=16 * 1024 * 1024).contains(&self.mqtt_max_packet) {
            return Err(ConfigError::Invalid {
                key: "mqtt_max_packet",
                message: "must be 64 bytes to 16 MiB".into(),
            });
        }
        let listeners = [self.tcp, self.udp, self.http, self.mqtt, self.grpc];
        if listeners.iter().all(Option::is_none) {
            return Err(ConfigError::Invalid {
                key: "tcp/udp/http/mqtt/grpc",
                message: "every listener is off; nothing to serve".into(),
            });
        }
        Ok(())
    }

    /// The store and Redis settings agree.
    fn validate_store(&self) -> Result<(), ConfigError> {
        match (self.store, &self.redis) {
            (StoreKind::Redis, None) => {
                return Err(ConfigError::Invalid {
                    key: "store",
                    message: "redis needs --redis URL (or SWITCHBOARD_REDIS)".into(),
                });
            }
            (StoreKind::Sqlite | StoreKind::Memory, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "store",
                    message: "with --redis, history lives in Redis so that every node can \
                              serve a resume; drop --store or set it to redis"
                        .into(),
                });
            }
            _ => {}
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            return Err(ConfigError::Invalid {
                key: "redis_prefix",
                message: "must be non-empty and without spaces".into(),
            });
        }
        Ok(())
    }
}

impl Config {
    /// Secure by default: a listener beyond loopback needs some authentication, or an
    /// explicit `--allow-anonymous`.
    fn check_exposure(&self) -> Result<(), ConfigError> {
        let exposed = [
            ("tcp", self.tcp),
            ("udp", self.udp),
            ("http", self.http),
            ("mqtt", self.mqtt),
            ("grpc", self.grpc),
        ]
        .into_iter()
        .find_map(|(name, addr)| addr.filter(|a| !a.ip().is_loopback()).map(|a| (name, a)));
        // An API key alone leaves anonymous clients free to do everything, so it does not
        // count here.
        let configured = self.auth.restricts_anonymous();
        match exposed {
            Some((name, addr)) if !configured && !self.allow_anonymous => {
                Err(ConfigError::Invalid {
                    key: "auth",
                    message: format!(
                        "{name} would listen on {addr}, beyond loopback, with no authentication: \
                         anyone who can reach it could read and write every room. Configure \
                         --auth-secret (or --auth-public-key, --auth-jwks-url, or [[rooms]] \
                         rules in a config file; an --api-key alone closes nothing to \
                         anonymous clients), or pass --allow-anonymous to serve it open on \
                         purpose"
                    ),
                })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(argv: &[&str]) -> ServeArgs {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let mut full = vec!["x"];
        full.extend_from_slice(argv);
        Wrap::parse_from(full).serve
    }

    /// Each flag's `[default: …]` in `--help` is what `resolve` gives with no flag and no
    /// file, so the help cannot drift from the defaults written in `resolve`; a new flag that
    /// names a default must be added here.
    #[test]
    fn the_help_says_the_defaults_resolve_gives() {
        use clap::Args;
        let d = Config::default();
        let secs = |t: Duration| t.as_secs().to_string();
        let off_or_secs = |t: Option<Duration>| t.map_or("0".to_owned(), secs);
        let addr = |a: Option<SocketAddr>| a.map_or("off".to_owned(), |a| a.to_string());
        let command = ServeArgs::augment_args(clap::Command::new("serve"));
        let mut checked = 0;
        for arg in command.get_arguments() {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let Some(at) = help.find("[default: ") else {
                continue;
            };
            let said = &help[at + "[default: ".len()..];
            let said = &said[..said.find(']').unwrap()];
            let id = arg.get_id().as_str();
            let given = match id {
                "tcp" => addr(d.tcp),
                "udp" => addr(d.udp),
                "http" => addr(d.http),
                "mqtt" => addr(d.mqtt),
                "grpc" => addr(d.grpc),
                "mqtt_max_packet" => {
                    assert_eq!(said, "65536 plus room for the topic");
                    assert!(d.mqtt_max_packet > 65536);
                    said.to_owned()
                }
                "store" => format!("{:?}", d.store).to_lowercase(),
                "data_dir" => format!("./{}", d.data_dir.display()),
                "redis_prefix" => d.redis_prefix.clone(),
                "max_connections" => d.max_connections.to_string(),
                "max_connections_per_ip" => d.max_connections_per_ip.to_string(),
                "max_line_bytes" => d.max_line_bytes.to_string(),
                "idle_timeout" => off_or_secs(d.idle_timeout),
                "queue_capacity" => d.queue_capacity.to_string(),
                "line_flush_ms" => d.line_flush.as_millis().to_string(),
                "udp_ttl" => secs(d.udp_ttl),
                "udp_max_in" => d.udp_max_in.to_string(),
                "udp_max_out" => d.udp_max_out.to_string(),
                "ws_max_message" => d.ws_max_message.to_string(),
                "ws_ping_interval" => secs(d.ws_ping_interval),
                "ws_deflate" => d.ws_deflate.to_string(),
                "sse_max_lifetime" => off_or_secs(d.sse_max_lifetime),
                "publish_rate" => d.publish_rate.to_string(),
                "publish_burst" => d.publish_burst.to_string(),
                "connection_rate" => d.limits.connection_rate.to_string(),
                "queue_bytes" => d.limits.queue_bytes.to_string(),
                "max_rooms" => d.limits.max_rooms.to_string(),
                "history_max_messages" => d.history_max_messages.to_string(),
                "history_max_age" => secs(d.history_max_age),
                "auth_leeway" => d.auth.leeway_secs.to_string(),
                "trusted_proxies" if d.trusted_proxies.is_empty() => "none".to_owned(),
                other => panic!("--{other} says [default: {said}]: check it here"),
            };
            assert_eq!(
                said, given,
                "--{id}'s help says one default, resolve gives another"
            );
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} defaults found in the help");
    }

    #[test]
    fn defaults_are_the_seeds_ports() {
        let c = Config::resolve(&args(&[])).unwrap();
        assert_eq!(c.tcp, Some("127.0.0.1:12345".parse().unwrap()));
        assert_eq!(c.http, Some("127.0.0.1:8000".parse().unwrap()));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(900)));
    }

    #[test]
    fn webhooks_need_a_secret_a_web_url_and_known_event_names() {
        let err = |argv: &[&str]| Config::resolve(&args(argv)).unwrap_err().to_string();
        assert!(err(&["--webhook", "http://127.0.0.1:9/h"]).contains("webhooks are signed"));
        let short = [
            "--webhook",
            "http://127.0.0.1:9/h",
            "--webhook-secret",
            "short",
        ];
        assert!(err(&short).contains("too short"));
        let secret = ["--webhook-secret", "0123456789abcdef"];
        for bad in ["ftp://example.com/h", "not a url", "unix:/run/hook.sock"] {
            let argv = [&["--webhook", bad][..], &secret[..]].concat();
            assert!(err(&argv).contains("webhooks"), "{bad}: {}", err(&argv));
        }
        let twice = [
            &["--webhook", "http://a.example/h,http://a.example/h"][..],
            &secret[..],
        ]
        .concat();
        assert!(err(&twice).contains("twice"));
        assert!(Config::resolve(&args(&[])).unwrap().webhooks.is_none());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.toml");
        let file = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Config::resolve(&args(&["--config", path.to_str().unwrap()]))
        };
        let c = file(
            "webhook_secret = \"0123456789abcdef\"\nwebhook_queue_max = 50\n\
             [[webhooks]]\nurl = \"https://hooks.example/a\"\nevents = [\"message\", \"room_vacated\"]\n\
             rooms = [\"chat.*\"]\n",
        )
        .unwrap();
        let hooks = c.webhooks.unwrap();
        assert_eq!(hooks.queue_max, 50);
        let e = &hooks.endpoints[0];
        assert_eq!(
            e.events,
            [
                self::webhooks::HookKind::Message,
                self::webhooks::HookKind::RoomVacated
            ]
        );
        assert!(e.rooms[0].matches("chat.dev") && !e.rooms[0].matches("lobby"));
        let unknown = file(
            "webhook_secret = \"0123456789abcdef\"\n[[webhooks]]\nurl = \"https://h.example/\"\nevents = [\"joined\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("unknown variant"), "{unknown}");

        // Each entry may sign with its own key; the shared one covers the rest, and an entry
        // with neither is named.
        let c = file(
            "webhook_secret = \"shared-secret-0123\"\n\
             [[webhooks]]\nurl = \"https://a.example/\"\nsecret = \"own-secret-of-a-0123\"\n\
             [[webhooks]]\nurl = \"https://b.example/\"\n",
        )
        .unwrap();
        let hooks = c.webhooks.unwrap();
        assert_eq!(hooks.endpoints[0].secret, "own-secret-of-a-0123");
        assert_eq!(hooks.endpoints[1].secret, "shared-secret-0123");
        let shown = format!("{hooks:?}");
        assert!(
            !shown.contains("own-secret") && !shown.contains("shared-secret"),
            "{shown}"
        );
        let unsigned = file(
            "[[webhooks]]\nurl = \"https://a.example/\"\nsecret = \"own-secret-of-a-0123\"\n\
             [[webhooks]]\nurl = \"https://b.example/\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(unsigned.contains("https://b.example/"), "{unsigned}");
        let short = file("[[webhooks]]\nurl = \"https://a.example/\"\nsecret = \"short\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            short.contains("too short") && short.contains("a.example"),
            "{short}"
        );
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.toml");
        std::fs::write(
            &path,
            "tcp = \"127.0.0.1:1000\"\nudp = \"off\"\nmax_line_bytes = 10\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = Config::resolve(&args(&["--config", p, "--tcp", "127.0.0.1:2000"])).unwrap();
        assert_eq!(c.tcp, Some("127.0.0.1:2000".parse().unwrap()));
        assert_eq!(c.udp, None);
        assert_eq!(c.max_line_bytes, 10);
        assert_eq!(c.queue_capacity, Config::default().queue_capacity);
    }

    #[test]
    fn the_file_takes_keys_not_flags_and_checks_each_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.toml");
        let resolve = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Config::resolve(&args(&["--config", path.to_str().unwrap()]))
        };
        // Flag-only settings have no key, and limits live under [limits].
        for text in ["config = \"other.toml\"\n", "connection_rate = 1.0\n"] {
            let err = resolve(text).unwrap_err().to_string();
            assert!(err.contains("unknown field"), "{text}: {err}");
        }
        let err = resolve("trusted_proxies = [\"10.0.0.0/8\", \"nope\"]\n").unwrap_err();
        assert!(err.to_string().contains("\"nope\""), "{err}");
        let config = resolve(
            "trusted_proxies = [\"127.0.0.1\"]\nallowed_origin = [\"https://a.example\"]\n\
             [limits]\nconnection_rate = 2.0\n",
        )
        .unwrap();
        assert!(config.trusted_proxies.trusts("127.0.0.1".parse().unwrap()));
        assert_eq!(config.allowed_origins, ["https://a.example"]);
        assert_eq!(config.limits.connection_rate, 2.0);
    }

    #[test]
    fn unknown_file_key_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.toml");
        std::fs::write(&path, "tpc = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::resolve(&args(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("tpc"), "{err}");
    }

    #[test]
    fn all_off_is_refused() {
        let err = Config::resolve(&args(&[
            "--tcp", "off", "--udp", "off", "--http", "off", "--mqtt", "off", "--grpc", "off",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("nothing to serve"));
    }

    #[test]
    fn listening_beyond_loopback_needs_auth_or_consent() {
        let err = Config::resolve(&args(&["--http", "0.0.0.0:8000"])).unwrap_err();
        assert!(err.to_string().contains("--allow-anonymous"), "{err}");
        assert!(Config::resolve(&args(&["--http", "0.0.0.0:8000", "--allow-anonymous"])).is_ok());
        let secret = "s".repeat(32);
        assert!(
            Config::resolve(&args(&["--http", "0.0.0.0:8000", "--auth-secret", &secret])).is_ok()
        );
    }

    #[test]
    fn room_rules_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.toml");
        std::fs::write(
            &path,
            "auth_secrets = [\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]\n\
             [[rooms]]\npattern = \"public.*\"\nanonymous = [\"subscribe\", \"publish\"]\n",
        )
        .unwrap();
        let c = Config::resolve(&args(&["--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(c.auth.rooms.len(), 1);
        assert_eq!(c.auth.secrets.len(), 1);
        std::fs::write(
            &path,
            "[[rooms]]\npattern = \"x\"\nanonymous = [\"write\"]\n",
        )
        .unwrap();
        let err = Config::resolve(&args(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("write"), "{err}");
    }

    #[test]
    fn bad_address_says_what_is_expected() {
        let err = "nonsense".parse::<Listen>().unwrap_err();
        assert!(err.contains("HOST:PORT"), "{err}");
    }
}
