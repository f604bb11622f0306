//! `switchboard-bench`: the load generator. Also reached as `switchboard bench`, which runs
//! this binary from beside its own.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser};
use switchboard_bench::{Mode, Options};

/// Load generator for switchboard: opens connections, publishes, and reports deliveries per
/// second, latency percentiles and the server's CPU and memory. Loopback targets only unless
/// --allow-remote.
#[derive(Debug, Parser)]
#[command(name = "switchboard bench", bin_name = "switchboard bench", version)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

/// Options of `bench`.
#[derive(Debug, Args)]
struct BenchArgs {
    /// Target: ws://HOST:PORT/ws?room=bench, tcp://HOST:PORT/bench,
    /// http://HOST:PORT/events?room=bench (SSE listeners; publishers POST to the room) or
    /// mqtt://HOST:PORT/bench (any MQTT broker, QoS 0) or grpc://HOST:PORT/ROOM (a Chat stream each) for broadcast; ws://HOST:PORT/echo or the echo-server's tcp://HOST:PORT for echo.
    url: String,

    /// broadcast: publishers' messages reach every connection; echo: each waits for its copy.
    #[arg(long, value_enum, default_value_t = Mode::Broadcast)]
    mode: Mode,

    /// Connections to open.
    #[arg(long, short = 'c', default_value_t = 100)]
    connections: usize,

    /// Publishing connections (broadcast mode; with SSE, extra HTTP connections).
    #[arg(long, short = 'p', default_value_t = 10)]
    publishers: usize,

    /// Messages per second across all publishers; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0)]
    rate: u64,

    /// Messages one publisher may have in flight when --rate is 0.
    #[arg(long, default_value_t = 32)]
    window: usize,

    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    duration: u64,

    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,

    /// Payload bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,

    /// Spread connections over this many source addresses (127.0.0.1, .2, …) so that more
    /// than ~28k fit in the ephemeral port range.
    #[arg(long, default_value_t = 4)]
    sources: u8,

    /// The server's pid: report its CPU time per delivery and memory per connection.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,

    /// Allow a target that is not on this machine.
    #[arg(long)]
    allow_remote: bool,

    /// No progress bar (there is none anyway when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,

    /// SSE targets: publish over WebSocket to this ws://HOST:PORT/ws?room=ROOM (the same room)
    /// instead of with HTTP POSTs, to measure SSE's own delivery cost.
    #[arg(long, value_name = "URL")]
    publish_ws: Option<String>,
}

fn main() -> ExitCode {
    let args = Cli::parse().args;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let report = switchboard_bench::run(Options {
        url: args.url,
        mode: args.mode,
        connections: args.connections,
        publishers: args.publishers,
        rate: args.rate,
        window: args.window,
        duration: Duration::from_secs(args.duration),
        warmup: Duration::from_secs(args.warmup),
        size: args.size,
        sources: args.sources,
        server_pid: args.server_pid,
        allow_remote: args.allow_remote,
        progress: !args.no_progress,
        publish_ws: args.publish_ws,
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// jemalloc, as in the server: the generator ran inside the server binary until it got its own
/// crate, and its SSE clients allocate per event, so glibc's malloc would change what it
/// measures (its CPU shares the machine's two cores with the server).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
