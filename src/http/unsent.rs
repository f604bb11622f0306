//! A budget for answers built but not yet sent. A handler builds its answer whole (a history
//! page holds up to `reply_bytes`), and it waits in memory until the client takes it: over
//! HTTP/2 a client that grants no flow-control window can ask for 128 pages per connection and
//! read none (measured before this: 10 such connections, +1.3 GB; 13 under a 3 GiB limit, the
//! server aborted). Each answer of a known size holds its bytes against its connection's
//! budget, its address's and the server's until its body is dropped (sent, or its stream or
//! connection gone); an answer that does not fit is replaced by `503 unsent_full`, which is a
//! few bytes. Streams of unknown size (SSE, WebSocket) have bounds of their own.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::HttpBody;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;

use super::AppError;

/// Unsent answer bytes one connection may hold.
pub(crate) const PER_CONNECTION: usize = 8 * 1024 * 1024;
/// Unsent answer bytes all connections from one address may hold.
pub(crate) const PER_ADDRESS: usize = 32 * 1024 * 1024;
/// Unsent answer bytes the server may hold in all.
pub(crate) const IN_ALL: usize = 512 * 1024 * 1024;

/// The server's and every address's unsent bytes (one per HTTP listener's `Context`).
#[derive(Debug, Default)]
pub(crate) struct Unsent {
    total: Arc<AtomicUsize>,
    per_address: Arc<DashMap<IpAddr, usize>>,
}

/// One connection's share of the budget: what it holds now.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionBudget {
    held: Arc<AtomicUsize>,
    unsent: Arc<Unsent>,
}

impl Unsent {
    /// The budget of a new connection.
    pub(crate) fn connection(self: &Arc<Self>) -> ConnectionBudget {
        ConnectionBudget {
            held: Arc::default(),
            unsent: Arc::clone(self),
        }
    }
}

/// Adds `n` to `counter` if it stays within `cap`.
fn take(counter: &AtomicUsize, n: usize, cap: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            (held + n <= cap).then_some(held + n)
        })
        .is_ok()
}

impl ConnectionBudget {
    /// Holds `n` bytes on the connection, the client's address and the server, or none.
    fn hold(&self, ip: IpAddr, n: usize) -> Option<Held> {
        if !take(&self.held, n, PER_CONNECTION) {
            return None;
        }
        let mut address = self.unsent.per_address.entry(ip).or_insert(0);
        if *address + n > PER_ADDRESS || !take(&self.unsent.total, n, IN_ALL) {
            drop(address);
            self.held.fetch_sub(n, Ordering::AcqRel);
            self.unsent.per_address.remove_if(&ip, |_, held| *held == 0);
            return None;
        }
        *address += n;
        Some(Held {
            budget: self.clone(),
            ip,
            n,
        })
    }

    /// The answer to the client at `ip`, holding its size until its body is dropped; or
    /// `503 unsent_full` when it does not fit. `guard` (the request's `activity::Active`) is
    /// kept by the same body, so an answer is wrapped once.
    pub(crate) fn carry<G: Send + Unpin + 'static>(
        &self,
        ip: IpAddr,
        response: Response,
        guard: G,
    ) -> Response {
        let grpc = response
            .extensions()
            .get::<crate::grpc::ReplySize>()
            .map(|r| r.0);
        let size = response.body().size_hint().exact();
        let Some(size) = size
            .and_then(|s| usize::try_from(s).ok())
            .or(grpc)
            .filter(|s| *s > 0)
        else {
            return super::guarded::keep_until_sent(response, guard);
        };
        let Some(held) = self.hold(ip, size) else {
            tracing::info!(%ip, size, "answer refused: too many unsent answers");
            crate::metrics::METRICS.refuse("unsent_full");
            let refusal = match grpc {
                Some(_) => tonic::Status::resource_exhausted(
                    "too many answers unread on this connection or from this address",
                )
                .into_http(),
                None => AppError::unsent_full().into_response(),
            };
            return super::guarded::keep_until_sent(refusal, guard);
        };
        super::guarded::keep_until_sent(response, (guard, held))
    }
}

/// Bytes held for one answer, given back when it is dropped.
#[derive(Debug)]
struct Held {
    budget: ConnectionBudget,
    ip: IpAddr,
    n: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        let unsent = &self.budget.unsent;
        self.budget.held.fetch_sub(self.n, Ordering::AcqRel);
        unsent.total.fetch_sub(self.n, Ordering::AcqRel);
        unsent.per_address.remove_if_mut(&self.ip, |_, held| {
            *held -= self.n;
            *held == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    impl ConnectionBudget {
        fn carry_page(&self, ip: IpAddr, response: Response) -> Response {
            self.carry(ip, response, ())
        }
    }

    fn page(n: usize) -> Response {
        Response::new(Body::from(vec![b'x'; n]))
    }

    #[test]
    fn answers_hold_their_bytes_until_dropped() {
        let unsent = Arc::new(Unsent::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = unsent.connection();
        let first = a.carry_page(ip, page(PER_CONNECTION - 10));
        assert_eq!(first.status(), 200);
        let refused = a.carry_page(ip, page(20));
        assert_eq!(refused.status(), 503);
        // Another connection from the same address has its own share…
        let b = unsent.connection();
        assert_eq!(b.carry_page(ip, page(1024)).status(), 200);
        drop(first);
        // …and the first one's bytes come back when its answer is gone.
        assert_eq!(a.carry_page(ip, page(PER_CONNECTION / 2)).status(), 200);
    }

    #[test]
    fn one_address_is_capped_across_its_connections() {
        let unsent = Arc::new(Unsent::default());
        let ip: IpAddr = "192.0.2.2".parse().unwrap();
        let mut kept = Vec::new();
        for _ in 0..(PER_ADDRESS / PER_CONNECTION) {
            kept.push(unsent.connection().carry_page(ip, page(PER_CONNECTION)));
        }
        assert!(kept.iter().all(|r| r.status() == 200));
        assert_eq!(unsent.connection().carry_page(ip, page(1)).status(), 503);
        let other: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(unsent.connection().carry_page(other, page(1)).status(), 200);
        drop(kept);
        assert!(
            unsent.per_address.is_empty(),
            "emptied addresses are forgotten"
        );
    }
}
