//! What the connections of one listener share, and what one connection carries.
//!
//! Every transport — the fast HTTP/1.1 path (`http1`), the HTTP/2 server (`http2`) and the
//! general hyper path (`general`) — serves a connection with one [`Edge`]: the routing table, the edge limits,
//! the access log, the rejection counters and the upgraded tunnels to wait for at shutdown.
//! The listener builds it once; nothing in it changes while it serves. [`ClientStream`] is
//! what both need of a client connection.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::io;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};

use crate::access_log::AccessLog;
use crate::idle::IdleSet;
use crate::TableHandle;

/// What every connection of one listener shares.
#[derive(Debug)]
pub struct Edge {
    pub table: TableHandle,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
    pub max_request_body: Option<u64>,
    /// A request head (and a TLS handshake) must arrive within this.
    pub header_read_timeout: Duration,
    /// A request body that stalls this long is answered 408 (`body.rs`).
    pub client_body_timeout: Duration,
    /// The largest request head read (the fast path's buffer limit, hyper's `max_buf_size`).
    pub max_head: usize,
    pub access_log: Option<Arc<AccessLog>>,
    pub tunnels: Tunnels,
    pub rejections: Rejections,
    /// Forward `TRACE` (`limits.trace: forward`) instead of answering 405.
    pub allow_trace: bool,
    /// hyper's HTTP/1.x server settings for the general path (`general::http_builder`)…
    pub(crate) http: auto::Builder<TokioExecutor>,
    /// …and the h2 codec's for HTTP/2 connections (`http2::builder`).
    pub(crate) h2: h2::server::Builder,
    /// Its idle keep-alive connections, woken at their deadline or shutdown (`idle`).
    pub(crate) idle: IdleSet,
}

/// A client connection as the transports drive it: plain TCP, or TLS.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Waits for input without reading, where the socket alone can tell (plain TCP): lets an
    /// idle connection hold no buffer. `None` for TLS, which may hold decrypted bytes the
    /// socket no longer shows — it must be read to find out.
    fn readable(&self) -> Option<impl Future<Output = io::Result<()>> + Send + '_>;

    /// Makes closing the connection a reset (RST, zero linger) instead of a clean end: for a
    /// response whose upstream broke off, which must never look complete to the client.
    fn reset_on_close(&self);
}

impl ClientStream for TcpStream {
    fn readable(&self) -> Option<impl Future<Output = io::Result<()>> + Send + '_> {
        // The socket's one reader waker slot, not `readable()`'s waiter node: the future is a
        // pointer (an idle connection waits in it; 152 bytes less per connection) and cheaper
        // to poll. One task reads a client connection, so the one slot is enough.
        Some(std::future::poll_fn(move |cx| self.poll_read_ready(cx)))
    }

    fn reset_on_close(&self) {
        let _ = self.set_zero_linger();
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn readable(&self) -> Option<impl Future<Output = io::Result<()>> + Send + '_> {
        None::<std::future::Pending<io::Result<()>>>
    }

    fn reset_on_close(&self) {
        let _ = self.get_ref().0.set_zero_linger();
    }
}

/// Live numbers about one listener, read by the exporter.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub active: AtomicI64,
    pub accepted: AtomicU64,
    /// Connections closed at once because `max_connections` was reached.
    pub refused: AtomicU64,
}

/// Why the edge refused a connection or a request.
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    MaxConnections = 0,
    HeaderTimeout = 1,
    HeaderTooLarge = 2,
    BadRequest = 3,
    BodyTooLarge = 4,
    TlsHandshake = 5,
    /// The client stopped sending its request body (`client_body_timeout`, 408).
    BodyTimeout = 6,
    /// A method the edge refuses (TRACE by default, 405).
    MethodNotAllowed = 7,
    /// An HTTP/2 connection the codec closed for the client's violation (GOAWAY with an
    /// error: a bad preface, rapid reset, a CONTINUATION flood, flow-control abuse…).
    Http2Protocol = 8,
}

const REJECTION_REASONS: [&str; 9] = [
    "max_connections",
    "header_timeout",
    "header_too_large",
    "bad_request",
    "body_too_large",
    "tls_handshake",
    "body_timeout",
    "method_not_allowed",
    "http2_protocol",
];

/// `switchyard_edge_rejections_total{listener, reason}`, resolved once per listener.
#[derive(Debug)]
pub struct Rejections([metrics::Counter; 9]);

impl Rejections {
    pub(crate) fn new(listener: &str) -> Rejections {
        Rejections(REJECTION_REASONS.map(|reason| {
            let c = metrics::counter!(
                "switchyard_edge_rejections_total",
                "listener" => listener.to_string(),
                "reason" => reason
            );
            c.absolute(0);
            c
        }))
    }

    pub fn count(&self, why: Rejection) {
        self.0[why as usize].increment(1);
    }
}

/// Upgraded (WebSocket…) tunnels of one listener: counted so shutdown can wait for them, and
/// told to close when the drain deadline passes.
#[derive(Debug, Clone)]
pub struct Tunnels(Arc<TunnelsInner>);

#[derive(Debug)]
struct TunnelsInner {
    open: AtomicUsize,
    all_closed: Notify,
    close: watch::Sender<bool>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels(Arc::new(TunnelsInner {
            open: AtomicUsize::new(0),
            all_closed: Notify::new(),
            close: watch::channel(false).0,
        }))
    }
}

/// Held by one tunnel; [`TunnelGuard::wait`] resolves when it must close.
pub struct TunnelGuard {
    tunnels: Tunnels,
    close: watch::Receiver<bool>,
}

impl Tunnels {
    pub fn enter(&self) -> TunnelGuard {
        self.0.open.fetch_add(1, Relaxed);
        TunnelGuard {
            tunnels: self.clone(),
            close: self.0.close.subscribe(),
        }
    }

    /// Tells every open tunnel to close (the drain deadline passed).
    pub(crate) fn close_all(&self) {
        let _ = self.0.close.send(true);
    }

    pub(crate) async fn all_closed(&self) {
        loop {
            let notified = self.0.all_closed.notified();
            if self.0.open.load(Relaxed) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl TunnelGuard {
    pub async fn wait(&mut self) {
        let _ = self.close.wait_for(|closing| *closing).await;
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        if self.tunnels.0.open.fetch_sub(1, Relaxed) == 1 {
            self.tunnels.0.all_closed.notify_waiters();
        }
    }
}

/// Frees the connection's slot when the connection (and its tunnel, if any) is gone.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) _permit: OwnedSemaphorePermit,
    pub(crate) stats: Arc<ListenerStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Relaxed);
        // Dropped on the worker that accepted the connection: its own cache line.
        crate::workers::this_worker().active.fetch_sub(1, Relaxed);
    }
}
