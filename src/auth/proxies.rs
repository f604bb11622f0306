//! Who a client is behind a reverse proxy: from the peers listed in `trusted_proxies` only,
//! the client's address comes from what the proxy says (HTTP's `Forwarded` or
//! `X-Forwarded-For`, or the PROXY protocol on the other listeners), so that limits, logs,
//! presence and webhooks see the client rather than one address for everyone. From any other
//! peer those headers are the client's own words and are ignored.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, header};
use ipnet::IpNet;

/// The peers whose word on the client's address is taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trusts the peers in `nets`.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks trusted, as given.
    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }

    /// True if `ip` is a trusted proxy (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of an HTTP request that came from `peer`: `peer` itself unless it is
    /// trusted; else the rightmost hop of `Forwarded` (or, without it, `X-Forwarded-For`)
    /// that is not a trusted proxy, since every hop to the right of it was added by a proxy
    /// we trust and everything to its left is the client's to invent. A hop that cannot be
    /// read (obfuscated, `unknown`) ends the walk at the last address a trusted proxy gave.
    pub fn client_of(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let forwarded: Vec<&str> = headers
            .get_all(header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let hops: Vec<Option<SocketAddr>> = if forwarded.is_empty() {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|hop| node(hop.trim()))
                .collect()
        } else {
            forwarded
                .iter()
                .flat_map(|v| v.split(','))
                .map(|element| {
                    element
                        .split(';')
                        .filter_map(|pair| pair.trim().split_once('='))
                        .find(|(key, _)| key.trim().eq_ignore_ascii_case("for"))
                        .and_then(|(_, value)| node(value.trim().trim_matches('"')))
                })
                .collect()
        };
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            let Some(hop) = hop else { break };
            client = hop;
            if !self.trusts(hop.ip()) {
                break;
            }
        }
        client
    }
}

/// A node of `Forwarded` or `X-Forwarded-For`: `192.0.2.7`, `192.0.2.7:4711`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711` or a bare IPv6 address; the port is 0 when none is given. `None` for
/// `unknown`, obfuscated names and anything else.
fn node(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(SocketAddr::new(addr.ip().to_canonical(), addr.port()));
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip.to_canonical(), 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    const PROXY: &str = "10.0.0.2:5000";

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let t = trusted(&["10.0.0.0/24"]);
        let peer: SocketAddr = "203.0.113.9:1234".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(t.client_of(peer, &h), peer);
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t = trusted(&["10.0.0.0/24"]);
        let peer: SocketAddr = PROXY.parse().unwrap();
        // The client made up the first hop; the proxies added the rest.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.3")]);
        assert_eq!(
            t.client_of(peer, &h).ip(),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[
            ("forwarded", "for=6.6.6.6"),
            (
                "forwarded",
                "for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.3",
            ),
        ]);
        assert_eq!(
            t.client_of(peer, &h),
            "[2001:db8::7]:4711".parse::<SocketAddr>().unwrap()
        );
        // Forwarded wins over X-Forwarded-For.
        let h = headers(&[
            ("forwarded", "for=198.51.100.8"),
            ("x-forwarded-for", "198.51.100.9"),
        ]);
        assert_eq!(
            t.client_of(peer, &h).ip(),
            "198.51.100.8".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn unreadable_hops_stop_at_the_last_trusted_word() {
        let t = trusted(&["10.0.0.0/24"]);
        let peer: SocketAddr = PROXY.parse().unwrap();
        let h = headers(&[("forwarded", "for=_hidden, for=10.0.0.3")]);
        assert_eq!(
            t.client_of(peer, &h).ip(),
            "10.0.0.3".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[("x-forwarded-for", "unknown")]);
        assert_eq!(t.client_of(peer, &h), peer);
        assert_eq!(t.client_of(peer, &HeaderMap::new()), peer);
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_selves() {
        let t = trusted(&["127.0.0.1/32"]);
        assert!(t.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!t.trusts("127.0.0.2".parse().unwrap()));
    }
}
