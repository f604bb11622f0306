//! Who a client is and what it may do: JWT tokens (HS256 secrets, RSA/EC public keys, a
//! JWKS URL), API keys for backends, and room rules for everyone without a grant.
//!
//! Every transport hands what the client presented (a token, an API key, or nothing) to
//! `Auth`, gets a `Principal`, and asks `Auth::allows` before each action. With nothing
//! configured (`Auth::is_open`), everyone may do everything, as the seed's clients expect;
//! once a way to verify tokens or a room rule is configured, rooms no rule covers are closed
//! to anonymous clients. API keys alone close nothing: they open `/admin` and the backend's
//! calls.

mod grants;
mod keys;
pub mod origin;
pub mod proxies;
pub mod throttle;

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

pub use grants::{Action, Actions, Grants, Pattern, RoomRule};
use keys::{Family, Jwks, Key};

use crate::event::Sender;
use crate::protocol::names::check_nick;

/// Longest token accepted, in bytes (a header, the claims and a signature).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Shortest API key taken, in bytes: guessing one must not be a matter of minutes.
pub const MIN_API_KEY_BYTES: usize = 16;
/// Longest `sub` claim, in bytes.
const MAX_SUB_BYTES: usize = 256;

/// Why a token or key was refused. The text is said to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The server has no token keys configured.
    #[error("this server accepts no tokens")]
    NoKeys,
    /// Not a JWT, or too long.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// No configured key verifies the signature.
    #[error("bad token signature")]
    BadSignature,
    /// Signed with an algorithm no configured key serves.
    #[error("token algorithm {0} is not accepted here")]
    Algorithm(String),
    /// Past its `exp`.
    #[error("token expired")]
    Expired,
    /// Before its `nbf`.
    #[error("token not valid yet")]
    NotYetValid,
    /// A claim is missing or unusable.
    #[error("bad token claims: {0}")]
    Claims(String),
    /// The JWKS document could not be fetched or read.
    #[error("cannot fetch the JWKS: {0}")]
    Jwks(String),
    /// A token names a key id not (yet) in the JWKS.
    #[error("token key id {0:?} is unknown; try again shortly")]
    UnknownKey(String),
    /// Too many failed sign-ins from this address lately: refused unchecked (seconds to wait).
    #[error("too many failed sign-ins from your address; try again in {0} s")]
    Throttled(u64),
    /// `X-API-Key` matched no configured key.
    #[error("unknown API key")]
    BadApiKey,
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim: who this is, as the issuer knows them.
    pub sub: Arc<str>,
    /// The display name (`name`, default `sub`); a valid nick.
    pub name: Arc<str>,
    /// The `rooms` claim.
    pub grants: Grants,
    /// The `exp` claim, in seconds since the Unix epoch.
    pub expires: u64,
}

/// Who a client is, as far as the server knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Principal {
    /// Presented nothing (or nothing is configured).
    #[default]
    Anonymous,
    /// Presented a valid token.
    User(Arc<Identity>),
    /// Presented an API key: a backend, allowed everything.
    Backend,
}

impl Principal {
    /// The verified identity, if any.
    pub fn user(&self) -> Option<&Arc<Identity>> {
        match self {
            Principal::User(identity) => Some(identity),
            _ => None,
        }
    }
}

/// The claims switchboard reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    name: Option<String>,
    exp: u64,
    #[serde(default)]
    rooms: Grants,
}

/// What `Auth` is built from (see `crate::config`). Its `Debug` counts secrets and API keys
/// instead of printing them, so a logged config leaks nothing.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// HS256 secrets; the first signs `switchboard token`, all verify.
    pub secrets: Vec<String>,
    /// RSA or EC public keys, PEM files.
    pub public_keys: Vec<std::path::PathBuf>,
    /// A JWKS document's URL.
    pub jwks_url: Option<String>,
    /// Seconds of clock skew forgiven on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Keys for backends (`X-API-Key`).
    pub api_keys: Vec<String>,
    /// Room rules, first match wins.
    pub rooms: Vec<RoomRule>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |n: usize| format!("<{n} hidden>");
        f.debug_struct("AuthConfig")
            .field("secrets", &format_args!("{}", hidden(self.secrets.len())))
            .field("public_keys", &self.public_keys)
            .field("jwks_url", &self.jwks_url)
            .field("leeway_secs", &self.leeway_secs)
            .field("api_keys", &format_args!("{}", hidden(self.api_keys.len())))
            .field("rooms", &self.rooms)
            .finish()
    }
}

