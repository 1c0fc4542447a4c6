//! Accepting client connections and serving HTTP/1.1 and HTTP/2 on them.
//!
//! One accept loop per listener. Each connection is served by hyper-util's `auto` builder,
//! which speaks HTTP/1.1 and, on seeing the HTTP/2 preface, h2c with prior knowledge — both on
//! one port. A TLS listener first completes the rustls handshake (bounded by the header read
//! timeout) and serves HTTP/2 or HTTP/1.1 as ALPN chose. HTTP/1.x connections are read through
//! the smuggling scanner ([`crate::framing`]).
//!
//! Limits (SPEC §9): a semaphore caps concurrent connections (excess ones are closed at once
//! rather than queued, and counted); hyper enforces the head size (431) and the header read
//! timeout (slowloris; for HTTP/1.1 its timer also runs while a kept-alive connection waits
//! for its next request, so it is the idle keep-alive timeout too); HTTP/2 streams, resets and
//! header lists are bounded in [`http_builder`]. Every refusal is counted in
//! `switchyard_edge_rejections_total{listener, reason}`.
//!
//! Shutdown is graceful: stop accepting, let in-flight requests and upgraded tunnels finish up
//! to a deadline, then return. Accept errors such as running out of file descriptors back off
//! instead of spinning.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use switchyard_config::Limits;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::access_log::AccessLog;
use crate::framing::{FramingVerdict, ScanIo, Scanner};
use crate::h1;
use crate::pipeline::{self, Conn, Edge};
use crate::tls::CertStore;
use crate::TableHandle;

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
}

const REJECTION_REASONS: [&str; 6] = [
    "max_connections",
    "header_timeout",
    "header_too_large",
    "bad_request",
    "body_too_large",
    "tls_handshake",
];

/// `switchyard_edge_rejections_total{listener, reason}`, resolved once per listener.
#[derive(Debug)]
pub struct Rejections([metrics::Counter; 6]);

impl Rejections {
    fn new(listener: &str) -> Rejections {
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

    async fn all_closed(&self) {
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

/// A bound listener ready to serve.
pub struct Listener {
    pub name: String,
    pub tcp: TcpListener,
    pub stats: Arc<ListenerStats>,
    tls: Option<Arc<CertStore>>,
    access_log: Option<Arc<AccessLog>>,
}

/// Frees the connection's slot when the connection (and its tunnel, if any) is gone.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<ListenerStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Relaxed);
    }
}

impl Listener {
    pub async fn bind(name: &str, address: SocketAddr) -> std::io::Result<Listener> {
        Ok(Listener {
            name: name.to_string(),
            tcp: bind_tcp(address)?,
            stats: Arc::default(),
            tls: None,
            access_log: None,
        })
    }

    /// Terminates TLS with these certificates.
    pub fn with_tls(mut self, certs: Option<Arc<CertStore>>) -> Listener {
        self.tls = certs;
        self
    }

    /// Writes one access log line per request.
    pub fn with_access_log(mut self, log: Option<Arc<AccessLog>>) -> Listener {
        self.access_log = log;
        self
    }

    /// Serves until `shutdown` turns true, then drains in-flight requests for up to `drain`.
    pub async fn serve(
        self,
        table: TableHandle,
        limits: Limits,
        mut shutdown: watch::Receiver<bool>,
        drain: Duration,
    ) {
        let builder = Arc::new(http_builder(&limits));
        let graceful = GracefulShutdown::new();
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let acceptor = self
            .tls
            .as_ref()
            .map(|certs| TlsAcceptor::from(certs.server_config()));
        let edge = Arc::new(Edge {
            table,
            scheme: if acceptor.is_some() { "https" } else { "http" },
            max_request_body: limits.max_request_body,
            access_log: self.access_log.clone(),
            tunnels: Tunnels::default(),
            rejections: Rejections::new(&self.name),
        });
        let fast = h1::Settings {
            header_read_timeout: limits.header_read_timeout,
            max_head: limits.max_header_bytes.max(8192),
        };
        let setup = Arc::new(ConnSetup {
            builder,
            edge: Arc::clone(&edge),
            handshake_timeout: limits.header_read_timeout,
            max_head: limits.max_header_bytes.max(8192),
            fast,
        });
        loop {
            let (stream, client) = tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: wait for connections to close instead of spinning.
                        tracing::warn!(listener = %self.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            self.stats.accepted.fetch_add(1, Relaxed);
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                self.stats.refused.fetch_add(1, Relaxed);
                edge.rejections.count(Rejection::MaxConnections);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            self.stats.active.fetch_add(1, Relaxed);
            let slot = Slot {
                _permit: permit,
                stats: Arc::clone(&self.stats),
            };
            let setup = Arc::clone(&setup);
            let watcher = graceful.watcher();
            match &acceptor {
                None => {
                    tokio::spawn(setup.serve_http1(
                        stream,
                        client,
                        slot,
                        watcher,
                        shutdown.clone(),
                    ));
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        let handshake = acceptor.accept(stream);
                        let tls =
                            match tokio::time::timeout(setup.handshake_timeout, handshake).await {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => {
                                    tracing::debug!(%client, error = %e, "TLS handshake failed");
                                    setup.edge.rejections.count(Rejection::TlsHandshake);
                                    return;
                                }
                                Err(_) => {
                                    setup.edge.rejections.count(Rejection::HeaderTimeout);
                                    return;
                                }
                            };
                        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                            setup
                                .serve(tls, Bytes::new(), client, slot, watcher, false)
                                .await;
                        } else {
                            setup
                                .serve_http1(tls, client, slot, watcher, shutdown)
                                .await;
                        }
                    });
                }
            }
        }
        drop(self.tcp);
        tracing::info!(listener = %self.name, "stopped accepting; draining connections");
        let drained = async {
            graceful.shutdown().await;
            edge.tunnels.all_closed().await;
        };
        if tokio::time::timeout(drain, drained).await.is_err() {
            tracing::warn!(listener = %self.name, "drain deadline passed; closing the rest");
            let _ = edge.tunnels.0.close.send(true);
        }
    }
}

