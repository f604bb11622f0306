//! The keys tokens are checked with: shared HS256 secrets (several, for rotation), RSA and EC
//! public keys from PEM files, and an optional JWKS document fetched only from its configured
//! URL, kept in memory and refreshed in the background.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::AuthError;

/// How often the JWKS document is fetched again.
const JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Soonest a token naming an unknown key may trigger another fetch.
const JWKS_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Longest wait for the JWKS server.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document read.
const JWKS_MAX_BYTES: usize = 256 * 1024;

/// Which family of algorithms a key serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Hmac,
    Rsa,
    Ec,
}

impl Family {
    pub(super) fn of(alg: Algorithm) -> Option<Family> {
        match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Some(Family::Hmac),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Some(Family::Rsa),
            Algorithm::ES256 | Algorithm::ES384 => Some(Family::Ec),
            Algorithm::EdDSA => None,
        }
    }
}

/// One key with what it may verify.
#[derive(Clone)]
pub(super) struct Key {
    pub(super) family: Family,
    pub(super) kid: Option<String>,
    pub(super) key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("Key")
            .field("family", &self.family)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A secret for HS256/384/512.
pub(super) fn secret(secret: &str) -> Key {
    Key {
        family: Family::Hmac,
        kid: None,
        key: DecodingKey::from_secret(secret.as_bytes()),
    }
}

/// A public key from a PEM file: RSA (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`) or EC.
pub(super) fn pem_file(path: &Path) -> Result<Key, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok(Key {
            family: Family::Rsa,
            kid: None,
            key,
        });
    }
    DecodingKey::from_ec_pem(&pem)
        .map(|key| Key {
            family: Family::Ec,
            kid: None,
            key,
        })
        .map_err(|e| {
            format!(
                "{} is neither an RSA nor an EC public key in PEM: {e}",
                path.display()
            )
        })
}

/// The keys a JWKS URL serves, kept current by `run`.
#[derive(Debug)]
pub(super) struct Jwks {
    url: String,
    keys: RwLock<Arc<Vec<Key>>>,
    /// When the last fetch was started, so that unknown key ids cannot make us hammer the URL.
    last_fetch: std::sync::Mutex<Option<Instant>>,
    wanted: Notify,
}

impl Jwks {
    pub(super) fn new(url: String) -> Result<Jwks, String> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        }
        Ok(Jwks {
            url,
            keys: RwLock::new(Arc::new(Vec::new())),
            last_fetch: std::sync::Mutex::new(None),
            wanted: Notify::new(),
        })
    }

    /// The keys as last fetched.
    pub(super) fn keys(&self) -> Arc<Vec<Key>> {
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// A token named a key id we do not have: fetch again soon, at most once per interval.
    pub(super) fn want_refresh(&self) {
        self.wanted.notify_one();
    }

    /// Fetches the document once and replaces the keys; the old keys stay on failure.
    pub(super) async fn fetch(&self) -> Result<usize, AuthError> {
        *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let failed = |e: String| AuthError::Jwks(format!("{}: {e}", self.url));
        let client = reqwest::Client::builder()
            .timeout(JWKS_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let response = client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("answered {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|n| n > JWKS_MAX_BYTES as u64)
        {
            return Err(failed("document too large".into()));
        }
        let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        if body.len() > JWKS_MAX_BYTES {
            return Err(failed("document too large".into()));
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| failed(e.to_string()))?;
        let keys: Vec<Key> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let key = DecodingKey::from_jwk(jwk).ok()?;
                let family = match jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Family::Rsa,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                    _ => return None,
                };
                Some(Key {
                    family,
                    kid: jwk.common.key_id.clone(),
                    key,
                })
            })
            .collect();
        let count = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(count)
    }

    /// Refreshes every `JWKS_REFRESH`, and soon after a token named an unknown key, until
    /// `stop`.
    pub(super) async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(JWKS_REFRESH) => {}
                _ = self.wanted.notified() => {
                    let last = *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(wait) = last.and_then(|t| JWKS_MIN_INTERVAL.checked_sub(t.elapsed())) {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
            match self.fetch().await {
                Ok(count) => tracing::debug!(count, url = %self.url, "jwks refreshed"),
                Err(error) => tracing::warn!(%error, "jwks refresh failed; keeping the old keys"),
            }
        }
    }
}
