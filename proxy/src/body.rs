//! The request body sent upstream: the client's body, streamed frame by frame as it arrives
//! (nothing is buffered whole); the response side is [`crate::response`].
//!
//! The request body enforces `limits.max_request_body` as it streams (a body that grows
//! past it ends in [`BodyError::TooLarge`], which cuts the upstream request) and marks errors
//! that are the *client's* fault, so the pipeline can answer 400/413 for them instead of
//! blaming the backend with a 502.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// The request body sent upstream: the client's body, streamed as it arrives, with the
/// body-size limit applied on the way.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    /// Bytes allowed (`u64::MAX` = unlimited) and bytes seen so far.
    limit: u64,
    seen: u64,
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: Option<u64>) -> RequestBody {
        RequestBody {
            inner,
            limit: limit.unwrap_or(u64::MAX),
            seen: 0,
        }
    }
}

/// Why the client's request body could not be forwarded.
#[derive(Debug)]
pub enum BodyError {
    /// The body grew past `limits.max_request_body`.
    TooLarge,
    /// Reading the client's body failed (bad chunk framing, the client went away, …).
    Client(hyper::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => f.write_str("request body larger than max_request_body"),
            BodyError::Client(e) => write!(f, "reading the client's request body: {e}"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::TooLarge => None,
            BodyError::Client(e) => Some(e),
        }
    }
}

impl BodyError {
    /// Finds a [`BodyError`] in an upstream send error's source chain: the request failed
    /// because of the client's body, not because of the backend.
    pub fn find<'e>(mut e: &'e (dyn std::error::Error + 'static)) -> Option<&'e BodyError> {
        loop {
            if let Some(found) = e.downcast_ref::<BodyError>() {
                return Some(found);
            }
            e = e.source()?;
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Client(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
