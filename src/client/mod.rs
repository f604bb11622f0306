//! The terminal client behind `switchboard connect`: prints what arrives while the user types.
//!
//! Input is read on a plain thread rather than `tokio::io::stdin`, whose blocking read cannot
//! be cancelled and would hold the runtime open at exit until the user pressed Enter.

mod mqtt;

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, lookup_host};
use tokio::sync::mpsc;

/// Why `connect` failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not one we can connect to.
    #[error(
        "unsupported URL {0:?}: expected tcp://HOST:PORT, tls://HOST:PORT, udp://HOST:PORT, ws://HOST:PORT/PATH or mqtt://HOST:PORT/TOPIC"
    )]
    BadUrl(String),
    /// The host did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// The TLS setup or handshake failed.
    #[error("tls: {0}")]
    Tls(String),
    /// The WebSocket handshake or connection failed.
    #[error("websocket: {0}")]
    Ws(String),
    /// The MQTT connection failed or was refused.
    #[error("mqtt: {0}")]
    Mqtt(String),
    /// The connection failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClientError {
    let context = context.into();
    move |source| ClientError::Io { context, source }
}

/// How `tls://` and `wss://` check the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsOptions<'a> {
    /// A PEM file of certificates to trust besides the usual public roots (a self-signed
    /// server's own certificate, say).
    pub ca: Option<&'a std::path::Path>,
    /// The name the certificate must carry, when it is not the URL's host (connecting by
    /// address to a server whose certificate names a host, say).
    pub server_name: Option<&'a str>,
}

/// Connects to `url` and relays stdin lines to it and its output to stdout until `exit`, end of
/// input, or the server closing.
pub async fn connect(
    url: &str,
    linger: Duration,
    tls_options: TlsOptions<'_>,
) -> Result<(), ClientError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| ClientError::BadUrl(url.to_owned()))?;
    if matches!(scheme, "http" | "https") {
        return sse(url).await;
    }
    if scheme == "mqtt" {
        return mqtt::run(url).await;
    }
    if matches!(scheme, "ws" | "wss") {
        if std::io::stdin().is_terminal() {
            eprintln!("connecting to {url}; type exit or press Ctrl-D to quit");
        }
        return ws(url, tls_options).await;
    }
    let host_port = rest.split('/').next().unwrap_or(rest);
    let addr = resolve(host_port).await?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("connected to {url}; type exit or press Ctrl-D to quit");
    }
    match scheme {
        "tcp" => {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(io(format!("cannot connect to {addr}")))?;
            let _ = stream.set_nodelay(true);
            tcp(stream).await
        }
        "tls" => tcp(tls(addr, split_host(host_port).0, tls_options).await?).await,
        "udp" => udp(addr, linger).await,
        _ => Err(ClientError::BadUrl(url.to_owned())),
    }
}

/// The host of `HOST:PORT` or `[V6]:PORT` (brackets dropped), and whether a port is given.
fn split_host(host_port: &str) -> (&str, bool) {
    if let Some(rest) = host_port.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (host, after.starts_with(':'));
    }
    match host_port.rsplit_once(':') {
        Some((host, _)) => (host, true),
        None => (host_port, false),
    }
}

async fn resolve(host_port: &str) -> Result<SocketAddr, ClientError> {
    lookup_host(host_port)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ClientError::Resolve(host_port.to_owned()))
}

/// Lines typed by the user, ending at `exit` (any case, as in the seed) or end of input.
fn input_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().eq_ignore_ascii_case("exit") {
                break;
            }
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A TLS connection to `addr`, checking the certificate names `host` (or the name the
/// options give instead).
async fn tls(
    addr: SocketAddr,
    host: &str,
    options: TlsOptions<'_>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
    let host = options.server_name.unwrap_or(host);
    let ca = options.ca;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let bad = |e: &dyn std::fmt::Display| ClientError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca {
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(&e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| ClientError::Tls(format!("{host:?} is not a host name or address")))?;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(io(format!("cannot connect to {addr}")))?;
    let _ = stream.set_nodelay(true);
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| ClientError::Tls(format!("handshake with {host}: {e}")))
}

async fn tcp<S>(stream: S) -> Result<(), ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut printer = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut stdout = std::io::stdout();
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = stdout.write_all(&buf[..n]);
                    let _ = stdout.flush();
                }
            }
        }
    });
    let mut lines = input_lines();
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(mut line) = line else { break };
                line.push('\n');
                writer.write_all(line.as_bytes()).await.map_err(io("send failed"))?;
            }
            _ = &mut printer => {
                eprintln!("connection closed by server");
                return Ok(());
            }
        }
    }
    // Half-close so the server sees the end, then print what it still sends until it closes.
    let _ = writer.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), printer).await;
    Ok(())
}

async fn ws(url: &str, tls_options: TlsOptions<'_>) -> Result<(), ClientError> {
    let failed = |e: tokio_tungstenite::tungstenite::Error| ClientError::Ws(e.to_string());
    let Some(rest) = url.strip_prefix("wss://") else {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(failed)?;
        return ws_session(socket).await;
    };
    // TLS by rustls here (as for tls://), then the WebSocket handshake over it.
    let host_port = rest.split(['/', '?']).next().unwrap_or(rest);
    let (host, has_port) = split_host(host_port);
    let with_port = if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:443")
    };
    let stream = tls(resolve(&with_port).await?, host, tls_options).await?;
    let (socket, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(failed)?;
    ws_session(socket).await
}

