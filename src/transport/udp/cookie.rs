//! Proof that a UDP sender can receive at its address, before the server sends it anything
//! larger than it sent or makes it a member (as DTLS's HelloVerifyRequest and QUIC's Retry
//! do): the cookie is an HMAC of the address and a time bucket under a key the process
//! picks at start, so checking one keeps no state per sender.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What the server answers an unverified datagram with, before the cookie.
pub(crate) const PREFIX: &str = "COOKIE ";
/// What a client sends back, before the cookie.
pub(crate) const ANSWER: &str = "/cookie ";

/// Issues and checks cookies.
pub(crate) struct Cookies {
    key: [u8; 32],
    /// A cookie is valid in its bucket and the next, so for one to two of these.
    bucket: Duration,
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cookies")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl Cookies {
    /// Cookies valid for between `ttl / 2` and `ttl`, under a fresh random key.
    pub(crate) fn new(ttl: Duration) -> Self {
        let mut key = [0u8; 32];
        // Without randomness the key would be guessable; fall back to the clock and address
        // of this value only if the OS cannot supply it.
        if getrandom::fill(&mut key).is_err() {
            let seed = crate::event::now_ms().to_le_bytes();
            key[..8].copy_from_slice(&seed);
        }
        Self {
            key,
            bucket: (ttl / 2).max(Duration::from_secs(1)),
        }
    }

    fn mac(&self, addr: SocketAddr, bucket: u64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(addr.to_string().as_bytes());
        mac.update(&bucket.to_le_bytes());
        let tag = mac.finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..16])
    }

    fn now(&self) -> u64 {
        crate::event::now_ms() / self.bucket.as_millis().max(1) as u64
    }

    /// The datagram that challenges `addr`: `COOKIE <22 characters>`.
    pub(crate) fn challenge(&self, addr: SocketAddr) -> String {
        format!("{PREFIX}{}", self.mac(addr, self.now()))
    }

    /// True if `cookie` was issued to `addr` in this bucket or the last.
    pub(crate) fn check(&self, addr: SocketAddr, cookie: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let now = self.now();
        [now, now.saturating_sub(1)]
            .iter()
            .any(|&b| bool::from(self.mac(addr, b).as_bytes().ct_eq(cookie.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_good_for_its_address_only() {
        let cookies = Cookies::new(Duration::from_secs(60));
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let challenge = cookies.challenge(a);
        let cookie = challenge.strip_prefix(PREFIX).unwrap();
        assert_eq!(challenge.len(), PREFIX.len() + 22);
        assert!(cookies.check(a, cookie));
        assert!(!cookies.check(b, cookie));
        assert!(!cookies.check(a, "forged"));
        assert!(
            !Cookies::new(Duration::from_secs(60)).check(a, cookie),
            "keyed per process"
        );
    }
}
