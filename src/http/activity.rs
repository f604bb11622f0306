//! What a connection is doing: its requests in flight (from when one arrives until its answer's
//! body is dropped, so an SSE stream or a long-poll counts for as long as it lasts). Two
//! things use it. An HTTP/2 connection with nothing in flight for the idle time is closed
//! (HTTP/1.1's keep-alive already is, by hyper's header timeout; an h2 connection with no
//! streams was held for as long as the client answered pings). And each HTTP/2 request holds a
//! place in the per-address HTTP cap, so 128 streams on each of a few connections cannot
//! carry more requests from one address than that many connections could.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::transport::limits::Permit;

/// One connection's requests in flight.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// When the count last fell to zero.
    idle_since: Mutex<Instant>,
    /// Told when the count falls to zero.
    idled: Notify,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            idled: Notify::new(),
        })
    }

    /// A request arrived; it is in flight until the guard (kept by its answer's body,
    /// `unsent::ConnectionBudget::carry`) is dropped.
    /// `permit` is its place in the per-address cap, if it holds one.
    pub(crate) fn begin(self: &Arc<Self>, permit: Option<Permit>) -> Active {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Active {
            activity: Arc::clone(self),
            _permit: permit,
        }
    }

    /// Resolves once nothing has been in flight for `limit`.
    pub(crate) async fn idle_for(&self, limit: Duration) {
        loop {
            let notified = self.idled.notified();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
                let deadline = since + limit;
                if Instant::now() >= deadline {
                    if self.in_flight.load(Ordering::Acquire) == 0 {
                        return;
                    }
                    continue;
                }
                tokio::time::sleep_until(deadline).await;
            } else {
                notified.await;
            }
        }
    }
}

/// A request in flight; dropping it ends it.
#[derive(Debug)]
pub(crate) struct Active {
    activity: Arc<Activity>,
    _permit: Option<Permit>,
}

impl Drop for Active {
    fn drop(&mut self) {
        let activity = &self.activity;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *activity
                .idle_since
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Instant::now();
            activity.idled.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::response::Response;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_the_last_answer_is_gone() {
        let activity = Activity::new();
        let limit = Duration::from_secs(10);
        let answer = crate::http::guarded::keep_until_sent(
            Response::new(Body::from("x")),
            activity.begin(None),
        );
        let idle = tokio::time::timeout(Duration::from_secs(60), activity.idle_for(limit));
        tokio::pin!(idle);
        // Busy: not idle however long it lasts.
        assert!(
            tokio::time::timeout(Duration::from_secs(30), &mut idle)
                .await
                .is_err()
        );
        let dropped = Instant::now();
        drop(answer);
        idle.await.expect("idle once the answer is gone");
        assert!(dropped.elapsed() >= limit);
    }
}