async fn ws_session<S>(socket: tokio_tungstenite::WebSocketStream<S>) -> Result<(), ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let (mut sink, mut stream) = socket.split();
    let mut printer = tokio::spawn(async move {
        let mut stdout = std::io::stdout();
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    let _ = writeln!(stdout, "{text}");
                }
                Ok(Message::Binary(bytes)) => {
                    let _ = stdout.write_all(&bytes);
                    let _ = stdout.write_all(b"\n");
                }
                Ok(Message::Close(frame)) => {
                    if let Some(frame) = frame.filter(|f| u16::from(f.code) != 1000) {
                        eprintln!(
                            "closed by server: {} {}",
                            u16::from(frame.code),
                            frame.reason
                        );
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("connection error: {e}");
                    break;
                }
            }
            let _ = stdout.flush();
        }
    });
    let mut lines = input_lines();
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                sink.send(Message::text(line)).await.map_err(|e| ClientError::Ws(e.to_string()))?;
            }
            _ = &mut printer => return Ok(()),
        }
    }
    // Close, and keep printing until the server answers the close.
    let _ = sink.send(Message::Close(None)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), printer).await;
    Ok(())
}

/// Prints a Server-Sent Events stream, one line per event, until the server ends it.
async fn sse(url: &str) -> Result<(), ClientError> {
    use eventsource_stream::Eventsource;
    use futures_util::StreamExt;

    let res = reqwest::Client::new()
        .get(url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .map_err(|e| ClientError::Ws(format!("GET {url}: {e}")))?;
    if !res.status().is_success() {
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        return Err(ClientError::Ws(format!("GET {url}: {status} {body}")));
    }
    let mut events = res.bytes_stream().eventsource();
    let mut stdout = std::io::stdout();
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| ClientError::Ws(e.to_string()))?;
        let _ = writeln!(stdout, "{}", describe(&event.event, &event.data));
        let _ = stdout.flush();
        if event.event == "close" {
            break;
        }
    }
    Ok(())
}

/// One SSE event as a line a person reads: `nick: text`, `* nick joined room`, …
fn describe(kind: &str, data: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    match kind {
        "message" => format!("{}: {}", s("nick"), s("text")),
        "join" => format!("* {} joined {}", s("nick"), s("room")),
        "leave" => format!("* {} left {}", s("nick"), s("room")),
        "nick" => format!("* {} is now known as {}", s("old"), s("nick")),
        "gap" => format!("* gap in {}: {}", s("room"), s("reason")),
        "crowd" => format!("* {} joined, {} left {}", v["joined"], v["left"], s("room")),
        "close" => format!("* closed: {}", s("reason")),
        other => format!("{other}: {data}"),
    }
}

async fn udp(addr: SocketAddr, linger: Duration) -> Result<(), ClientError> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal address")
    } else {
        "[::]:0".parse().expect("literal address")
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(io("cannot bind UDP"))?;
    socket
        .connect(addr)
        .await
        .map_err(io(format!("cannot reach {addr}")))?;
    handshake(&socket).await?;
    let socket = std::sync::Arc::new(socket);
    let receiver = std::sync::Arc::clone(&socket);
    let printer = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let mut stdout = std::io::stdout();
        while let Ok(n) = receiver.recv(&mut buf).await {
            let _ = stdout.write_all(&buf[..n]);
            let _ = stdout.write_all(b"\n");
            let _ = stdout.flush();
        }
    });
    let mut lines = input_lines();
    while let Some(line) = lines.recv().await {
        socket
            .send(line.as_bytes())
            .await
            .map_err(io("send failed"))?;
    }
    // UDP has no close: wait a little for the answers to what was just sent.
    tokio::time::sleep(linger).await;
    printer.abort();
    Ok(())
}

/// The UDP chat's first exchange: a probe as long as the answer, the server's
/// `COOKIE X`, and `/cookie X` back, which makes this address a member (see
/// `transport::udp`). The probe is sent up to three times, a second apart, since datagrams
/// may be lost; an echo server sends the probe back instead, and is used as it is.
async fn handshake(socket: &UdpSocket) -> Result<(), ClientError> {
    let probe = format!("/hello{}", " ".repeat(58));
    let mut buf = vec![0u8; 2048];
    for _ in 0..3 {
        socket
            .send(probe.as_bytes())
            .await
            .map_err(io("send failed"))?;
        let answer = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await;
        let Ok(Ok(n)) = answer else { continue };
        let text = String::from_utf8_lossy(&buf[..n]);
        if let Some(cookie) = text.strip_prefix("COOKIE ") {
            let answer = format!("/cookie {}", cookie.trim());
            socket
                .send(answer.as_bytes())
                .await
                .map_err(io("send failed"))?;
        }
        // Anything else is a server without the exchange (the echo server sends the probe
        // back), which needs nothing more.
        return Ok(());
    }
    Err(ClientError::Io {
        context: "no answer from the UDP chat server in 3 s".to_owned(),
        source: std::io::ErrorKind::TimedOut.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::split_host;

    #[test]
    fn hosts_split_from_ports_in_both_notations() {
        assert_eq!(split_host("chat.example:443"), ("chat.example", true));
        assert_eq!(split_host("chat.example"), ("chat.example", false));
        assert_eq!(split_host("[::1]:8443"), ("::1", true));
        assert_eq!(split_host("[::1]"), ("::1", false));
    }
}
