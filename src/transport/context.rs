//! The context every connection shares: the hub, the configuration, the limits, the shutdown
//! signal and the task tracker. Transports, HTTP handlers and gRPC calls import this, not
//! `server`, so that `server` (which wires them together) is imported by nothing below it. It
//! lives in `transport` because it holds transport state (the connection limiters, MQTT's
//! client ids): outside, the two would import each other.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::hub::Hub;
use crate::transport::limits::Limiter;

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) hub: Arc<Hub>,
    pub(crate) config: Config,
    /// Sessions (every transport's clients), in total and per IP.
    pub(crate) limiter: Arc<Limiter>,
    /// HTTP connections, in total and per IP, whatever they carry.
    pub(crate) http_limiter: Arc<Limiter>,
    /// Accepted TCP sockets on every listener, within the process's file limit.
    pub(crate) sockets: Arc<Limiter>,
    /// Cancelled once, when the server starts shutting down.
    pub(crate) shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    /// MQTT client ids, parked sessions and retained messages.
    pub(crate) mqtt: crate::transport::mqtt::state::Mqtt,
}
