//! Publish rates: token buckets per connection (`Bucket`, held by its session) and per
//! identity (`RateLimiter<Who>`, shared by every transport), and the flood rule that cuts a
//! client that keeps publishing after being told to stop.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::auth::Principal;

/// Whose publishes are counted together: a verified user wherever it connects from, or an
/// anonymous client's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Who {
    /// A token's subject.
    User(Arc<str>),
    /// An anonymous client's IP address.
    Address(IpAddr),
}

impl Who {
    /// Whose bucket a principal's publishes take from; `None` for a backend (an API key),
    /// which is not limited per identity, and for a client with no address.
    pub fn of(principal: &Principal, addr: Option<SocketAddr>) -> Option<Who> {
        match principal {
            Principal::User(identity) => Some(Who::User(Arc::clone(&identity.sub))),
            // IPv6 by its /64, as the connection caps count it.
            Principal::Anonymous => {
                addr.map(|a| Who::Address(crate::auth::throttle::group(a.ip())))
            }
            Principal::Backend => None,
        }
    }
}

/// One token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            updated: now,
        }
    }

    /// Takes one token, or says how long until one is available. A `rate` of 0 admits
    /// everything.
    pub fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        if rate <= 0.0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }

    fn refilled(&self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * rate >= burst
    }
}

/// A token bucket per key: `rate` publishes per second on average, `burst` at once.
#[derive(Debug)]
pub struct RateLimiter<K: Eq + Hash = Who> {
    rate: f64,
    burst: f64,
    buckets: DashMap<K, Bucket>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter; a `rate` of 0 admits everything.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            buckets: DashMap::new(),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut bucket = match self.buckets.get_mut(key) {
            Some(bucket) => bucket,
            None => self
                .buckets
                .entry(key.clone())
                .or_insert(Bucket::full(self.burst, now)),
        };
        bucket.take(self.rate, self.burst, now)
    }

    /// Forgets buckets that have refilled, so the map holds only recent publishers.
    pub fn prune(&self) {
        let now = Instant::now();
        self.buckets
            .retain(|_, b| !b.refilled(self.rate, self.burst, now));
    }
}

/// What a session's publish limits decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Refused: try again after this long.
    Wait(Duration),
    /// Refused once too often in a row: cut the connection.
    Flood,
}

/// One connection's publish limits: its own bucket, its identity's shared one, and the
/// refusals counted towards a flood.
#[derive(Debug)]
pub struct Pace {
    own: Bucket,
    rate: f64,
    burst: f64,
    refused: u32,
    flood_after: u32,
}

impl Pace {
    /// A connection's limits, full.
    pub fn new(rate: f64, burst: f64, flood_after: u32) -> Self {
        Self {
            own: Bucket::full(burst.max(1.0), Instant::now()),
            rate,
            burst: burst.max(1.0),
            refused: 0,
            flood_after,
        }
    }

    /// Checks one publish against this connection's bucket, then its identity's (`who`,
    /// `None` for a backend, which only the connection bucket limits).
    pub fn check(&mut self, shared: &RateLimiter<Who>, who: Option<&Who>) -> Verdict {
        let now = Instant::now();
        let checked = self
            .own
            .take(self.rate, self.burst, now)
            .and_then(|()| who.map_or(Ok(()), |who| shared.check_at(who, now)));
        match checked {
            Ok(()) => {
                self.refused = 0;
                Verdict::Allow
            }
            Err(wait) => {
                self.refused += 1;
                crate::metrics::METRICS.refuse("rate_limited");
                if self.refused >= self.flood_after {
                    Verdict::Flood
                } else {
                    Verdict::Wait(wait)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(10.0, 3.0);
        let ip = Who::Address("127.0.0.1".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(&ip, t0).is_ok());
        }
        let wait = limiter.check_at(&ip, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        let later = t0 + Duration::from_millis(100);
        assert!(limiter.check_at(&ip, later).is_ok());
        let other = Who::User("alice".into());
        assert!(limiter.check_at(&other, t0).is_ok(), "per identity");
        limiter.prune();
    }

    #[test]
    fn a_connection_is_cut_after_refusals_in_a_row() {
        let shared = RateLimiter::new(0.0, 1.0);
        let mut pace = Pace::new(1.0, 2.0, 3);
        assert_eq!(pace.check(&shared, None), Verdict::Allow);
        assert_eq!(pace.check(&shared, None), Verdict::Allow);
        assert!(matches!(pace.check(&shared, None), Verdict::Wait(_)));
        assert!(matches!(pace.check(&shared, None), Verdict::Wait(_)));
        assert_eq!(pace.check(&shared, None), Verdict::Flood);
    }

    #[test]
    fn the_identity_bucket_is_shared_between_connections() {
        let shared = RateLimiter::new(1.0, 2.0);
        let who = Who::User("bob".into());
        let (mut a, mut b) = (Pace::new(0.0, 1.0, 10), Pace::new(0.0, 1.0, 10));
        assert_eq!(a.check(&shared, Some(&who)), Verdict::Allow);
        assert_eq!(b.check(&shared, Some(&who)), Verdict::Allow);
        assert!(matches!(a.check(&shared, Some(&who)), Verdict::Wait(_)));
        assert!(matches!(b.check(&shared, Some(&who)), Verdict::Wait(_)));
    }
}
