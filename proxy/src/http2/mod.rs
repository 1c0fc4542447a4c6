//! The HTTP/2 server: every stream of a connection served on the connection's own task.
//!
//! Why: through hyper, an HTTP/2 request cost ~60k instructions — hyper's server spawned a
//! task per stream, the request crossed hyper's HTTP/1.1 client connection task and its
//! channels to reach the backend, and the task and future moves were a sixth of it
//! (docs/PERFORMANCE.md). HAProxy multiplexes streams inside one event loop. So this module
//! drives `h2::server` itself: one task per connection polls the connection (reading frames,
//! accepting streams, flushing every queued frame in one write) and the streams' futures in a
//! `FuturesUnordered` beside it — no spawn, no channel, no executor. A stream without a body
//! to an HTTP/1.1 upstream ([`stream`]) runs the phases over the raw pooled client the fast
//! HTTP/1.1 path uses (`upstream::raw`); bodies and HTTP/2 upstreams take the general path
//! (`general::handle`, hyper's client), still on this task.
//!
//! The defences are the h2 codec's, configured in [`builder`] exactly as hyper configured it
//! before: 256 concurrent streams, rapid reset (64 client-reset streams pending accept, 256
//! locally reset, then GOAWAY `ENHANCE_YOUR_CALM`), the header list bounded by
//! `max_header_bytes` (which also bounds CONTINUATION frames; the codec answers 431), flow
//! control with 1 MiB windows and a 1 MiB send buffer per stream. A connection the codec
//! closes for a protocol violation is counted as `http2_protocol`. Shutdown sends GOAWAY and
//! lets the streams in flight finish; a connection is pinged every 30 s and dropped when a
//! ping goes unanswered for 20 s.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::{Ping, PingPong, Reason};
use hyper_util::server::graceful::Watcher;
use switchyard_config::Limits;
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::edge::{ClientStream, Edge, Rejection, Slot};
use crate::framing::ScanIo;
use crate::general;

mod head;
mod respond;
mod stream;

/// What a client sends first on an h2c (prior knowledge) connection (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Idle or not, a connection is pinged this often…
const PING_EVERY: Duration = Duration::from_secs(30);
/// …and dropped if the ping is not answered within this.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether the first bytes of a plain connection are (the start of) the HTTP/2 preface.
pub(crate) fn is_preface(read: &[u8]) -> bool {
    let n = read.len().min(PREFACE.len());
    n > 0 && read[..n] == PREFACE[..n]
}

/// The h2 codec's limits (what hyper's server was configured with before, set explicitly).
pub(crate) fn builder(limits: &Limits) -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(1024 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_frame_size(16 * 1024)
        .max_concurrent_streams(256)
        // Rapid reset (CVE-2023-44487): at most this many streams reset by the client before
        // being accepted, and at most this many locally reset for errors, then GOAWAY.
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(Some(256))
        // CONTINUATION floods: the codec stops decoding a header block at this size (and
        // bounds the CONTINUATION frames it buffers for it).
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
        .max_send_buffer_size(1024 * 1024);
    builder
}

