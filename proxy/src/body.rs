//! The two body types of the data path: what goes upstream and what goes back to the client.
//!
//! Bodies are streamed frame by frame in both directions (nothing is buffered whole), and a
//! response is either the upstream's own stream or a short proxy-made text. One concrete enum
//! instead of a boxed trait object keeps a request free of extra allocations.
//!
//! The request body also enforces `limits.max_request_body` as it streams (a body that grows
//! past it ends in [`BodyError::TooLarge`], which cuts the upstream request) and marks errors
//! that are the *client's* fault, so the pipeline can answer 400/413 for them instead of
//! blaming the backend with a 502.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::access_log::Pending;

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

/// The response body sent to the client.
#[derive(Debug)]
pub enum ResponseBody {
    /// Streamed from the upstream as it arrives (trailers included).
    Upstream(Incoming),
    /// A response the proxy made itself (errors, admin pages).
    Local(Full<Bytes>),
    /// Any of the above, counted for the access log; the line is written when it ends.
    /// Only exists while the access log is on (one allocation per logged request).
    Logged(Box<(ResponseBody, Pending)>),
}

impl ResponseBody {
    pub fn text(text: impl Into<Bytes>) -> ResponseBody {
        ResponseBody::Local(Full::new(text.into()))
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::Local(Full::new(Bytes::new()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ResponseBody::Logged(logged) => {
                let (body, pending) = &mut **logged;
                let poll = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &poll {
                    if let Some(data) = frame.data_ref() {
                        pending.bytes += data.len() as u64;
                    }
                }
                poll
            }
            ResponseBody::Local(b) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(b) => b.is_end_stream(),
            ResponseBody::Local(b) => b.is_end_stream(),
            ResponseBody::Logged(logged) => logged.0.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(b) => b.size_hint(),
            ResponseBody::Local(b) => b.size_hint(),
            ResponseBody::Logged(logged) => logged.0.size_hint(),
        }
    }
}
