//! Connection limits: a global cap and a per-IP cap, shared by every transport.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

/// Counts open connections, in total and per IP address.
#[derive(Debug)]
pub struct Limiter {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Limiter {
    /// A limiter admitting `max_total` connections, at most `max_per_ip` from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: DashMap::new(),
        })
    }

    /// Admits a connection from `ip`, or says which cap it hit.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Full> {
        let admitted = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return Err(Full::Server);
        }
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Address);
        }
        *count += 1;
        Ok(Permit {
            limiter: Arc::clone(self),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// Which connection cap refused a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// `max_connections`: the server as a whole.
    #[error("server full")]
    Server,
    /// `max_connections_per_ip`: this client's address.
    #[error("too many connections from your address")]
    Address,
}

impl Full {
    /// The reason as metrics and JSON errors name it.
    pub fn code(self) -> &'static str {
        match self {
            Full::Server => "server_full",
            Full::Address => "too_many_from_address",
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.per_ip.remove_if_mut(&self.ip, |_, count| {
            *count -= 1;
            *count == 0
        });
        self.limiter.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A token bucket per IP address: `rate` publishes per second on average, `burst` at once.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: DashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: std::time::Instant,
}

impl RateLimiter {
    /// A limiter; a `rate` of 0 admits everything.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            buckets: DashMap::new(),
        }
    }

    /// Takes one token for `ip`, or says how long until one is available.
    pub fn check(&self, ip: IpAddr) -> Result<(), std::time::Duration> {
        self.check_at(ip, std::time::Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: std::time::Instant) -> Result<(), std::time::Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate;
            Err(std::time::Duration::from_secs_f64(wait))
        }
    }

    /// Forgets buckets that have refilled, so the map holds only recent publishers.
    pub fn prune(&self) {
        let now = std::time::Instant::now();
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * self.rate < self.burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(10.0, 3.0);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = std::time::Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(ip, t0).is_ok());
        }
        let wait = limiter.check_at(ip, t0).unwrap_err();
        assert!(wait <= std::time::Duration::from_millis(100), "{wait:?}");
        let later = t0 + std::time::Duration::from_millis(100);
        assert!(limiter.check_at(ip, later).is_ok());
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(limiter.check_at(other, t0).is_ok(), "per IP");
        limiter.prune();
    }

    #[test]
    fn caps_total_and_per_ip_and_frees_on_drop() {
        let limiter = Limiter::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let p1 = limiter.try_acquire(a).unwrap();
        let _p2 = limiter.try_acquire(a).unwrap();
        assert_eq!(
            limiter.try_acquire(a).err(),
            Some(Full::Address),
            "per-IP cap"
        );
        let _p3 = limiter.try_acquire(b).unwrap();
        assert_eq!(
            limiter.try_acquire(b).err(),
            Some(Full::Server),
            "total cap"
        );
        drop(p1);
        let _p4 = limiter.try_acquire(a).expect("a place was freed");
        assert_eq!(limiter.open(), 3);
    }
}