/// Serves one HTTP/2 connection to the end. `read_before`: bytes the fast path already read
/// (h2c's preface). The watcher is held so a graceful shutdown waits for this connection;
/// `shutdown` turning true sends GOAWAY.
pub(crate) async fn serve<I: ClientStream + 'static>(
    edge: Arc<Edge>,
    io: I,
    read_before: Bytes,
    client: SocketAddr,
    slot: Slot,
    _watcher: Watcher,
    mut shutdown: watch::Receiver<bool>,
) {
    let io = ScanIo::new(io, None, Arc::default()).with_read_before(read_before);
    let handshake = edge.h2.handshake::<_, Bytes>(io);
    let mut conn = match tokio::time::timeout(edge.header_read_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            ended(&edge, client, &e);
            return;
        }
        Err(_elapsed) => {
            edge.rejections.count(Rejection::HeaderTimeout);
            return;
        }
    };
    let shared = stream::Shared {
        general: general::Conn::new(Arc::clone(&edge), client, None, slot),
        client_ip: client.ip().to_string(),
        client,
        edge,
    };
    let mut keep_alive = KeepAlive {
        ping: conn.ping_pong(),
        timer: Box::pin(tokio::time::sleep(PING_EVERY)),
        awaiting: false,
        ticked: false,
    };
    let mut streams = FuturesUnordered::new();
    // Allocations of streams that ended, for the next ones (see [`Recycle`]).
    let mut spare = Vec::new();
    let stopping = shutdown.changed();
    tokio::pin!(stopping);
    let mut closing = false;
    let served = std::future::poll_fn(|cx| {
        if !closing && stopping.as_mut().poll(cx).is_ready() {
            // GOAWAY: no new streams; the ones in flight finish.
            closing = true;
            conn.graceful_shutdown();
        }
        if keep_alive.timed_out(cx) {
            tracing::debug!(%client, "HTTP/2 ping unanswered; closing the connection");
            conn.abrupt_shutdown(Reason::NO_ERROR);
        }
        if std::mem::take(&mut keep_alive.ticked) && streams.is_empty() {
            // Idle: an idle connection keeps no stream state.
            spare.clear();
        }
        loop {
            // The streams first: whatever they queue is flushed by the connection's poll
            // below, all streams' frames in one write.
            while let Poll::Ready(Some(slot)) = streams.poll_next_unpin(cx) {
                if spare.len() < SPARE {
                    spare.push(slot);
                }
            }
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok((req, respond)))) => {
                    let stream = stream::serve(&shared, req, respond);
                    streams.push(Recycle::new(spare.pop(), stream));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    if let Err(e) = served {
        ended(&shared.edge, client, &e);
    }
}

/// A connection the codec ended with an error: counted if it was the client's violation.
fn ended(edge: &Edge, client: SocketAddr, e: &h2::Error) {
    if e.is_go_away() && e.is_library() {
        edge.rejections.count(Rejection::Http2Protocol);
    }
    tracing::debug!(%client, error = %e, "HTTP/2 connection ended with an error");
}

/// At most this many ended streams' allocations are kept for reuse.
const SPARE: usize = 16;

/// A stream's future in an allocation that outlives it: when the stream ends, its state is
/// dropped and the empty allocation handed back, for the connection's next stream. A stream's
/// future is a few KiB (the phases, the raw exchange, the response), too large for the
/// allocator's fast path: a fresh one per stream cost ~1,000 instructions.
struct Recycle<F>(Option<Pin<Box<Option<F>>>>);

impl<F: Future<Output = ()>> Recycle<F> {
    fn new(spare: Option<Pin<Box<Option<F>>>>, stream: F) -> Recycle<F> {
        Recycle(Some(match spare {
            Some(mut slot) => {
                slot.set(Some(stream));
                slot
            }
            None => Box::pin(Some(stream)),
        }))
    }
}

impl<F: Future<Output = ()>> Future for Recycle<F> {
    type Output = Pin<Box<Option<F>>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let slot = self.0.as_mut().expect("polled after it ended");
        let stream = slot.as_mut().as_pin_mut().expect("a stream in flight");
        if stream.poll(cx).is_pending() {
            return Poll::Pending;
        }
        slot.set(None);
        Poll::Ready(self.0.take().expect("checked"))
    }
}

/// Pings the client every [`PING_EVERY`]; a ping unanswered for [`PING_TIMEOUT`] ends it.
struct KeepAlive {
    ping: Option<PingPong>,
    timer: Pin<Box<Sleep>>,
    awaiting: bool,
    /// The timer fired since this was last cleared (the connection's slow tick).
    ticked: bool,
}

impl KeepAlive {
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(ping) = &mut self.ping else {
            return false;
        };
        if self.awaiting && ping.poll_pong(cx).is_ready() {
            self.awaiting = false;
            rearm(&mut self.timer, PING_EVERY);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            self.ticked = true;
            if self.awaiting {
                return true;
            }
            self.awaiting = ping.send_ping(Ping::opaque()).is_ok();
            rearm(
                &mut self.timer,
                if self.awaiting {
                    PING_TIMEOUT
                } else {
                    PING_EVERY
                },
            );
        }
        false
    }
}

fn rearm(timer: &mut Pin<Box<Sleep>>, after: Duration) {
    timer.as_mut().reset(tokio::time::Instant::now() + after);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_recognised_from_its_first_bytes() {
        assert!(is_preface(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04"
        ));
        assert!(is_preface(b"PRI * HTTP/2.0\r\n"));
        assert!(!is_preface(b"PRI * HTTP/1.1\r\n"));
        assert!(!is_preface(b"GET / HTTP/1.1\r\n"));
        assert!(!is_preface(b""));
    }
}
