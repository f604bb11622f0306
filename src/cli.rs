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
    /// Print a development token (JWT, HS256) signed with the server's secret.
    ///
    /// The secret comes from --auth-secret, SWITCHBOARD_AUTH_SECRET, or the first of
    /// `auth_secrets` in the --config file, as `serve` reads it.
    /// Example: switchboard token --sub alice --grant 'chat.*=subscribe,publish' --ttl 1h
    Token(TokenArgs),
    /// Terminal client: prints what arrives while you type; `exit` or end of input quits.
    ///
    /// URL schemes: tcp://HOST:PORT (chat or echo), tls://HOST:PORT (chat over TLS), wss://…,
    /// udp://HOST:PORT, ws://HOST:PORT/PATH.
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

/// Options of `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user's identity (the `sub` claim).
    #[arg(long)]
    pub sub: String,

    /// The name shown to others (the `name` claim) [default: the sub].
    #[arg(long)]
    pub name: Option<String>,

    /// Rooms and actions, as ROOM_PATTERN=action,action (repeatable); actions are
    /// subscribe, publish, history, presence; `*` in a pattern matches any run of characters.
    #[arg(long = "grant", value_name = "GRANT", value_parser = crate::auth::Grants::parse_one)]
    pub grants: Vec<(crate::auth::Pattern, crate::auth::Actions)>,

    /// Lifetime: seconds, or a number with s, m, h or d (e.g. 90s, 15m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: u64,

    /// The HS256 secret to sign with.
    #[arg(
        long,
        value_name = "SECRET",
        env = "SWITCHBOARD_AUTH_SECRET",
        hide_env_values = true
    )]
    pub auth_secret: Option<String>,

    /// TOML file whose `auth_secrets` holds the secret.
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_CONFIG")]
    pub config: Option<std::path::PathBuf>,
}

/// `90`, `90s`, `15m`, `1h`, `7d` as seconds.
fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with s, m, h or d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use s, m, h or d")),
    };
    match n.checked_mul(scale) {
        Some(secs) if secs > 0 => Ok(secs),
        _ => Err(format!("{text:?}: must be at least one second")),
    }
}

/// Options of `connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Where to connect: tcp://HOST:PORT, tls://HOST:PORT, udp://HOST:PORT, ws://HOST:PORT/PATH,
    /// http://HOST:PORT/events, or mqtt://[USER:TOKEN@]HOST:PORT/TOPIC (subscribes to TOPIC,
    /// which may hold + and #; typed lines are published to it).
    pub url: String,

    /// After end of input on UDP, keep printing replies for this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub linger_ms: u64,

    /// For tls:// and wss://: also trust the certificates in this PEM file (a self-signed
    /// server's).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// For tls:// and wss://: the name the server's certificate must carry, when it is not
    /// the URL's host (e.g. connecting to 127.0.0.1 when the certificate names chat.example).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}
