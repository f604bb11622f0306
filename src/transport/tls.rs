//! TLS (rustls, ring provider): HTTPS and WSS with HTTP/2 offered by ALPN, and TLS on the TCP
//! chat listener. The certificate is read from its files at start and again on SIGHUP,
//! without dropping connections: new handshakes use the new one.
//!
//! Handshakes run in each connection's own task with a deadline (`HANDSHAKE_TIMEOUT`), after
//! the connection was admitted by the limits, so a client that opens a socket and says
//! nothing holds up nobody else's accept and holds only its own place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Longest a client may take to finish its handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream socket as its transport reads it: as accepted, or after its TLS handshake.
pub(crate) enum Accepted {
    /// No TLS on this listener.
    Plain(tokio::net::TcpStream),
    /// The handshake is done.
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// Readies an accepted socket for a stream transport (TCP chat, MQTT): no Nagle delay, and,
/// given an acceptor, the TLS handshake within `HANDSHAKE_TIMEOUT`. `None` (logged) when the
/// handshake fails or times out.
pub(crate) async fn accept(
    stream: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    acceptor: Option<&TlsAcceptor>,
) -> Option<Accepted> {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = acceptor else {
        return Some(Accepted::Plain(stream));
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(Accepted::Tls(Box::new(tls))),
        Ok(Err(error)) => {
            tracing::debug!(%addr, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%addr, "TLS handshake timed out");
            None
        }
    }
}

/// A certificate that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The certificate and key files, and what was last read from them.
#[derive(Debug)]
struct Reloadable {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Reloadable {
    fn read(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
        let bad = |what: &Path, e: &dyn std::fmt::Display| {
            TlsError(format!("cannot read {}: {e}", what.display()))
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| bad(cert, &e))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(cert, &e))?;
        if chain.is_empty() {
            return Err(TlsError(format!("{} holds no certificate", cert.display())));
        }
        let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
        let signing = default_provider()
            .key_provider
            .load_private_key(private)
            .map_err(|e| bad(key, &e))?;
        Ok(Arc::new(CertifiedKey::new(chain, signing)))
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// The server's TLS setup, shared by its listeners.
#[derive(Clone)]
pub struct Tls {
    certs: Arc<Reloadable>,
    /// ALPN h2 and http/1.1.
    http: TlsAcceptor,
    /// No ALPN: a line protocol.
    chat: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.certs.cert)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the certificate chain and key (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let certs = Arc::new(Reloadable {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Reloadable::read(cert, key)?),
        });
        let config = |alpn: &[&[u8]]| -> Result<TlsAcceptor, TlsError> {
            let mut config =
                rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TlsError(e.to_string()))?
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::clone(&certs) as Arc<dyn ResolvesServerCert>);
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        Ok(Tls {
            http: config(&[b"h2", b"http/1.1"])?,
            chat: config(&[])?,
            certs,
        })
    }

    /// Reads the files again; on failure the old certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Reloadable::read(&self.certs.cert, &self.certs.key)?;
        *self
            .certs
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The acceptor for the TCP chat listener.
    pub(crate) fn chat(&self) -> &TlsAcceptor {
        &self.chat
    }

    /// Reloads on every SIGHUP until `stop`.
    pub(crate) async fn reload_on_hangup(self, stop: CancellationToken) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    got = hangups.recv() => if got.is_none() { return },
                }
                match self.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %self.certs.cert.display(), "TLS certificate reloaded")
                    }
                    Err(error) => {
                        tracing::error!(%error, "TLS reload failed; keeping the old certificate")
                    }
                }
            }
        }
        #[cfg(not(unix))]
        stop.cancelled().await;
    }

    /// The acceptor for the HTTP listener (ALPN h2 and http/1.1).
    pub(crate) fn http(&self) -> &TlsAcceptor {
        &self.http
    }
}
