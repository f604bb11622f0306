//! The settings of `serve`, written once: each is a flag (with its `SWITCHBOARD_*`
//! environment variable) and a key of the TOML file, from the same field. The flags are
//! parsed by clap, the file by serde into the same struct (renamed keys say so; file-only
//! keys are `arg(skip)`, flag-only ones `serde(skip)`); `Config::resolve` merges the two
//! over the defaults.

use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::{Listen, StoreKind};
use crate::auth::RoomRule;

/// Options of `serve`, and the keys of its TOML file.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeArgs {
    /// TCP chat address, or `off` [default: 127.0.0.1:12345].
    #[arg(long, value_name = "ADDR", env = "SWITCHBOARD_TCP")]
    pub tcp: Option<Listen>,

    /// UDP chat address, or `off` [default: 127.0.0.1:12345].
    #[arg(long, value_name = "ADDR", env = "SWITCHBOARD_UDP")]
    pub udp: Option<Listen>,

    /// HTTP and WebSocket address, or `off` [default: 127.0.0.1:8000].
    #[arg(long, value_name = "ADDR", env = "SWITCHBOARD_HTTP")]
    pub http: Option<Listen>,

    /// MQTT 3.1.1 and 5.0 address, or `off` [default: 127.0.0.1:1883]. MQTT over WebSocket is
    /// at /mqtt on the HTTP listener.
    #[arg(long, value_name = "ADDR", env = "SWITCHBOARD_MQTT")]
    pub mqtt: Option<Listen>,

    /// gRPC address (service switchboard.v1.Switchboard, health and reflection), or `off`
    /// [default: 127.0.0.1:50051]. TLS with --tls-cert.
    #[arg(long, value_name = "ADDR", env = "SWITCHBOARD_GRPC")]
    pub grpc: Option<Listen>,

    /// Largest MQTT packet taken, in bytes [default: 65536 plus room for the topic].
    #[arg(long, value_name = "BYTES", env = "SWITCHBOARD_MQTT_MAX_PACKET")]
    pub mqtt_max_packet: Option<usize>,

    /// Where history is kept: sqlite (durable, under --data-dir), memory, or redis (implied
    /// by --redis) [default: sqlite].
    #[arg(long, value_enum, env = "SWITCHBOARD_STORE")]
    pub store: Option<StoreKind>,

    /// Directory of the durable store [default: ./switchboard-data].
    #[arg(long, value_name = "DIR", env = "SWITCHBOARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Share rooms with every node that uses this Redis: ids, order, history, presence
    /// (e.g. redis://127.0.0.1:6379).
    #[arg(long, value_name = "URL", env = "SWITCHBOARD_REDIS")]
    pub redis: Option<String>,

    /// Prefix of the Redis keys, so that several clusters can share one Redis
    /// [default: switchboard].
    #[arg(long, value_name = "PREFIX", env = "SWITCHBOARD_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,

    /// TOML file with settings; flags and environment variables override it.
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Connections across all transports at once [default: 100000].
    #[arg(long, value_name = "N", env = "SWITCHBOARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Connections from one IP address at once [default: 1000].
    #[arg(long, value_name = "N", env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,

    /// Longest TCP chat line in bytes [default: 65536].
    #[arg(long, value_name = "BYTES", env = "SWITCHBOARD_MAX_LINE_BYTES")]
    pub max_line_bytes: Option<usize>,

    /// TCP chat connections silent this long are told, and closed a minute later unless they
    /// send something; 0 = never [default: 900].
    #[arg(long, value_name = "SECS", env = "SWITCHBOARD_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,

    /// Events queued for one client before it is dropped as a slow consumer [default: 1024].
    #[arg(long, value_name = "N", env = "SWITCHBOARD_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,

    /// Deliver text sent without a newline after this pause [default: 50].
    #[arg(long, value_name = "MS", env = "SWITCHBOARD_LINE_FLUSH_MS")]
    pub line_flush_ms: Option<u64>,

    /// A silent UDP client leaves its room after this long [default: 60].
    #[arg(long, value_name = "SECS", env = "SWITCHBOARD_UDP_TTL")]
    pub udp_ttl: Option<u64>,

    /// Largest datagram accepted from a UDP client [default: 65536].
    #[arg(long, value_name = "BYTES", env = "SWITCHBOARD_UDP_MAX_IN")]
    pub udp_max_in: Option<usize>,

    /// Largest datagram sent to a UDP client [default: 1200].
    #[arg(long, value_name = "BYTES", env = "SWITCHBOARD_UDP_MAX_OUT")]
    pub udp_max_out: Option<usize>,

    /// Largest WebSocket chat message; larger ones close with 1009 [default: 65536].
    #[arg(long, value_name = "BYTES", env = "SWITCHBOARD_WS_MAX_MESSAGE")]
    pub ws_max_message: Option<usize>,

    /// Ping quiet WebSocket clients this often; 0 = never [default: 30].
    #[arg(long, value_name = "SECS", env = "SWITCHBOARD_WS_PING_INTERVAL")]
    pub ws_ping_interval: Option<u64>,

    /// Offer permessage-deflate compression to WebSocket clients [default: true].
    #[arg(long, value_name = "BOOL", env = "SWITCHBOARD_WS_DEFLATE")]
    pub ws_deflate: Option<bool>,

    /// End SSE streams after this long so clients reconnect and resume; 0 = never [default: 0].
    #[arg(long, value_name = "SECS", env = "SWITCHBOARD_SSE_MAX_LIFETIME")]
    pub sse_max_lifetime: Option<u64>,

    /// Publishes per second per user (or anonymous IP), every transport together; 0 =
    /// unlimited [default: 20].
    #[arg(long, value_name = "N", env = "SWITCHBOARD_PUBLISH_RATE")]
    pub publish_rate: Option<f64>,

    /// Publishes one user (or anonymous IP) may burst before the rate applies [default: 50].
    #[arg(long, value_name = "N", env = "SWITCHBOARD_PUBLISH_BURST")]
    pub publish_burst: Option<f64>,

    /// Publishes per second per connection (TCP, UDP, WebSocket); 0 = unlimited; more
    /// limits in the file's [limits] table (docs/PROTOCOL.md, "Limits") [default: 20].
    #[arg(long, value_name = "N", env = "SWITCHBOARD_CONNECTION_RATE")]
    #[serde(skip)]
    pub connection_rate: Option<f64>,

    /// Bytes waiting to be written to one client before it is cut as a slow consumer
    /// [default: 4194304].
    #[arg(long, value_name = "BYTES", env = "SWITCHBOARD_QUEUE_BYTES")]
    #[serde(skip)]
    pub queue_bytes: Option<usize>,

    /// Rooms that may exist at once [default: 100000].
    #[arg(long, value_name = "N", env = "SWITCHBOARD_MAX_ROOMS")]
    #[serde(skip)]
    pub max_rooms: Option<usize>,

    /// Most messages each room keeps for history and resume [default: 1000].
    #[arg(long, value_name = "N", env = "SWITCHBOARD_HISTORY_MAX_MESSAGES")]
    pub history_max_messages: Option<usize>,

    /// Oldest message each room keeps, in seconds [default: 86400].
    #[arg(long, value_name = "SECS", env = "SWITCHBOARD_HISTORY_MAX_AGE")]
    pub history_max_age: Option<u64>,

    /// A browser origin whose pages may open WebSockets, POST, and read the API's answers
    /// (CORS) (repeatable; `*` = any). The server's own host and localhost are always allowed;
    /// `null` (a page opened from disk) is allowed while HTTP listens on loopback.
    #[arg(
        long = "allowed-origin",
        value_name = "ORIGIN",
        env = "SWITCHBOARD_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    #[serde(rename = "allowed_origin")]
    pub allowed_origins: Vec<String>,

    /// HS256 secret that signs tokens (repeatable for rotation: every one verifies, the first
    /// signs `switchboard token`); at least 32 bytes. Turns authentication on.
    #[arg(
        long = "auth-secret",
        value_name = "SECRET",
        env = "SWITCHBOARD_AUTH_SECRET"
    )]
    #[serde(rename = "auth_secret")]
    pub auth_secrets: Vec<String>,

    /// RSA or EC public key (PEM file) that verifies RS256/ES256 tokens (repeatable).
    #[arg(
        long = "auth-public-key",
        value_name = "FILE",
        env = "SWITCHBOARD_AUTH_PUBLIC_KEY"
    )]
    #[serde(rename = "auth_public_key")]
    pub auth_public_keys: Vec<PathBuf>,

    /// URL of a JWKS document whose keys verify tokens (fetched only from here, refreshed
    /// every 5 minutes).
    #[arg(long, value_name = "URL", env = "SWITCHBOARD_AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,

    /// Clock skew forgiven on token exp/nbf, in seconds [default: 30].
    #[arg(long, value_name = "SECS", env = "SWITCHBOARD_AUTH_LEEWAY")]
    pub auth_leeway: Option<u64>,

    /// API key for backends, sent as `X-API-Key` (repeatable; comma-separated in the
    /// environment): publish under any name, no per-IP limit, every room, management calls.
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "SWITCHBOARD_API_KEYS",
        value_delimiter = ','
    )]
    #[serde(rename = "api_key")]
    pub api_keys: Vec<String>,

    /// POST signed webhooks here (repeatable; comma-separated in the environment): rooms
    /// occupied and vacated, members joined and left, messages. Per-event and per-room
    /// filters: `[[webhooks]]` in the config file. Needs --webhook-secret (or a `secret` per
    /// entry).
    #[arg(
        long = "webhook",
        value_name = "URL",
        env = "SWITCHBOARD_WEBHOOKS",
        value_delimiter = ','
    )]
    #[serde(skip)]
    pub webhooks: Vec<String>,

    /// Key of the HMAC-SHA256 signature on every webhook (`X-Switchboard-Signature`), at
    /// least 16 bytes; a `[[webhooks]]` entry of the config file may have its own `secret`.
    #[arg(long, value_name = "SECRET", env = "SWITCHBOARD_WEBHOOK_SECRET")]
    pub webhook_secret: Option<String>,

    /// Listen beyond loopback with no authentication configured (everyone may read and
    /// write every room).
    #[arg(long, env = "SWITCHBOARD_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// Host name the HTTP listener answers to besides loopback names, while it listens on
    /// loopback (repeatable); other Host headers get 421, against DNS rebinding.
    #[arg(
        long = "allowed-host",
        value_name = "HOST",
        env = "SWITCHBOARD_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    #[serde(rename = "allowed_host")]
    pub allowed_hosts: Vec<String>,

    /// Reverse proxies whose word on the client's address is taken: addresses or CIDR
    /// networks, comma-separated (e.g. 127.0.0.1,10.0.0.0/8). From them, HTTP's `Forwarded` or
    /// `X-Forwarded-For` names the client (the rightmost hop that is not one of them), and
    /// with --proxy-protocol so does the PROXY header on the TCP chat, MQTT and gRPC
    /// listeners. Limits, logs, presence and webhooks then see each client. [default: none]
    #[arg(
        long,
        value_name = "CIDR",
        env = "SWITCHBOARD_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = super::parse_net
    )]
    #[serde(deserialize_with = "nets")]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Connections from --trusted-proxies to the TCP chat, MQTT and gRPC listeners start with
    /// a PROXY protocol header (v1 or v2, as HAProxy and nginx's `proxy_protocol on` send),
    /// which names the client. Other peers are served as they are.
    #[arg(long, env = "SWITCHBOARD_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// TLS certificate chain (PEM): HTTP becomes HTTPS and WSS (HTTP/2 offered by ALPN), and
    /// the TCP chat listener speaks TLS. Reloaded on SIGHUP.
    #[arg(
        long,
        value_name = "FILE",
        env = "SWITCHBOARD_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The certificate's private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "SWITCHBOARD_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    // The keys only the file has (docs/CONFIG.md lists them from `cli::file_only`).
    /// Seconds a WebSocket client has to answer a ping.
    #[arg(skip)]
    pub ws_pong_timeout_secs: Option<u64>,
    /// Largest message on `/echo`, in bytes.
    #[arg(skip)]
    pub ws_echo_max_message: Option<usize>,
    /// `[[rooms]]`: who may do what where no token grant applies.
    #[arg(skip)]
    pub rooms: Vec<RoomRule>,
    /// `[limits]`.
    #[arg(skip)]
    pub(super) limits: super::limits::FileLimits,
    /// Events one webhook endpoint may have queued.
    #[arg(skip)]
    pub webhook_queue_max: Option<usize>,
    /// Bytes of events one webhook endpoint may have queued.
    #[arg(skip)]
    pub webhook_queue_max_bytes: Option<usize>,
    /// `[[webhooks]]`: receivers with their filters and secrets.
    #[arg(skip)]
    #[serde(rename = "webhooks")]
    pub(super) hooks: Vec<super::FileWebhook>,
}

/// The file's `trusted_proxies`: each an address or a CIDR network.
fn nets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    list.iter()
        .map(|n| super::parse_net(n).map_err(serde::de::Error::custom))
        .collect()
}
