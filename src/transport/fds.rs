//! File descriptors: the process's limit raised to what it may have, a budget for sockets
//! under it, and one spare descriptor held back for refusing connections when it runs out.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;

/// Accept errors are logged at most once in this long; the rest are counted.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Raises the soft limit on open files to the hard one and returns it (the budget every
/// socket cap is checked against); `None` where it cannot be read.
pub fn raise_limit() -> Option<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().ok()?;
    if soft < hard && rlimit::Resource::NOFILE.set(hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// True for "too many open files" in this process (EMFILE) or system-wide (ENFILE).
pub(crate) fn is_exhausted(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(23 | 24))
}

/// One descriptor (on /dev/null) kept open so that it can be given up to accept a
/// connection when every other one is in use.
#[derive(Debug)]
pub(crate) struct Reserve(Mutex<Option<std::fs::File>>);

/// The process's spare descriptor.
pub(crate) static RESERVE: Reserve = Reserve(Mutex::new(None));

impl Reserve {
    /// Opens the spare descriptor if it is not held (at start, and after `shed`).
    pub(crate) fn hold(&self) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = std::fs::File::open("/dev/null").ok();
        }
    }

    /// Frees the spare, accepts one waiting connection and closes it at once (the client
    /// sees its connection end instead of waiting in the backlog), then takes the spare
    /// back.
    pub(crate) fn shed(&self, listener: &TcpListener) {
        let spare = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(spare);
        use futures_util::FutureExt as _;
        if let Some(Ok((stream, addr))) = listener.accept().now_or_never() {
            crate::metrics::METRICS.refuse("out_of_descriptors");
            tracing::debug!(%addr, "out of file descriptors: connection closed at once");
            drop(stream);
        }
        self.hold();
    }
}

static LAST_LOG_MS: AtomicU64 = AtomicU64::new(0);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Logs an accept error unless one was logged in the last `ACCEPT_LOG_EVERY`.
pub(crate) fn log_accept_error(error: &std::io::Error, backoff: Duration) {
    let now = crate::event::now_ms();
    let last = LAST_LOG_MS.load(Ordering::Relaxed);
    let due = now.saturating_sub(last) >= ACCEPT_LOG_EVERY.as_millis() as u64;
    if due
        && LAST_LOG_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
        tracing::warn!(%error, ?backoff, suppressed, "accept failed; retrying");
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
}
