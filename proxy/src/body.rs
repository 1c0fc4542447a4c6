//! The request body sent upstream: the client's body, streamed frame by frame as it arrives
//! (nothing is buffered whole); the response side is [`crate::response`].
//!
//! Three things ride along, because each decides whose fault a failure is:
//! - `limits.max_request_body` is enforced as the body streams (a body that grows past it
//!   ends in [`BodyError::TooLarge`], which cuts the upstream request);
//! - `limits.client_body_timeout`: a client that sends nothing for that long ends in
//!   [`BodyError::Timeout`] (408), so a stalled upload never turns into the backend's 504;
//! - [`BodySent`] tells the exchange when the whole body has been handed upstream: the
//!   request timeout (time to the response head) and the latency the analysis judges start
//!   there, not at the request's arrival.
//!
//! What went wrong with the body is noted in [`BodySent`] too, so the transport answers
//! 400/408/413 for it — however the upstream client library reports the broken exchange.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::Sleep;

/// The client's request body, as its transport delivers it.
#[derive(Debug)]
pub enum ClientBody {
    /// HTTP/1.x, read by hyper's server.
    Http1(Incoming),
    /// An HTTP/2 stream's DATA (and trailer) frames; `crate::http2` drives the connection.
    Http2(H2Body),
    /// None, whatever the client sends: an HTTP/2 `CONNECT` is forwarded as a bodyless
    /// request, as hyper's server did, so no bytes of a would-be tunnel reach a backend.
    Empty,
}

/// An HTTP/2 request stream as a body: data as it comes, flow-control window given back as
/// it is taken (as hyper's own HTTP/2 body does), then the trailers.
#[derive(Debug)]
pub struct H2Body {
    recv: h2::RecvStream,
    /// Declared length not received yet (`Content-Length`; the h2 codec holds the data to it).
    left: Option<u64>,
    data_done: bool,
}