impl AuthConfig {
    /// No secret, key, JWKS, API key or room rule: the server verifies nobody.
    pub fn is_empty(&self) -> bool {
        !self.restricts_anonymous() && self.api_keys.is_empty()
    }

    /// True when anonymous clients are held to room rules: only identity settings (secrets,
    /// public keys, a JWKS) and `[[rooms]]` rules do that. An API key alone opens `/admin`
    /// and the backend's calls; it closes nothing to anyone else.
    pub fn restricts_anonymous(&self) -> bool {
        !(self.secrets.is_empty()
            && self.public_keys.is_empty()
            && self.jwks_url.is_none()
            && self.rooms.is_empty())
    }

    /// The effective policy for anonymous clients, in one line for the start-up log.
    pub fn anonymous_policy(&self) -> String {
        if !self.restricts_anonymous() {
            return "anonymous clients may join, read and publish in every room and send direct \
                    messages (no --auth-secret, --auth-public-key, --auth-jwks-url or [[rooms]] \
                    rule is configured)"
                .to_owned();
        }
        let rules = self
            .rooms
            .iter()
            .filter(|r| r.anonymous != Actions::NONE)
            .count();
        if rules == 0 {
            "anonymous clients may do nothing: every room needs a token or an API key (no \
             [[rooms]] rule opens one to anonymous clients)"
                .to_owned()
        } else {
            format!(
                "anonymous clients may act only where a [[rooms]] rule lets them ({rules} of {} \
                 rules do) and may not send direct messages; everything else needs a token",
                self.rooms.len()
            )
        }
    }
}

/// The server's verifier and policy.
#[derive(Debug)]
pub struct Auth {
    keys: Vec<Key>,
    jwks: Option<Arc<Jwks>>,
    leeway: u64,
    /// SHA-256 of each API key, so that comparing takes the same time whatever the length.
    api_keys: Vec<[u8; 32]>,
    rules: Vec<RoomRule>,
    /// `AuthConfig::is_empty` of what it was built from.
    open: bool,
    /// Failed sign-ins per address.
    throttle: throttle::Throttle,
}

impl Auth {
    /// Builds the verifier; a key file that cannot be read is an error.
    pub fn new(config: &AuthConfig) -> Result<Auth, String> {
        let mut keys: Vec<Key> = config.secrets.iter().map(|s| keys::secret(s)).collect();
        if let Some(short) = config.secrets.iter().find(|s| s.len() < 32) {
            // RFC 7518 section 3.2: an HS256 key must be at least 256 bits.
            return Err(format!(
                "an auth secret of {} bytes is too short; use at least 32 (e.g. `openssl rand -hex 32`)",
                short.len()
            ));
        }
        for path in &config.public_keys {
            keys.push(keys::pem_file(path)?);
        }
        let jwks = config
            .jwks_url
            .clone()
            .map(Jwks::new)
            .transpose()?
            .map(Arc::new);
        if let Some(short) = config.api_keys.iter().find(|k| k.len() < MIN_API_KEY_BYTES) {
            return Err(format!(
                "an API key of {} bytes is too short; use at least {MIN_API_KEY_BYTES} (e.g. \
                 `openssl rand -hex 16`)",
                short.len()
            ));
        }
        Ok(Auth {
            throttle: throttle::Throttle::default(),
            keys,
            jwks,
            leeway: config.leeway_secs,
            api_keys: config.api_keys.iter().map(|k| digest(k)).collect(),
            rules: config.rooms.clone(),
            open: !config.restricts_anonymous(),
        })
    }

