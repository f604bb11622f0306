//! Transports: thin adapters between sockets and the hub.
//!
//! Each decodes bytes with `protocol/`, calls the session, and drains its subscriber's queue
//! back into bytes, as a `link::Link` the one connection driver (`link::drive`) runs. Room
//! logic never lives here.

pub(crate) mod context;
pub mod echo;
pub mod fds;
pub mod limits;
pub(crate) mod link;
pub mod mqtt;
pub(crate) mod proxy;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod writer;
pub mod ws;
pub mod ws_socket;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use context::Context;
use limits::Permit;

/// A connection's own shutdown signal: a child of the server's token, cancelled with it.
///
/// Connection loops wait on it at every wake-up. Polling a `CancellationToken` locks its
/// mutex, so with the server's one token every writer on every core took the same lock twice
/// per batch; a child has its own, which only its connection touches.
pub(crate) fn stop_signal(shared: &Context) -> tokio_util::sync::CancellationToken {
    shared.shutdown.child_token()
}

/// Sleeps until `deadline`, or forever when there is none (an optional timer in `select!`).
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A listener's accepts until a stop signal. `accept` errors are retried with a doubling
/// pause, as mini-redis does, so the listener survives a burst instead of spinning or dying;
/// they are logged at most once per `ACCEPT_LOG_EVERY`. Out of file descriptors (EMFILE,
/// ENFILE), the spare descriptor (`fds::Reserve`) is freed to accept the waiting connection
/// and close it at once, so that clients are refused instead of hanging in the backlog.
pub(crate) async fn accept(
    listener: &TcpListener,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(pair) => return Some(pair),
            Err(error) => {
                if fds::is_exhausted(&error) {
                    fds::RESERVE.shed(listener);
                }
                fds::log_accept_error(&error, backoff);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Accepts connections until shutdown, admitting each through the connection limits. A
/// refused client gets an `ERR` line saying which limit and is closed.
pub(crate) async fn accept_loop<F, Fut>(listener: TcpListener, shared: Arc<Context>, handler: F)
where
    F: Fn(TcpStream, SocketAddr, Permit, Arc<Context>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    while let Some((mut stream, addr)) = accept(&listener, &shared.shutdown).await {
        let proxied =
            shared.config.proxy_protocol && shared.config.trusted_proxies.trusts(addr.ip());
        if proxied {
            // A trusted proxy's connection: its header names the client, whose own caps apply.
            let Ok(socket) = shared.sockets.try_acquire_proxied() else {
                tracing::info!(%addr, "refusing a proxy's connection: the server is full");
                continue;
            };
            let (handler, ctx) = (handler.clone(), Arc::clone(&shared));
            shared.tasks.spawn(async move {
                let _socket = socket;
                let client = match proxy::read_header(&mut stream).await {
                    Ok(named) => named.unwrap_or(addr),
                    Err(error) => {
                        tracing::info!(%addr, %error, "dropping a trusted proxy's connection");
                        return;
                    }
                };
                match ctx.limiter.try_acquire(client.ip()) {
                    Ok(permit) => handler(stream, client, permit, Arc::clone(&ctx)).await,
                    Err(full) => {
                        tracing::info!(%addr, %client, %full, "refusing connection");
                        crate::metrics::METRICS.refuse(full.code());
                        refuse(stream, full).await;
                    }
                }
            });
            continue;
        }
        let permits = shared
            .sockets
            .try_acquire(addr.ip())
            .and_then(|socket| Ok((socket, shared.limiter.try_acquire(addr.ip())?)));
        match permits {
            Ok((socket, permit)) => {
                let served = handler(stream, addr, permit, Arc::clone(&shared));
                shared.tasks.spawn(async move {
                    let _socket = socket;
                    served.await
                });
            }
            Err(full) => {
                tracing::info!(%addr, %full, "refusing connection");
                crate::metrics::METRICS.refuse(full.code());
                shared.tasks.spawn(refuse(stream, full));
            }
        }
    }
}

/// Tells a refused client which limit refused it and closes, bounded in time.
async fn refuse(mut stream: TcpStream, full: limits::Full) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(format!("ERR {full}\n").as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}
