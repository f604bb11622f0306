//! Command-line definitions (clap derive). Parsing only; `main.rs` acts on them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Listen;

/// A realtime messaging server: TCP, UDP, WebSocket, SSE and HTTP joined in one hub of rooms.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, propagate_version = true)]
pub struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SWITCHBOARD_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info`, `debug`, `switchboard=trace` (RUST_LOG syntax).
    #[arg(long, global = true, default_value = "info", env = "SWITCHBOARD_LOG")]
    pub log: String,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the chat server: TCP and UDP chat, HTTP and WebSocket, all on one hub.
    ///
    /// Every setting comes from, in order of precedence: its flag, its SWITCHBOARD_* environment
    /// variable, the TOML file given by --config (same names, in snake_case; see README), the default.
    Serve(Box<ServeArgs>),
    /// Run the seed's echo server: returns exactly the bytes it receives (TCP and UDP).
    EchoServer(EchoArgs),
    /// Load generator: many WebSocket, TCP or SSE clients against a server; reports
    /// throughput, latency, and the server's CPU and memory. Runs `switchboard-bench`
    /// (its own crate) from beside this binary; `switchboard bench --help` lists its options.
    #[command(disable_help_flag = true)]
    Bench(BenchArgs),
    /// Terminal client: prints what arrives while you type; `exit` or end of input quits.
    ///
    /// URL schemes: tcp://HOST:PORT (chat or echo), udp://HOST:PORT, ws://HOST:PORT/PATH.
    Connect(ConnectArgs),
}

/// Options of `serve`.
#[derive(Debug, Args)]
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

    /// Where history is kept: sqlite (durable, under --data-dir), memory, or redis (implied
    /// by --redis) [default: sqlite].
    #[arg(long, value_enum, env = "SWITCHBOARD_STORE")]
    pub store: Option<crate::config::StoreKind>,

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

    /// Close TCP chat connections silent this long; 0 = never [default: 0].
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

    /// HTTP publishes per second per client IP; 0 = unlimited [default: 20].
    #[arg(long, value_name = "N", env = "SWITCHBOARD_PUBLISH_RATE")]
    pub publish_rate: Option<f64>,

    /// HTTP publishes one client IP may burst before the rate applies [default: 50].
    #[arg(long, value_name = "N", env = "SWITCHBOARD_PUBLISH_BURST")]
    pub publish_burst: Option<f64>,

    /// Most messages each room keeps for history and resume [default: 1000].
    #[arg(long, value_name = "N", env = "SWITCHBOARD_HISTORY_MAX_MESSAGES")]
    pub history_max_messages: Option<usize>,

    /// Oldest message each room keeps, in seconds [default: 86400].
    #[arg(long, value_name = "SECS", env = "SWITCHBOARD_HISTORY_MAX_AGE")]
    pub history_max_age: Option<u64>,

    /// A browser origin allowed to open WebSockets (repeatable; `*` = any). The server's own
    /// host and localhost are always allowed; `null` (a page opened from disk) is allowed while
    /// HTTP listens on loopback.
    #[arg(
        long = "allowed-origin",
        value_name = "ORIGIN",
        env = "SWITCHBOARD_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
}

/// Options of `echo-server`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// TCP echo address, or `off`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:12345")]
    pub tcp: Listen,

    /// UDP echo address, or `off`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:12345")]
    pub udp: Listen,
}

/// Arguments of `bench`, handed to `switchboard-bench` unchanged.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Options and target of the load generator (see `switchboard bench --help`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<std::ffi::OsString>,
}

/// Options of `connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Where to connect: tcp://HOST:PORT or udp://HOST:PORT.
    pub url: String,

    /// After end of input on UDP, keep printing replies for this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub linger_ms: u64,
}
