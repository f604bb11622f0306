//! The context every connection shares: the hub, the configuration, the limits, the shutdown
//! signal and the task tracker. Transports and HTTP handlers import this, not `server`, so
//! that `server` (which wires them together) is imported by nothing below it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::hub::Hub;
use crate::transport::limits::{Limiter, RateLimiter};

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) hub: Arc<Hub>,
    pub(crate) config: Config,
    pub(crate) limiter: Arc<Limiter>,
    /// Token buckets for HTTP publishers, per IP.
    pub(crate) publish_rate: RateLimiter,
    /// Cancelled once, when the server starts shutting down.
    pub(crate) shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
}
