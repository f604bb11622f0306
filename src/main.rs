//! The `switchboard` binary: parse the command line, set up logging, call the library.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use switchboard::cli::{Cli, Command, LogFormat};
use switchboard::config::Config;
use switchboard::server::{Server, shutdown_signal};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Bench(args) = &cli.command {
        return run_bench(&args.args);
    }
    init_logging(cli.log_format, &cli.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: a cause whose words its parent already
/// carries (`Connection refused (os error 111): Connection refused (os error 111)`) is left
/// out.
fn report(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let config = Config::resolve(&args)?;
            let server = Server::bind(config).await?;
            server.run(shutdown_signal()).await?;
        }
        Command::EchoServer(args) => {
            let config = Config {
                tcp: args.tcp.0,
                udp: args.udp.0,
                http: None,
                mqtt: None,
                ..Config::default()
            };
            anyhow::ensure!(
                config.tcp.is_some() || config.udp.is_some(),
                "both --tcp and --udp are off; nothing to serve"
            );
            let server = Server::bind_echo(config).await?;
            server.run(shutdown_signal()).await?;
        }
        Command::Bench(_) => unreachable!("handled in main"),
        Command::Token(args) => {
            let secret =
                switchboard::config::signing_secret(args.auth_secret, args.config.as_deref())?;
            let mut grants = switchboard::auth::Grants::default();
            for (pattern, actions) in args.grants {
                grants.push(pattern, actions);
            }
            let token = switchboard::auth::sign(
                &secret,
                &args.sub,
                args.name.as_deref(),
                &grants,
                args.ttl,
            )
            .map_err(anyhow::Error::msg)?;
            println!("{token}");
        }
        Command::Connect(args) => {
            switchboard::client::connect(
                &args.url,
                Duration::from_millis(args.linger_ms),
                switchboard::client::TlsOptions {
                    ca: args.tls_ca.as_deref(),
                    server_name: args.tls_server_name.as_deref(),
                },
            )
            .await
            .with_context(|| format!("connect {}", args.url))?;
        }
    }
    Ok(())
}

/// `switchboard bench ARGS`: runs the load generator, `switchboard-bench`, from beside this
/// binary (or from PATH), so that the server carries none of its dependencies.
fn run_bench(args: &[std::ffi::OsString]) -> ExitCode {
    const NAME: &str = "switchboard-bench";
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(NAME)))
        .filter(|path| path.is_file());
    let program = beside.unwrap_or_else(|| NAME.into());
    match std::process::Command::new(&program).args(args).status() {
        // The generator has said what went wrong; pass its exit code on.
        Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!(
                "switchboard: cannot run {}: {e} (build it with `cargo build --release -p {NAME}`)",
                program.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// jemalloc rather than glibc's malloc, for memory per connection. Every WebSocket connection
/// allocates a 64 KiB read buffer and a 16 KiB write buffer (sizes fixed by sockudo-ws).
/// glibc puts such chunks in its heap with a header in front of each, so the header writes
/// alone make several pages resident per connection: 14.6 KiB for an idle `/echo` connection.
/// jemalloc keeps its metadata apart from large allocations, so untouched buffer pages stay
/// unbacked: 3.7 KiB for the same connection, with the same throughput
/// (`docs/PERFORMANCE.md`, "Memory per connection").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
