//! Asymmetric tokens: ES256 verified by a PEM public key file, and by a JWKS document served
//! by a local HTTP server inside the test (fetched only from the configured URL).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use support::{TIMEOUT, start_with, test_config};
use switchboard::Config;
use switchboard::auth::AuthConfig;
use tokio_tungstenite::connect_async;

/// A P-256 key: its private half as PKCS#8 PEM, and its public JWK under `kid`.
fn ec_key(kid: &str) -> (rcgen::KeyPair, serde_json::Value) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = key.public_key_raw(); // 0x04 || X || Y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    });
    (key, jwk)
}

fn es256(key: &rcgen::KeyPair, kid: Option<&str>, sub: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    let claims = serde_json::json!({
        "sub": sub,
        "exp": jsonwebtoken::get_current_timestamp() + 600,
        "rooms": {"lobby": ["subscribe"]},
    });
    let pem = key.serialize_pem();
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn handshake(addr: std::net::SocketAddr, token: &str) -> u16 {
    match connect_async(format!("ws://{addr}/ws?token={token}")).await {
        Ok((_, res)) => res.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

fn closed_config(auth: AuthConfig) -> Config {
    Config {
        auth: AuthConfig {
            leeway_secs: 0,
            ..auth
        },
        ..test_config()
    }
}

#[tokio::test]
async fn an_es256_token_verifies_with_a_pem_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = ec_key("unused");
    let public = dir.path().join("public.pem");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let server = start_with(closed_config(AuthConfig {
        public_keys: vec![public],
        ..AuthConfig::default()
    }))
    .await;
    let addr = server.http();
    assert_eq!(handshake(addr, &es256(&key, None, "pem-user")).await, 101);
    let (other, _) = ec_key("other");
    assert_eq!(handshake(addr, &es256(&other, None, "forger")).await, 401);
    server.stop().await;
}

#[tokio::test]
async fn a_jwks_url_is_fetched_and_its_keys_verify_by_kid() {
    let (k1, jwk1) = ec_key("k1");
    let (k2, _) = ec_key("k2");
    let fetches = Arc::new(AtomicUsize::new(0));
    let doc = serde_json::json!({ "keys": [jwk1] });
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get({
            let fetches = Arc::clone(&fetches);
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                axum::Json(doc)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let server = start_with(closed_config(AuthConfig {
        jwks_url: Some(format!("http://{jwks_addr}/jwks.json")),
        ..AuthConfig::default()
    }))
    .await;
    let addr = server.http();
    let good = es256(&k1, Some("k1"), "jwks-user");
    // The first fetch runs as the server starts; wait for it, bounded.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while handshake(addr, &good).await != 101 {
        assert!(tokio::time::Instant::now() < deadline, "JWKS never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A key id the document lacks is refused and says so.
    let res = reqwest::Client::new()
        .get(format!("http://{addr}/rooms/lobby/messages"))
        .bearer_auth(es256(&k2, Some("k2"), "jwks-user"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("\"k2\" is unknown"),
        "{body}"
    );
    // Unknown ids do not make the server hammer the URL: at most one refetch is due.
    for _ in 0..20 {
        let _ = handshake(addr, &es256(&k2, Some("k2"), "x")).await;
    }
    assert!(
        fetches.load(Ordering::SeqCst) <= 2,
        "fetched {} times",
        fetches.load(Ordering::SeqCst)
    );
    server.stop().await;
}
