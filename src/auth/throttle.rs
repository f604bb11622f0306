//! Failed sign-ins are throttled per address: a token bucket of failures (a burst, then a
//! steady rate), so that guessing API keys, tokens or MQTT passwords from one address runs at
//! a few tries a second instead of thousands. Only failures are charged: a client whose
//! credentials verify is never slowed. IPv6 addresses are grouped by their /64, which one
//! host usually holds whole (`limits.ipv6_prefix`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Failures one address may make at once.
pub const FAILURE_BURST: f64 = 20.0;
/// Failures per second an address earns back.
pub const FAILURE_RATE: f64 = 1.0;
/// Addresses tracked at most; past it, those with a full bucket again are forgotten.
const MAX_TRACKED: usize = 65_536;

/// Per-address buckets of failed authentications.
#[derive(Debug)]
pub struct Throttle {
    buckets: DashMap<IpAddr, (f64, Instant)>,
    burst: f64,
    rate: f64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(FAILURE_BURST, FAILURE_RATE)
    }
}

impl Throttle {
    /// `burst` failures at once, then `rate` a second.
    pub fn new(burst: f64, rate: f64) -> Self {
        Self {
            buckets: DashMap::new(),
            burst,
            rate,
        }
    }

    /// `Err(wait)` while `ip` has used up its failures: its next try is refused unchecked.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(bucket) = self.buckets.get(&group(ip)) else {
            return Ok(());
        };
        let tokens = self.refilled(*bucket);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }

    /// Charges one failure to `ip`.
    pub fn failed(&self, ip: IpAddr) {
        if self.buckets.len() >= MAX_TRACKED {
            let now = Instant::now();
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * self.rate < self.burst
            });
        }
        let mut bucket = self
            .buckets
            .entry(group(ip))
            .or_insert((self.burst, Instant::now()));
        let tokens = self.refilled(*bucket) - 1.0;
        *bucket = (tokens.max(0.0), Instant::now());
        if tokens < 1.0 {
            tracing::warn!(%ip, "failed sign-ins from this address are throttled");
        }
    }

    fn refilled(&self, (tokens, at): (f64, Instant)) -> f64 {
        (tokens + at.elapsed().as_secs_f64() * self.rate).min(self.burst)
    }
}

/// The prefix length IPv6 addresses are grouped by (`limits.ipv6_prefix`). One setting for
/// the process: every per-address cap and bucket must group alike, and they live in
/// places (the hub, the listeners, the sign-in throttle) that share no config.
static IPV6_PREFIX: AtomicU8 = AtomicU8::new(64);

/// Sets the prefix `group` uses for IPv6; the server calls it once, at start.
pub fn set_ipv6_prefix(bits: u8) {
    IPV6_PREFIX.store(bits.clamp(1, 128), Ordering::Relaxed);
}

/// The address a per-address limit is kept for: IPv4 as it is, IPv6 by its prefix, /64
/// unless configured (one host usually holds a whole /64, so per exact address it would
/// have 2^64 of every cap).
pub fn group(ip: IpAddr) -> IpAddr {
    group_by(ip, IPV6_PREFIX.load(Ordering::Relaxed))
}

/// `group` with an IPv6 prefix of `bits`.
fn group_by(ip: IpAddr, bits: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::from(std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_burst_are_throttled_and_earned_back() {
        let t = Throttle::new(3.0, 1000.0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(t.check(ip).is_ok());
            t.failed(ip);
        }
        let slow = Throttle::new(2.0, 0.001);
        slow.failed(ip);
        slow.failed(ip);
        assert!(slow.check(ip).is_err(), "burst used up");
        assert!(
            slow.check("192.0.2.2".parse().unwrap()).is_ok(),
            "another address"
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(t.check(ip).is_ok(), "earned back at 1,000/s");
    }

    #[test]
    fn ipv6_is_grouped_by_its_64() {
        let t = Throttle::new(1.0, 0.001);
        t.failed("2001:db8::1".parse().unwrap());
        assert!(t.check("2001:db8::ffff".parse().unwrap()).is_err());
        assert!(t.check("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn the_ipv6_prefix_is_a_setting() {
        let ip: IpAddr = "2001:db8:aaaa:bbbb:1:2:3:4".parse().unwrap();
        let at = |bits| group_by(ip, bits).to_string();
        assert_eq!(at(64), "2001:db8:aaaa:bbbb::");
        assert_eq!(at(48), "2001:db8:aaaa::");
        assert_eq!(at(56), "2001:db8:aaaa:bb00::");
        assert_eq!(at(128), "2001:db8:aaaa:bbbb:1:2:3:4");
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(group_by(v4, 48), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(group_by(mapped, 48), v4);
    }
}