    /// A server with nothing configured: everyone may do everything.
    pub fn open() -> Arc<Auth> {
        Arc::new(Auth::new(&AuthConfig::default()).expect("nothing configured is valid"))
    }

    /// No way to verify a token and no room rules: everyone may do everything (API keys
    /// may still be configured, for `/admin` and backends).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// True when tokens can be verified at all.
    pub fn takes_tokens(&self) -> bool {
        !self.keys.is_empty() || self.jwks.is_some()
    }

    /// Seconds of clock skew forgiven on `exp`.
    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    /// Fetches the JWKS once (at start) and keeps it fresh until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let Some(jwks) = self.jwks.clone() else {
            return;
        };
        if let Err(error) = jwks.fetch().await {
            tracing::warn!(%error, "jwks not loaded yet; tokens signed by it are refused until it is");
        }
        jwks.run(stop).await;
    }

    /// Checks a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if !self.takes_tokens() {
            return Err(AuthError::NoKeys);
        }
        let token = token.trim();
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed(format!(
                "longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::Json(_) => {
                AuthError::Malformed("its header is not a JWT header (JSON with \"alg\")".into())
            }
            kind => malformed(kind),
        })?;
        let family = Family::of(header.alg)
            .ok_or_else(|| AuthError::Algorithm(format!("{:?}", header.alg)))?;
        let claims = self.check_signature(token, &header, family)?;
        identity(claims)
    }

    /// Tries each key of the token's family (only the named one when the JWKS has its id).
    fn check_signature(
        &self,
        token: &str,
        header: &Header,
        family: Family,
    ) -> Result<Claims, AuthError> {
        let fetched = self.jwks.as_ref().map(|j| j.keys()).unwrap_or_default();
        let named: Vec<&Key> = match &header.kid {
            Some(kid) => fetched
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => Vec::new(),
        };
        // A key id the JWKS lacks may still be a local key's (PEM keys have no id); if none
        // of those verifies either, the JWKS is asked again, soon.
        let unknown_kid = match (&header.kid, &self.jwks) {
            (Some(kid), Some(jwks)) if named.is_empty() => Some((kid, jwks)),
            _ => None,
        };
        let candidates: Vec<&Key> = if named.is_empty() {
            self.keys
                .iter()
                .chain(fetched.iter().filter(|k| k.kid.is_none()))
                .filter(|k| k.family == family)
                .collect()
        } else {
            named
        };
        let validation = self.validation(header.alg);
        let mut last = AuthError::Algorithm(format!("{:?}", header.alg));
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    last = token_error(e.kind());
                    if last != AuthError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        if let Some((kid, jwks)) = unknown_kid {
            jwks.want_refresh();
            return Err(AuthError::UnknownKey(kid.clone()));
        }
        Err(last)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        // No audience is configured; an `aud` claim is the issuer's business.
        v.validate_aud = false;
        v.set_required_spec_claims(&["exp", "sub"]);
        v
    }

    /// Checks an `X-API-Key` in constant time.
    pub fn check_api_key(&self, key: &str) -> Result<(), AuthError> {
        let presented = digest(key);
        let mut found = subtle::Choice::from(0);
        for known in &self.api_keys {
            found |= known.ct_eq(&presented);
        }
        if bool::from(found) {
            Ok(())
        } else {
            Err(AuthError::BadApiKey)
        }
    }

    /// The principal for what a client presented: an API key, a token, or neither.
    pub fn principal(
        &self,
        token: Option<&str>,
        api_key: Option<&str>,
    ) -> Result<Principal, AuthError> {
        if let Some(key) = api_key {
            self.check_api_key(key)?;
            return Ok(Principal::Backend);
        }
        match token {
            Some(token) => Ok(Principal::User(Arc::new(self.verify(token)?))),
            None => Ok(Principal::Anonymous),
        }
    }

    /// `principal` for a client at `ip`, throttled: an address that has failed too often
    /// lately is refused unchecked (`AuthError::Throttled`), and a failure is charged to it.
    pub fn principal_at(
        &self,
        ip: Option<std::net::IpAddr>,
        token: Option<&str>,
        api_key: Option<&str>,
    ) -> Result<Principal, AuthError> {
        self.throttled(ip, || self.principal(token, api_key))
    }

    /// `verify` for a client at `ip`, throttled like `principal_at`.
    pub fn verify_at(
        &self,
        ip: Option<std::net::IpAddr>,
        token: &str,
    ) -> Result<Identity, AuthError> {
        self.throttled(ip, || self.verify(token))
    }

    fn throttled<T>(
        &self,
        ip: Option<std::net::IpAddr>,
        check: impl FnOnce() -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        if let Some(ip) = ip {
            self.throttle
                .check(ip)
                .map_err(|wait| AuthError::Throttled(wait.as_secs().max(1)))?;
        }
        let checked = check();
        if let (Err(_), Some(ip)) = (&checked, ip) {
            self.throttle.failed(ip);
        }
        checked
    }

    /// Failed sign-ins per address, for transports that check credentials themselves (HTTP
    /// charges a 401 after the handler).
    pub fn throttle(&self) -> &throttle::Throttle {
        &self.throttle
    }

    /// How far `who`'s name can be trusted, as every message from them records it: a nick
    /// is only anonymous on a server that verifies anyone at all.
    pub fn sender(&self, who: &Principal) -> Sender {
        match who {
            Principal::User(identity) => Sender::User(Arc::clone(&identity.sub)),
            Principal::Backend => Sender::Backend,
            Principal::Anonymous if self.is_open() => Sender::Open,
            Principal::Anonymous => Sender::Anonymous,
        }
    }

    /// Whether `who` may send direct messages: anyone on an open server, else only a token
    /// or key holder (a direct message reaches one user, and names no room a rule could
    /// open).
    pub fn may_direct(&self, who: &Principal) -> bool {
        self.is_open() || *who != Principal::Anonymous
    }

    /// What `who` may do in `room`: everything on an open server or with an API key; else
    /// the token's grants where one matches, else the first room rule that matches, else
    /// nothing.
    pub fn actions(&self, who: &Principal, room: &str) -> Actions {
        if self.is_open() {
            return Actions::ALL;
        }
        let user = match who {
            Principal::Backend => return Actions::ALL,
            Principal::User(identity) => {
                if let Some(granted) = identity.grants.on(room) {
                    return granted;
                }
                true
            }
            Principal::Anonymous => false,
        };
        self.rules
            .iter()
            .find(|rule| rule.pattern.matches(room))
            .map_or(Actions::NONE, |rule| match (user, rule.users) {
                (true, Some(users)) => users,
                _ => rule.anonymous,
            })
    }

    /// True if `who` may do `action` in `room`.
    pub fn allows(&self, who: &Principal, room: &str, action: Action) -> bool {
        self.actions(who, room).allows(action)
    }
}

