//! The two body types of the data path: what goes upstream and what goes back to the client.
//!
//! Bodies are streamed frame by frame in both directions (nothing is buffered whole), and a
//! response is either the upstream's own stream or a short proxy-made text. One concrete enum
//! instead of a boxed trait object keeps a request free of extra allocations.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

/// The request body sent upstream: the client's body, streamed as it arrives.
pub type RequestBody = Incoming;

/// The response body sent to the client.
#[derive(Debug)]
pub enum ResponseBody {
    /// Streamed from the upstream as it arrives (trailers included).
    Upstream(Incoming),
    /// A response the proxy made itself (errors, admin pages).
    Local(Full<Bytes>),
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
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(b) => b.size_hint(),
            ResponseBody::Local(b) => b.size_hint(),
        }
    }
}