/// Connections the kernel may hold waiting for `accept` (capped by `net.core.somaxconn`).
/// tokio's default of 1,024 overflows when thousands of clients connect at once: each
/// dropped SYN costs that client a one-second retransmit.
const ACCEPT_BACKLOG: u32 = 65_535;

fn bind_tcp(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted proxy may rebind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// What every connection of a listener is served with.
struct ConnSetup {
    builder: Arc<auto::Builder<TokioExecutor>>,
    edge: Arc<Edge>,
    handshake_timeout: Duration,
    max_head: usize,
    /// HTTP/1.1 requests without a body are served by [`h1`] first.
    fast: h1::Settings,
}

impl ConnSetup {
    /// Serves an HTTP/1.x connection (plain TCP, or TLS that chose HTTP/1.1): on the fast path
    /// while its requests allow, then (if ever) on hyper with the bytes read so far put back.
    async fn serve_http1<S: h1::ClientStream + 'static>(
        self: Arc<Self>,
        stream: S,
        client: SocketAddr,
        slot: Slot,
        watcher: Watcher,
        shutdown: watch::Receiver<bool>,
    ) {
        // The watcher stays held meanwhile, so a graceful shutdown waits for this connection
        // too (the fast path closes it at its next idle moment).
        match h1::serve(&self.edge, stream, client, &self.fast, shutdown).await {
            h1::Ended::Closed => {}
            h1::Ended::Fallback(stream, read) => {
                self.serve(stream, read, client, slot, watcher, true).await;
            }
        }
    }

    /// Serves one connection (plain or TLS) to the end. `read_before`: bytes the fast path
    /// already read from `io`. `scan`: read it through the smuggling scanner (anything that
    /// may speak HTTP/1.x).
    async fn serve<I>(
        self: Arc<Self>,
        io: I,
        read_before: Bytes,
        client: SocketAddr,
        slot: Slot,
        watcher: Watcher,
        scan: bool,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let framing = scan.then(|| Arc::new(FramingVerdict::default()));
        let scanner = framing
            .as_ref()
            .map(|v| Scanner::new(self.max_head, Arc::clone(v)));
        let conn = Arc::new(Conn {
            client,
            edge: Arc::clone(&self.edge),
            framing,
            _slot: slot,
        });
        let service = service_fn(move |req| {
            let conn = Arc::clone(&conn);
            async move { Ok::<_, std::convert::Infallible>(pipeline::handle(&conn, req).await) }
        });
        let served = watcher.watch(self.builder.serve_connection_with_upgrades(
            TokioIo::new(ScanIo::new(io, scanner).with_read_before(read_before)),
            service,
        ));
        if let Err(e) = served.await {
            let reason = e.downcast_ref::<hyper::Error>().and_then(|e| {
                if e.is_timeout() {
                    Some(Rejection::HeaderTimeout)
                } else if e.is_parse_too_large() {
                    Some(Rejection::HeaderTooLarge)
                } else if e.is_parse() {
                    Some(Rejection::BadRequest)
                } else {
                    None
                }
            });
            if let Some(reason) = reason {
                self.edge.rejections.count(reason);
            }
            tracing::debug!(%client, error = %e, "connection ended with an error");
        }
    }
}

/// hyper's limits, set explicitly rather than left to defaults that may change.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Runs from the moment the connection waits for a request head, so it bounds both a
        // slow head (slowloris) and an idle kept-alive connection.
        .header_read_timeout(limits.header_read_timeout)
        // hyper answers 431 when a request head does not fit; its minimum buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(100)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        // Rapid reset (CVE-2023-44487): at most this many streams reset by the client before
        // being accepted, and at most this many locally reset for errors, then GOAWAY.
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(256)
        // CONTINUATION floods: the h2 codec stops decoding a header block at this size (and
        // bounds the CONTINUATION frames it buffers for it).
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
        .max_send_buf_size(1024 * 1024)
        // Dead peers: ping an idle connection, drop it if the ping is not answered.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}