/// What an HTTP client presented: a token (`Authorization: Bearer`, else `?token=`, which
/// browsers need for WebSocket and EventSource) and an API key (`X-API-Key`).
pub fn presented<'a>(
    headers: &'a axum::http::HeaderMap,
    query_token: Option<&'a str>,
) -> (Option<&'a str>, Option<&'a str>) {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    (bearer.or(query_token).filter(|t| !t.is_empty()), api_key)
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn token_error(kind: &jsonwebtoken::errors::ErrorKind) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => AuthError::BadSignature,
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::NotYetValid,
        K::InvalidAlgorithm | K::MissingAlgorithm => AuthError::Algorithm("mismatch".into()),
        K::MissingRequiredClaim(claim) => AuthError::Claims(format!("missing {claim}")),
        K::InvalidClaimFormat(claim) => AuthError::Claims(format!("{claim} is malformed")),
        K::Json(_) => AuthError::Claims(
            "not a JSON object with a text \"sub\" and a numeric \"exp\" (and optionally \
             \"name\" and \"rooms\")"
                .into(),
        ),
        other => malformed(other),
    }
}

/// Why a token could not even be read, in words a person can act on: the library's own
/// (`InvalidToken`, `Base64 error: Invalid last symbol 116`) name its internals.
fn malformed(kind: &jsonwebtoken::errors::ErrorKind) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    AuthError::Malformed(
        match kind {
            K::InvalidToken => {
                "it is not three base64url parts joined by dots (header.claims.signature)"
            }
            K::Base64(_) => "one of its parts is not base64url (A-Z a-z 0-9 - _, no padding)",
            K::Utf8(_) => "one of its parts is not UTF-8 text",
            K::Json(_) => "one of its parts is not the JSON a JWT holds",
            _ => "it cannot be read as a JWT",
        }
        .to_owned(),
    )
}

