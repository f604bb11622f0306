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
    /// variable, the TOML file given by --config (the flags' names in snake_case; docs/CONFIG.md),
    /// the default.
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
    /// `auth_secret` in the --config file, as `serve` reads it.
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

    /// TOML file whose `auth_secret` holds the secret.
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

/// The settings only the config file has (no flag): key, default (from the code's own
/// defaults), meaning. `[limits]` keys are written with their table.
fn file_only() -> Vec<(&'static str, String, &'static str)> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve is a subcommand");
    // A limit that has a flag is listed with its flag.
    let flagged: Vec<String> = serve
        .get_arguments()
        .filter_map(|arg| toml_key(arg.get_long()?))
        .collect();
    let mut rows = file_only_settings();
    rows.extend(
        crate::config::Limits::reference()
            .into_iter()
            .filter(|(key, ..)| !flagged.iter().any(|f| f == key)),
    );
    rows
}

/// `file_only`'s top-level keys.
fn file_only_settings() -> Vec<(&'static str, String, &'static str)> {
    let c = crate::config::Config::default();
    vec![
        (
            "ws_pong_timeout_secs",
            c.ws_pong_timeout.as_secs().to_string(),
            "Seconds a WebSocket client has to answer a ping before it is dropped.",
        ),
        (
            "ws_echo_max_message",
            c.ws_echo_max_message.to_string(),
            "Largest message on `/echo` (the Autobahn endpoint), in bytes.",
        ),
        (
            "webhook_queue_max",
            crate::config::WEBHOOK_QUEUE_MAX.to_string(),
            "Events one webhook endpoint may have queued.",
        ),
        (
            "webhook_queue_max_bytes",
            crate::config::WEBHOOK_QUEUE_MAX_BYTES.to_string(),
            "Bytes of events one webhook endpoint may have queued (at least 1 MiB).",
        ),
        (
            "[[rooms]] pattern, anonymous, users",
            "none".into(),
            "Who may do what where no token grant applies: a room pattern (`*`, `public.*`), the \
         actions of anonymous clients and of signed-in users (subscribe, publish, history, \
         presence). First match wins.",
        ),
        (
            "[[webhooks]] url, events, rooms, secret",
            "none".into(),
            "A webhook receiver, with the events and rooms it wants and its own signing key \
         (`--webhook URL` adds one for everything).",
        ),
    ]
}

/// The TOML key of a `serve` flag: its name in snake_case, under `[limits]` for the limits
/// that have flags; `None` for flags with no key (the file's own name, the log settings,
/// `--webhook`, which is a `[[webhooks]]` entry in the file).
pub fn toml_key(long: &str) -> Option<String> {
    match long {
        "config" | "log" | "log-format" | "webhook" => None,
        "connection-rate" | "queue-bytes" | "max-rooms" => {
            Some(format!("limits.{}", long.replace('-', "_")))
        }
        _ => Some(long.replace('-', "_")),
    }
}

/// `docs/CONFIG.md`: every setting of `serve` once, made from the flags' own definitions (so
/// a new flag cannot be left out) and `FILE_ONLY`. A test keeps the file equal to this.
pub fn config_reference() -> String {
    use clap::CommandFactory;
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve is a subcommand");
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Made by `switchboard::cli::config_reference` (src/cli.rs); tests/cli.rs checks that \
         this file is its output. After changing a flag, run\n\
         `UPDATE_CONFIG_DOC=1 cargo test --test cli config_reference` to write it again. -->\n\n\
         Every setting of `switchboard serve`: its flag, its environment variable, its key in the \
         TOML file given by `--config`, its default and what it does. Precedence: flag > \
         environment > file > default. Lists are comma-separated in flags and environment \
         variables and TOML arrays in the file. A relative path in the file is relative to the \
         file. Keys renamed to match their flags still work under their old names, with a \
         warning at start: ",
    );
    let renamed: Vec<String> = crate::config::RENAMED_KEYS
        .iter()
        .map(|(old, new)| format!("`{old}` → `{new}`"))
        .collect();
    out.push_str(&renamed.join(", "));
    out.push_str(
        ".\n\n| flag | environment | TOML key | default | meaning |\n|---|---|---|---|---|\n",
    );
    let mut args: Vec<&clap::Arg> = cli
        .get_arguments()
        .chain(serve.get_arguments())
        .filter(|a| a.get_long().is_some() && !a.is_hide_set())
        .collect();
    args.dedup_by_key(|a| a.get_long());
    for arg in args {
        out.push_str(&flag_row(arg));
    }
    out.push_str("\nOnly in the file:\n\n| TOML key | default | meaning |\n|---|---|---|\n");
    for (key, default, meaning) in file_only() {
        out.push_str(&format!("| `{key}` | {default} | {} |\n", cell(meaning)));
    }
    out
}

/// One flag's row of `docs/CONFIG.md`: flag, environment variable, TOML key, default (from
/// the help text's `[default: X]`, else clap's) and meaning.
fn flag_row(arg: &clap::Arg) -> String {
    let long = arg.get_long().unwrap_or_default();
    let help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(ToString::to_string)
        .unwrap_or_default();
    let help = help.split("\n\n").next().unwrap_or("").replace('\n', " ");
    // A default written into the help text: `… [default: X] …`.
    let written = help.find("[default: ").and_then(|start| {
        let end = start + help[start..].find(']')?;
        let meaning = format!("{}{}", help[..start].trim_end(), &help[end + 1..]);
        Some((meaning, help[start + 10..end].to_owned()))
    });
    let (meaning, default) = match written {
        Some((meaning, default)) => (meaning.trim().to_owned(), default),
        None => {
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let default = if defaults.is_empty() {
                if arg.get_action().takes_values() {
                    "none".to_owned()
                } else {
                    "off".to_owned()
                }
            } else {
                defaults.join(",")
            };
            (help.trim().to_owned(), default)
        }
    };
    let value = arg
        .get_value_names()
        .and_then(|v| v.first())
        .filter(|_| arg.get_action().takes_values())
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    let env = arg
        .get_env()
        .map(|e| format!("`{}`", e.to_string_lossy()))
        .unwrap_or_else(|| "—".into());
    let key = toml_key(long)
        .map(|k| format!("`{k}`"))
        .unwrap_or_else(|| "—".into());
    format!(
        "| `--{long}{value}` | {env} | {key} | {} | {} |\n",
        cell(&default),
        cell(&meaning)
    )
}

/// Text for a table cell: pipes escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}
