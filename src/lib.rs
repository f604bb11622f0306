//! switchboard: a realtime messaging server that joins TCP, UDP, WebSocket, SSE and HTTP
//! clients in one hub of rooms.
//!
//! # Layout
//!
//! - `cli`, `config`: command line and the resolved `Config` (flag > env > file > default).
//! - `protocol`: sans-IO framing and parsing (lines, chat commands, names); no tokio.
//! - `hub`: rooms, subscribers with bounded queues, events encoded once and shared.
//! - `store`: room history behind the `History` seam (memory, SQLite, Redis), and the Redis
//!   bus that lets several nodes share rooms.
//! - `transport`: TCP chat, UDP chat, echo; thin adapters between sockets and the hub.
//! - `http`: the axum router.
//! - `metrics`: Prometheus counters and gauges behind `/metrics`.
//! - `server`: binds listeners, runs them, shuts down cleanly.
//! - `client`: the terminal client behind `switchboard connect`.

pub mod auth;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub(crate) mod context;
pub mod event;
#[doc(hidden)]
pub mod fuzz;
pub mod grpc;
mod http;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod session;
pub mod store;
pub mod transport;
pub mod webhook;
pub mod wire;

use std::net::SocketAddr;

pub use config::Config;
pub use server::{Addrs, Server};

/// Errors from starting or running a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound (address in use, no permission, ...).
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// "tcp", "udp" or "http".
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The webhook queue could not be opened.
    #[error(transparent)]
    Webhooks(#[from] webhook::QueueError),
}

/// Shorthand for results with the library's `Error`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