/// Checks the claims switchboard relies on.
fn identity(claims: Claims) -> Result<Identity, AuthError> {
    if claims.sub.is_empty()
        || claims.sub.len() > MAX_SUB_BYTES
        || claims.sub.chars().any(char::is_control)
    {
        return Err(AuthError::Claims(format!(
            "sub must be 1-{MAX_SUB_BYTES} bytes of text"
        )));
    }
    let name = claims.name.unwrap_or_else(|| claims.sub.clone());
    check_nick(&name).map_err(|e| AuthError::Claims(format!("name: {e}")))?;
    Ok(Identity {
        sub: claims.sub.into(),
        name: name.into(),
        grants: claims.rooms,
        expires: claims.exp,
    })
}

/// Signs a development token with an HS256 `secret` (`switchboard token`, tests).
pub fn sign(
    secret: &str,
    sub: &str,
    name: Option<&str>,
    grants: &Grants,
    ttl_secs: u64,
) -> Result<String, String> {
    let mut claims = serde_json::json!({
        "sub": sub,
        "exp": jsonwebtoken::get_current_timestamp() + ttl_secs,
        "iat": jsonwebtoken::get_current_timestamp(),
    });
    if let Some(name) = name {
        claims["name"] = name.into();
    }
    if !grants.is_empty() {
        claims["rooms"] = grants.to_claim();
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth(secrets: &[&str]) -> Auth {
        Auth::new(&AuthConfig {
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            leeway_secs: 0,
            rooms: vec![RoomRule {
                pattern: Pattern::new("public.*"),
                anonymous: [Action::Subscribe].into_iter().collect(),
                users: None,
            }],
            ..AuthConfig::default()
        })
        .unwrap()
    }

    fn grants(text: &str) -> Grants {
        let mut g = Grants::default();
        let (p, a) = Grants::parse_one(text).unwrap();
        g.push(p, a);
        g
    }

    #[test]
    fn a_signed_token_verifies_and_names_its_user() {
        let token = sign(SECRET, "u1", Some("alice"), &grants("chat.*=publish"), 60).unwrap();
        let id = auth(&[SECRET]).verify(&token).unwrap();
        assert_eq!((&*id.sub, &*id.name), ("u1", "alice"));
        assert!(id.grants.on("chat.x").unwrap().allows(Action::Publish));
    }

    #[test]
    fn rotation_accepts_every_configured_secret() {
        let old = "ffffffffffffffffffffffffffffffff";
        let token = sign(old, "u1", None, &Grants::default(), 60).unwrap();
        assert!(auth(&[SECRET, old]).verify(&token).is_ok());
        assert_eq!(auth(&[SECRET]).verify(&token), Err(AuthError::BadSignature));
    }

    #[test]
    fn expired_and_malformed_tokens_say_why() {
        let a = auth(&[SECRET]);
        let claims = serde_json::json!({"sub": "u", "exp": 1000});
        let expired = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(a.verify(&expired), Err(AuthError::Expired));
        assert!(matches!(a.verify("nope"), Err(AuthError::Malformed(_))));
        let bad_name = sign(SECRET, "u", Some("a b"), &Grants::default(), 60).unwrap();
        assert!(matches!(a.verify(&bad_name), Err(AuthError::Claims(_))));
    }

    /// A token that cannot be read is refused in words, not in the JWT library's internals.
    #[test]
    fn unreadable_tokens_are_explained_without_library_internals() {
        let a = auth(&[SECRET]);
        let b64 = |s: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
        };
        let not_json = format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64("{sub"));
        for token in [
            "nope",
            "abc.def.ghi",
            "eyJhbGciOiJIUzI1NiJ9.e30.t",
            "a.b",
            not_json.as_str(),
            &format!("{}.e30.x", b64("not json")),
        ] {
            let said = a.verify(token).unwrap_err().to_string();
            for internal in ["InvalidToken", "Base64 error", "line 1", "column", "symbol"] {
                assert!(!said.contains(internal), "{token:?}: {said}");
            }
            assert!(said.contains("token"), "{token:?}: {said}");
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        let err = Auth::new(&AuthConfig {
            secrets: vec!["short".into()],
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(err.contains("too short"), "{err}");
    }

    #[test]
    fn policy_is_grants_then_rules_then_closed() {
        let a = auth(&[SECRET]);
        let user = Principal::User(Arc::new(Identity {
            sub: "u".into(),
            name: "u".into(),
            grants: grants("chat.*=subscribe,publish"),
            expires: u64::MAX,
        }));
        assert!(a.allows(&user, "chat.1", Action::Publish));
        assert!(!a.allows(&user, "chat.1", Action::History));
        assert!(a.allows(&user, "public.x", Action::Subscribe));
        assert!(!a.allows(&Principal::Anonymous, "public.x", Action::Publish));
        assert!(!a.allows(&Principal::Anonymous, "lobby", Action::Subscribe));
        assert!(a.allows(&Principal::Backend, "lobby", Action::Presence));
        let open = Auth::new(&AuthConfig::default()).unwrap();
        assert!(open.is_open() && open.allows(&Principal::Anonymous, "lobby", Action::Publish));
    }

    #[test]
    fn the_config_debug_shows_no_secret_and_no_api_key() {
        let config = AuthConfig {
            secrets: vec!["a-very-secret-signing-key-32-bytes!".into()],
            api_keys: vec!["backend-api-key-do-not-print".into()],
            ..AuthConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("a-very-secret"), "{shown}");
        assert!(!shown.contains("do-not-print"), "{shown}");
        assert!(shown.contains("secrets: <1 hidden>"), "{shown}");
        assert!(shown.contains("api_keys: <1 hidden>"), "{shown}");
    }

    #[test]
    fn api_keys_compare_whole() {
        let a = Auth::new(&AuthConfig {
            api_keys: vec!["k-1234567890abcdef".into()],
            ..AuthConfig::default()
        })
        .unwrap();
        assert!(a.check_api_key("k-1234567890abcdef").is_ok());
        assert_eq!(
            a.check_api_key("k-1234567890abcde"),
            Err(AuthError::BadApiKey)
        );
    }

    #[test]
    fn short_api_keys_are_refused_at_start() {
        let err = Auth::new(&AuthConfig {
            api_keys: vec!["ab".into()],
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(err.contains("API key of 2 bytes is too short"), "{err}");
    }

    #[test]
    fn failed_sign_ins_from_one_address_are_throttled_not_others() {
        let a = auth(&[SECRET]);
        let attacker: std::net::IpAddr = "192.0.2.66".parse().unwrap();
        let mut refusals = Vec::new();
        for _ in 0..(throttle::FAILURE_BURST as usize + 5) {
            refusals.push(
                a.principal_at(Some(attacker), None, Some("wrong-key"))
                    .unwrap_err(),
            );
        }
        assert_eq!(refusals[0], AuthError::BadApiKey);
        assert!(
            matches!(refusals.last(), Some(AuthError::Throttled(_))),
            "{refusals:?}"
        );
        // Another address is not slowed, and a good token from it works.
        let good = sign(SECRET, "u", None, &Grants::default(), 60).unwrap();
        let other = Some("192.0.2.67".parse().unwrap());
        assert!(a.principal_at(other, Some(&good), None).is_ok());
    }
}
