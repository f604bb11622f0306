//! Connection limits: a global cap and a per-IP cap, shared by every transport. Publish
//! rates are the hub's (`crate::hub::pace`).

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
    /// `None` for a trusted proxy's connection, counted in the total only.
    ip: Option<IpAddr>,
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

    /// Admits a connection from `ip`, or says which cap it hit. IPv6 clients are counted by their /64 (`auth::throttle::group`).
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Full> {
        let ip = crate::auth::throttle::group(ip);
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
            ip: Some(ip),
        })
    }

    /// Admits a connection from a trusted proxy, which carries many clients: only the total
    /// cap applies to it (each client is held to the per-IP caps by its own address, once
    /// the proxy has named it).
    pub fn try_acquire_proxied(self: &Arc<Self>) -> Result<Permit, Full> {
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            })
            .map_err(|_| Full::Server)?;
        Ok(Permit {
            limiter: Arc::clone(self),
            ip: None,
        })
    }

    /// `try_acquire`, or `try_acquire_proxied` for a trusted proxy.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, proxy: bool) -> Result<Permit, Full> {
        if proxy {
            self.try_acquire_proxied()
        } else {
            self.try_acquire(ip)
        }
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
        if let Some(ip) = self.ip {
            self.limiter.per_ip.remove_if_mut(&ip, |_, count| {
                *count -= 1;
                *count == 0
            });
        }
        self.limiter.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let limiter = Limiter::new(10, 2);
        let _a = limiter.try_acquire("2001:db8::1".parse().unwrap()).unwrap();
        let _b = limiter.try_acquire("2001:db8::2".parse().unwrap()).unwrap();
        assert_eq!(
            limiter.try_acquire("2001:db8::3".parse().unwrap()).err(),
            Some(Full::Address)
        );
        assert!(
            limiter
                .try_acquire("2001:db8:0:1::1".parse().unwrap())
                .is_ok()
        );
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