impl H2Body {
    pub(crate) fn new(recv: h2::RecvStream, content_length: Option<u64>) -> H2Body {
        // A stream that already ended has no body, whatever it declared.
        let left = match recv.is_end_stream() {
            true => Some(0),
            false => content_length,
        };
        H2Body {
            recv,
            left,
            data_done: false,
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut self.left {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => self.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ClientBody::Http1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::Http2(b) => b.poll_frame(cx).map_err(Into::into),
            ClientBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Http1(b) => b.is_end_stream(),
            ClientBody::Http2(b) => b.recv.is_end_stream(),
            ClientBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Http1(b) => b.size_hint(),
            ClientBody::Http2(b) => match b.left {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            ClientBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// The request body sent upstream: the client's body, streamed as it arrives, with the
/// body-size limit and the client body timeout applied on the way.
#[derive(Debug)]
pub struct RequestBody {
    inner: Source,
    /// Bytes allowed (`u64::MAX` = unlimited) and bytes seen so far.
    limit: u64,
    seen: u64,
    /// While the body is still coming (`None` for a request without one).
    watch: Option<Watch>,
}

/// Where the body's bytes come from.
#[derive(Debug)]
enum Source {
    /// Streamed from the client as they arrive.
    Client(ClientBody),
    /// A copy kept whole (a replay by the safety net, a mirror copy); `None` once sent.
    Kept(Option<Bytes>),
}

#[derive(Debug)]
struct Watch {
    sent: Arc<BodySent>,
    /// Fires when the client has sent nothing for `timeout`.
    idle: Pin<Box<Sleep>>,
    timeout: Duration,
    /// The body has been asked for at least once (the timer runs from then on).
    waiting: bool,
}

impl Watch {
    fn restart(&mut self) {
        let next = tokio::time::Instant::now() + self.timeout;
        self.idle.as_mut().reset(next);
    }
}

impl RequestBody {
    pub fn new(inner: ClientBody, limit: Option<u64>, timeout: Duration) -> RequestBody {
        let watch = (!inner.is_end_stream()).then(|| Watch {
            sent: Arc::default(),
            idle: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            waiting: false,
        });
        RequestBody {
            inner: Source::Client(inner),
            limit: limit.unwrap_or(u64::MAX),
            seen: 0,
            watch,
        }
    }

    /// A body sent from a kept copy (empty: no body).
    pub fn kept(bytes: Bytes) -> RequestBody {
        RequestBody {
            inner: Source::Kept((!bytes.is_empty()).then_some(bytes)),
            limit: u64::MAX,
            seen: 0,
            watch: None,
        }
    }

    /// When the body has been sent and how it failed, for the exchange (`None`: no body).
    pub(crate) fn sent(&self) -> Option<Arc<BodySent>> {
        self.watch.as_ref().map(|w| Arc::clone(&w.sent))
    }

    fn fail(&mut self, e: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(w) = self.watch.take() {
            w.sent.failed.store(e.kind(), Relaxed);
        }
        Poll::Ready(Some(Err(e)))
    }
}

/// Shared by a request body and the exchange that sends it.
#[derive(Debug, Default)]
pub(crate) struct BodySent {
    /// When the last byte was handed upstream.
    at: OnceLock<Instant>,
    done: Notify,
    /// What went wrong with the body, if anything (a [`BodyError::kind`]).
    failed: AtomicU8,
}

impl BodySent {
    fn mark(&self) {
        if self.at.set(Instant::now()).is_ok() {
            self.done.notify_waiters();
        }
    }

    /// When the whole body had been handed upstream, if it has.
    pub(crate) fn at(&self) -> Option<Instant> {
        self.at.get().copied()
    }

    /// Resolves once the whole body has been handed upstream (never, if it fails).
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.at.get().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// The client's fault that broke the body, if any.
    pub(crate) fn failure(&self) -> Option<BodyFailure> {
        match self.failed.load(Relaxed) {
            1 => Some(BodyFailure::TooLarge),
            2 => Some(BodyFailure::Client),
            3 => Some(BodyFailure::Timeout),
            _ => None,
        }
    }
}

/// What [`BodySent::failure`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFailure {
    TooLarge,
    Client,
    Timeout,
}

/// Why the client's request body could not be forwarded.
#[derive(Debug)]
pub enum BodyError {
    /// The body grew past `limits.max_request_body`.
    TooLarge,
    /// Reading the client's body failed (bad chunk framing, a reset stream, the client went
    /// away, …).
    Client(Box<dyn std::error::Error + Send + Sync>),
    /// The client sent nothing of it for `limits.client_body_timeout`.
    Timeout,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => f.write_str("request body larger than max_request_body"),
            BodyError::Client(e) => write!(f, "reading the client's request body: {e}"),
            BodyError::Timeout => f.write_str("the client stopped sending its request body"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::TooLarge | BodyError::Timeout => None,
            BodyError::Client(e) => Some(&**e),
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

    /// Whose fault, as [`BodySent::failure`] reports it.
    pub(crate) fn failure(&self) -> BodyFailure {
        match self {
            BodyError::TooLarge => BodyFailure::TooLarge,
            BodyError::Client(_) => BodyFailure::Client,
            BodyError::Timeout => BodyFailure::Timeout,
        }
    }

    fn kind(&self) -> u8 {
        match self {
            BodyError::TooLarge => 1,
            BodyError::Client(_) => 2,
            BodyError::Timeout => 3,
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
        let inner = match &mut this.inner {
            Source::Client(inner) => inner,
            Source::Kept(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        return this.fail(BodyError::TooLarge);
                    }
                }
                if inner.is_end_stream() {
                    // The last frame: hyper may not ask again.
                    if let Some(w) = this.watch.take() {
                        w.sent.mark();
                    }
                } else if let Some(w) = &mut this.watch {
                    w.restart();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(BodyError::Client(e)),
            Poll::Ready(None) => {
                if let Some(w) = this.watch.take() {
                    w.sent.mark();
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Some(w) = &mut this.watch else {
                    return Poll::Pending;
                };
                if !w.waiting {
                    // Asked for only now (after the connect): the clock starts here.
                    w.waiting = true;
                    w.restart();
                }
                match w.idle.as_mut().poll(cx) {
                    Poll::Ready(()) => this.fail(BodyError::Timeout),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Client(inner) => inner.is_end_stream(),
            Source::Kept(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Client(inner) => inner.size_hint(),
            Source::Kept(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
