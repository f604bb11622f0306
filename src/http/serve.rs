//! The HTTP listener's accept loop (hyper, HTTP/1.1 and HTTP/2 on one port), with the limits
//! `axum::serve` leaves out: every connection, whatever it carries (a request, a long-poll,
//! SSE, a WebSocket), is admitted by the socket budget and the HTTP connection caps, total
//! and per IP; the first bytes, and then HTTP/1 headers, must arrive within
//! `limits.http_header_timeout`, which also closes idle keep-alive connections; TLS handshakes
//! have their own deadline. The gRPC listener is served by this loop too. Bodies are timed
//! where they are read (`crate::http::body`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::transport::context::Context;
use crate::transport::limits::{Full, Permit};

/// HTTP/2 streams one connection may have open at once.
const MAX_STREAMS: u32 = 128;

/// Which API `serve` runs: the HTTP API names its clients through `Forwarded` /
/// `X-Forwarded-For` from trusted proxies; the gRPC listener through the PROXY protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// The HTTP API, pages and WebSockets.
    Http,
    /// gRPC.
    Grpc,
}

/// Serves `router` on `listener` until shutdown, over TLS when `tls` is set.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    shared: Arc<Context>,
    kind: Api,
) {
    let builder = Arc::new(builder(&shared));
    let unsent = Arc::new(super::unsent::Unsent::default());
    while let Some((stream, addr)) = crate::transport::accept(&listener, &shared.shutdown).await {
        // A trusted proxy carries many clients: only the total caps apply to its connections.
        let proxy = shared.config.trusted_proxies.trusts(addr.ip());
        let permits = shared
            .sockets
            .admit(addr.ip(), proxy)
            .and_then(|socket| Ok((socket, shared.http_limiter.admit(addr.ip(), proxy)?)));
        let permits = match permits {
            Ok(permits) => permits,
            Err(full) => {
                refuse(stream, addr, full, tls.is_some(), &shared);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (router, builder, tls, ctx) = (
            router.clone(),
            Arc::clone(&builder),
            tls.clone(),
            Arc::clone(&shared),
        );
        let budget = unsent.connection();
        let proxy_header = proxy && kind == Api::Grpc && shared.config.proxy_protocol;
        shared.tasks.spawn(async move {
            let mut stream = stream;
            // The PROXY header comes first, before TLS.
            let addr = if proxy_header {
                match crate::transport::proxy::read_header(&mut stream).await {
                    Ok(named) => named.unwrap_or(addr),
                    Err(error) => {
                        tracing::info!(%addr, %error, "dropping a trusted proxy's connection");
                        return;
                    }
                }
            } else {
                addr
            };
            match tls {
                None => connection(stream, addr, router, &builder, &ctx, permits, budget).await,
                Some(acceptor) => {
                    let timeout = crate::transport::tls::HANDSHAKE_TIMEOUT;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            connection(tls, addr, router, &builder, &ctx, permits, budget).await
                        }
                        Ok(Err(error)) => tracing::debug!(%addr, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

fn builder(shared: &Context) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.limits.http_header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)))
        .keep_alive_timeout(std::time::Duration::from_secs(10))
        .enable_connect_protocol();
    builder
}

/// Serves one admitted connection until it ends, or until shutdown lets its requests
/// finish (WebSockets and SSE streams end themselves on the same signal).
async fn connection<I>(
    io: I,
    addr: SocketAddr,
    router: Router,
    builder: &auto::Builder<TokioExecutor>,
    shared: &Context,
    permits: (Permit, Permit),
    budget: super::unsent::ConnectionBudget,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _permits = permits;
    let idle_limit = shared.config.limits.http_header_timeout;
    let io = FirstBytes::new(io, idle_limit);
    let proxies = shared.config.trusted_proxies.clone();
    let activity = super::activity::Activity::new();
    let requests = Arc::clone(&activity);
    let http_limiter = Arc::clone(&shared.http_limiter);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        // From a trusted proxy, the client it names; from anyone else, the peer.
        let client = if proxies.is_empty() {
            addr
        } else {
            proxies.client_of(addr, req.headers())
        };
        req.extensions_mut().insert(ConnectInfo(client));
        // An HTTP/2 request is one more place in the per-address cap (its connection holds
        // one already), so streams cannot carry past it what connections could not.
        let permit = if req.version() == hyper::Version::HTTP_2 {
            match http_limiter.try_acquire(client.ip()) {
                Ok(permit) => Some(permit),
                Err(full) => {
                    tracing::info!(%client, %full, "http/2 request refused");
                    let refused =
                        axum::response::IntoResponse::into_response(super::AppError::full(full));
                    return futures_util::future::Either::Left(std::future::ready(Ok(refused)));
                }
            }
        } else {
            None
        };
        let active = requests.begin(permit);
        // Each answer of a known size holds its bytes until it is sent (`http::unsent`).
        let (router, budget) = (router.clone(), budget.clone());
        futures_util::future::Either::Right(async move {
            let response = router.oneshot(req).await?;
            Ok::<_, std::convert::Infallible>(budget.carry(client.ip(), response, active))
        })
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let stop = shared.shutdown.clone();
    let served = tokio::select! {
        served = conn.as_mut() => served,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        // Nothing in flight for the idle time: an HTTP/2 connection with no streams is
        // closed as an idle HTTP/1.1 keep-alive is (hyper's header timeout closes those).
        () = activity.idle_for(idle_limit) => {
            tracing::debug!(%addr, "idle http connection closed");
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                served = conn.as_mut() => served,
                _ = stop.cancelled() => Ok(()),
            }
        }
    };
    if let Err(error) = served {
        tracing::debug!(%addr, %error, "http connection ended with an error");
    }
}

/// A connection's IO that fails with `TimedOut` if nothing at all is read before its deadline.
/// hyper's HTTP/1 header timeout starts only once the protocol is known, and finding that out
/// (the first read) has no deadline of its own: a client that connects and sends nothing
/// would hold its place for as long as it liked.
struct FirstBytes<I> {
    io: I,
    /// `None` once a byte was read.
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<I> FirstBytes<I> {
    fn new(io: I, within: std::time::Duration) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstBytes<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = self.get_mut();
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(read) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(read)
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstBytes<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Answers a connection over the caps: a plain-HTTP 503 with the JSON error and a
/// `Retry-After`, written once without reading the request, bounded in time. Over TLS the
/// connection is closed (a response would need a handshake the cap is there to avoid).
fn refuse(mut stream: TcpStream, addr: SocketAddr, full: Full, tls: bool, shared: &Context) {
    tracing::info!(%addr, %full, "refusing http connection");
    crate::metrics::METRICS.refuse(full.code());
    if tls {
        return;
    }
    shared.tasks.spawn(async move {
        let body = serde_json::json!({"error": full.to_string(), "code": full.code()}).to_string();
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            stream.write_all(response.as_bytes()).await?;
            stream.shutdown().await
        })
        .await;
    });
}
