//! The response body sent to the client on the general path: the upstream's own stream, or a
//! short proxy-made text. One concrete enum instead of a boxed trait object keeps a request
//! free of extra allocations.
//!
//! The upstream's body carries the request's context and finishes it when the body ends,
//! breaks or is dropped: an upstream that broke off mid-body is the backend's failure
//! (`reset`), a client that went away is not; a gRPC status in the trailers is read here.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use std::sync::Arc;

use crate::body::{BodyError, BodySent};
use crate::framing::AbortSignal;
use crate::request::{End, RequestCtx};

/// The response body sent to the client.
#[derive(Debug)]
pub enum ResponseBody {
    /// Streamed from the upstream as it arrives (trailers included), with the request's
    /// context, which it finishes when the body ends (boxed: the context is large, and this
    /// enum is moved around by hyper).
    Upstream(Box<Tracked>),
    /// A response the proxy made itself (errors, admin pages).
    Local(Full<Bytes>),
}

/// An upstream body and the request it answers.
#[derive(Debug)]
pub struct Tracked {
    body: Incoming,
    ctx: RequestCtx,
    /// Body bytes passed on so far (for the access log).
    bytes: u64,
    /// The request's body, whose failure (the client's) may break the exchange too.
    request_body: Option<Arc<BodySent>>,
    /// For an HTTP/1.x client: resets its connection when the upstream breaks off.
    abort: Option<Arc<AbortSignal>>,
}

impl ResponseBody {
    pub fn text(text: impl Into<Bytes>) -> ResponseBody {
        ResponseBody::Local(Full::new(text.into()))
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::Local(Full::new(Bytes::new()))
    }

    /// The upstream's body; `ctx` is finished when it ends, breaks or is dropped.
    pub(crate) fn upstream(
        body: Incoming,
        ctx: RequestCtx,
        request_body: Option<Arc<BodySent>>,
        abort: Option<Arc<AbortSignal>>,
    ) -> ResponseBody {
        ResponseBody::Upstream(Box::new(Tracked {
            body,
            ctx,
            bytes: 0,
            request_body,
            abort,
        }))
    }
}

impl Tracked {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let poll = Pin::new(&mut self.body).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    self.ctx.trailers(trailers);
                }
            }
            Poll::Ready(None) => self.ctx.finish(End::Complete, self.bytes),
            Poll::Ready(Some(Err(e))) => {
                // A request body that failed (the client's) also breaks the exchange.
                let client = BodyError::find(e).is_some()
                    || self
                        .request_body
                        .as_ref()
                        .is_some_and(|b| b.failure().is_some());
                let end = if client {
                    End::ClientGone
                } else {
                    if let Some(abort) = &self.abort {
                        abort.abort();
                    }
                    End::UpstreamAborted
                };
                self.ctx.finish(end, self.bytes);
            }
            Poll::Pending => {}
        }
        poll
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Not read to the end: the client went away (or asked with HEAD).
        self.ctx.finish(End::ClientGone, self.bytes);
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
            ResponseBody::Upstream(t) => t.poll_frame(cx),
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
            ResponseBody::Upstream(t) => t.body.is_end_stream(),
            ResponseBody::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(t) => t.body.size_hint(),
            ResponseBody::Local(b) => b.size_hint(),
        }
    }
}
