//! An answer's body that keeps a guard until it is dropped (sent whole, or its stream or
//! connection gone): what `activity` (a request in flight) and `unsent` (bytes held against a
//! budget) hang on their answers.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use axum::body::{Body, HttpBody};
use axum::response::Response;
use hyper::body::{Frame, SizeHint};

/// `response` with `guard` held until its body is dropped.
pub(super) fn keep_until_sent<G: Send + Unpin + 'static>(response: Response, guard: G) -> Response {
    response.map(|body| {
        Body::new(Guarded {
            body,
            _guard: guard,
        })
    })
}

/// A body and what it keeps.
struct Guarded<G> {
    body: Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> HttpBody for Guarded<G> {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
