//! Command-line definitions (clap derive). Parsing only; `main.rs` acts on them.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Listen;
pub use crate::config::ServeArgs;

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
