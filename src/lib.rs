//! switchboard: a realtime messaging server that joins TCP, UDP, WebSocket, SSE, HTTP, MQTT
//! and gRPC clients in one hub of rooms.
//!
//! # Layout (docs/ARCHITECTURE.md has the whole map and its invariants)
//!
//! - `server`: binds the listeners (`server::Listener`), runs them, shuts down cleanly.
//! - `transport`, `http`, `grpc`: the edges; each lowers its input into `session::Request`s.
//! - `session`: one client whatever its transport (`Session`), or one request with no
//!   connection (`session::Caller`).
//! - `hub`: rooms, subscribers with bounded queues, fan-out of events encoded once.
//! - `wire`, `protocol`, `event`, `reply`: sans-IO encoders, parsers (MQTT's packets
//!   included), the event itself and a session's typed answers.
//! - `store`, `broker`: history behind the `History` seam; the cluster behind `Broker`.
//! - `auth`, `config`, `cli`, `webhook`, `metrics`, `client`: identity, settings, the command
//!   line, signed webhooks, Prometheus metrics, the terminal client.

pub mod auth;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod event;
#[doc(hidden)]
pub mod fuzz;
pub mod grpc;
mod http;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod reply;
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
    /// Listeners that could not be bound (address in use, no permission, ...): every one
    /// is tried first, so that one start names them all.
    #[error("{}", BindFailure::list(.0))]
    Bind(Vec<BindFailure>),
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

/// One listener that could not be bound, said with the flag that moves it.
#[derive(Debug)]
pub struct BindFailure {
    /// The listener, named as its flag: "tcp", "udp", "http", "mqtt" or "grpc".
    pub what: &'static str,
    /// The address asked for.
    pub addr: SocketAddr,
    /// The operating system's error.
    pub error: std::io::Error,
}

impl BindFailure {
    fn list(all: &[BindFailure]) -> String {
        let said: Vec<String> = all.iter().map(ToString::to_string).collect();
        said.join("; ")
    }
}

impl std::fmt::Display for BindFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { what, addr, error } = self;
        match error.kind() {
            std::io::ErrorKind::AddrInUse => write!(
                f,
                "--{what} {addr} is in use (another program, or another switchboard, listens \
                 there): pass --{what} ADDR or --{what} off"
            ),
            std::io::ErrorKind::PermissionDenied => write!(
                f,
                "--{what} {addr}: permission denied (ports below 1024 need privileges): pass \
                 --{what} ADDR"
            ),
            std::io::ErrorKind::AddrNotAvailable => write!(
                f,
                "--{what} {addr}: no interface of this machine has that address: pass --{what} \
                 ADDR"
            ),
            _ => write!(f, "--{what} {addr}: cannot listen there: {error}"),
        }
    }
}

/// Shorthand for results with the library's `Error`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
