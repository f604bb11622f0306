//! A refusal is answered after the request's body has arrived. Handlers refuse before reading
//! (credentials, grants and the rate limit are checked first, so that an attacker's body costs
//! nothing), but an answer sent while the client is still sending is lost to it: over HTTP/2
//! hyper resets the unfinished stream and curl 7.88 reports `(92) Stream error in the HTTP/2
//! framing layer` instead of the JSON; over HTTP/1.1 the connection is closed with unread bytes
//! in it, the kernel answers them with a reset, and the response in flight can be lost
//! (`RemoteDisconnected`). So whatever a handler left unread is read and thrown away, bounded
//! in bytes and time, before its answer goes out; past either bound the answer goes anyway and
//! an HTTP/1.1 connection is closed.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::http::{HeaderValue, Method, Version, header};
use axum::response::Response;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};

use crate::transport::context::Context;

/// The longest a refusal waits for the rest of a body.
const SETTLE_TIME: Duration = Duration::from_secs(2);

/// Where a body a handler dropped unread is put back for `settle`.
type Slot = Arc<Mutex<Option<Body>>>;

/// The request body, handed back to `slot` if the handler drops it before its end.
struct Returning {
    inner: Option<Body>,
    slot: Slot,
}

impl HttpBody for Returning {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take()
            && !inner.is_end_stream()
        {
            *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(inner);
        }
    }
}

/// The layer: requests that may carry a body get a `Returning` one; after the handler, what it
/// left unread is drained (at most the largest body any route takes, within `SETTLE_TIME`).
pub(super) async fn settle(
    axum::extract::State(shared): axum::extract::State<Arc<Context>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let bodiless = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::CONNECT
    ) || req.body().is_end_stream();
    if bodiless {
        return next.run(req).await;
    }
    let version = req.version();
    // A client waiting for `100 Continue` has sent nothing yet and sends nothing after a
    // final answer: there is nothing to wait for, but the connection cannot be reused.
    let waits_to_send = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let slot: Slot = Arc::default();
    let req = req.map(|inner| {
        Body::new(Returning {
            inner: Some(inner),
            slot: Arc::clone(&slot),
        })
    });
    let mut response = next.run(req).await;
    let left = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(left) = left {
        let limit = shared.config.ws_max_message.max(64 * 1024);
        let ended = !waits_to_send && drain(left, limit).await;
        if !ended && version <= Version::HTTP_11 {
            // The client is still sending: this connection cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    response
}

/// Reads and drops up to `limit` bytes of `body` within `SETTLE_TIME`; true if it ended.
async fn drain(mut body: Body, limit: usize) -> bool {
    let read = async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                seen += data.len();
                if seen > limit {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(SETTLE_TIME, read)
        .await
        .unwrap_or(false)
}
