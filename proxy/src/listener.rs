//! Accepting client connections and serving HTTP/1.1 and HTTP/2 on them.
//!
//! One accept loop per listener. A plain connection starts on the fast HTTP/1.1 path
//! (`http1`); on h2c's preface it moves to the HTTP/2 server (`http2`), on anything else the
//! fast path does not take to hyper (`general`, read through the smuggling scanner
//! [`crate::framing`]) — HTTP/1.1 and h2c with prior knowledge on one port. A TLS listener
//! first completes the rustls handshake (bounded by the header read timeout) and serves
//! HTTP/2 or HTTP/1.1 as ALPN chose.
//!
//! Limits (SPEC §9): a semaphore caps concurrent connections (excess ones are closed at once
//! rather than queued, and counted); hyper enforces the head size (431) and the header read
//! timeout (slowloris; for HTTP/1.1 its timer also runs while a kept-alive connection waits
//! for its next request, so it is the idle keep-alive timeout too); HTTP/2 streams, resets and
//! header lists are bounded in `http2::builder`. Every refusal is counted in
//! `switchyard_edge_rejections_total{listener, reason}`.
//!
//! Shutdown is graceful: stop accepting, let in-flight requests and upgraded tunnels finish up
//! to a deadline, then return. Accept errors such as running out of file descriptors back off
//! instead of spinning.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use switchyard_config::{Limits, TracePolicy};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::access_log::AccessLog;
pub use crate::edge::ListenerStats;
use crate::edge::{ClientStream, Edge, Rejection, Rejections, Slot, Tunnels};
use crate::general;
use crate::idle::IdleSet;
use crate::tls::CertStore;
use crate::workers::{self, Workers};
use crate::TableHandle;
use crate::{http1, http2};

/// A bound listener ready to serve.
pub struct Listener {
    pub name: String,
    pub tcp: TcpListener,
    pub stats: Arc<ListenerStats>,
    tls: Option<Arc<CertStore>>,
    access_log: Option<Arc<AccessLog>>,
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

    /// Serves on every worker until `shutdown` turns true, then drains in-flight requests
    /// for up to `drain`; the future ends when every worker has. The listening socket is one:
    /// each worker registers a duplicate of it with its own reactor and accepts from the
    /// shared queue; a connection then stays on the worker that accepted it.
    pub fn serve(
        self,
        workers: &Workers,
        table: TableHandle,
        limits: Limits,
        shutdown: watch::Receiver<bool>,
        drain: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        tracing::debug!(
            listener = %self.name,
            bytes = future_size(serve_http1::<tokio::net::TcpStream>),
            "an idle plain connection's task holds a future of this size"
        );
        let name = self.name.clone();
        let socket = self.tcp.into_std();
        let shared = Arc::new(Shared {
            name: self.name,
            stats: self.stats,
            acceptor: self
                .tls
                .as_ref()
                .map(|certs| TlsAcceptor::from(certs.server_config())),
            access_log: self.access_log,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            table,
            limits,
        });
        let loops = match socket {
            Ok(socket) => workers.spawn(|worker| {
                let (shared, shutdown) = (Arc::clone(&shared), shutdown.clone());
                let socket = socket.try_clone();
                async move {
                    // Registered here, inside the worker's runtime: its reactor wakes it.
                    match socket.and_then(TcpListener::from_std) {
                        Ok(tcp) => accept_loop(shared, tcp, shutdown, drain).await,
                        Err(e) => tracing::error!(listener = %shared.name, worker = worker + 1, error = %e, "cannot accept on this worker"),
                    }
                }
            }),
            Err(e) => {
                tracing::error!(listener = %name, error = %e, "cannot hand the listening socket to the workers");
                Vec::new()
            }
        };
        async move {
            for accepting in loops {
                let _ = accepting.await;
            }
        }
    }
}

/// What one listener's accept loops on every worker share: set once, written per connection
/// only (the counts and the connection cap), never per request.
struct Shared {
    name: String,
    stats: Arc<ListenerStats>,
    acceptor: Option<TlsAcceptor>,
    access_log: Option<Arc<AccessLog>>,
    /// `limits.max_connections` across all workers.
    permits: Arc<Semaphore>,
    table: TableHandle,
    limits: Limits,
}

/// One worker's accept loop for one listener: accepts, serves each connection on a task of
/// this worker's runtime, and at shutdown drains this worker's connections.
async fn accept_loop(
    shared: Arc<Shared>,
    tcp: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let limits = &shared.limits;
    let graceful = GracefulShutdown::new();
    let acceptor = shared.acceptor.clone();
    let edge = Arc::new(Edge {
        table: Arc::clone(&shared.table),
        scheme: if acceptor.is_some() { "https" } else { "http" },
        max_request_body: limits.max_request_body,
        header_read_timeout: limits.header_read_timeout,
        client_body_timeout: limits.client_body_timeout,
        max_head: limits.max_header_bytes.max(8192),
        access_log: shared.access_log.clone(),
        tunnels: Tunnels::default(),
        rejections: Rejections::new(&shared.name),
        allow_trace: limits.trace == TracePolicy::Forward,
        http: general::http_builder(limits),
        h2: http2::builder(limits),
        idle: IdleSet::default(),
    });
    // This worker's idle connections, swept on this worker: the set is never shared
    // between threads.
    tokio::spawn({
        let (edge, shutdown) = (Arc::clone(&edge), shutdown.clone());
        async move { edge.idle.sweep(shutdown).await }
    });
    let worker = workers::this_worker();
    loop {
        let (stream, client) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait for connections to close instead of spinning.
                    tracing::warn!(listener = %shared.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        shared.stats.accepted.fetch_add(1, Relaxed);
        worker.accepted.fetch_add(1, Relaxed);
        let Ok(permit) = Arc::clone(&shared.permits).try_acquire_owned() else {
            shared.stats.refused.fetch_add(1, Relaxed);
            edge.rejections.count(Rejection::MaxConnections);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        shared.stats.active.fetch_add(1, Relaxed);
        worker.active.fetch_add(1, Relaxed);
        let slot = Slot {
            _permit: permit,
            stats: Arc::clone(&shared.stats),
        };
        let edge = Arc::clone(&edge);
        let watcher = graceful.watcher();
        match &acceptor {
            None => {
                let shutdown = shutdown.clone();
                tokio::spawn(serve_http1(edge, stream, client, slot, watcher, shutdown));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let handshake = acceptor.accept(stream);
                    let tls = match tokio::time::timeout(edge.header_read_timeout, handshake).await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%client, error = %e, "TLS handshake failed");
                            edge.rejections.count(Rejection::TlsHandshake);
                            return;
                        }
                        Err(_) => {
                            edge.rejections.count(Rejection::HeaderTimeout);
                            return;
                        }
                    };
                    // The protocol ALPN agreed on is the only one spoken: HTTP/1.1 bytes
                    // on an h2 connection are a bad preface (GOAWAY), not a request.
                    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                        let none = Bytes::new();
                        http2::serve(edge, tls, none, client, slot, watcher, shutdown).await;
                    } else {
                        serve_http1(edge, tls, client, slot, watcher, shutdown).await;
                    }
                });
            }
        }
    }
    // The socket closes when the last worker's duplicate is dropped.
    drop(tcp);
    tracing::info!(listener = %shared.name, "stopped accepting; draining connections");
    let drained = async {
        graceful.shutdown().await;
        edge.tunnels.all_closed().await;
    };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!(listener = %shared.name, "drain deadline passed; closing the rest");
        edge.tunnels.close_all();
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

/// Serves a connection that did not choose HTTP/2 by ALPN (plain TCP, or TLS): on the fast
/// path while its requests allow, then (if ever) on the HTTP/2 server if it sent h2c's
/// preface, else on hyper — with the bytes read so far put back.
async fn serve_http1<S: ClientStream + 'static>(
    edge: Arc<Edge>,
    mut stream: S,
    client: SocketAddr,
    slot: Slot,
    watcher: Watcher,
    shutdown: watch::Receiver<bool>,
) {
    // The watcher stays held meanwhile, so a graceful shutdown waits for this connection
    // too (the fast path closes it at its next idle moment, the idle set's sweeper wakes
    // it if it is idle).
    let mut idle_until = None;
    let ended = loop {
        // Boxed, and dropped while the connection idles: its state is most of a connection's
        // memory, and an idle one needs none of it. (The blocks keep what `serve` returned
        // out of the idle wait's state, which is what an idle connection's task holds.)
        let until = {
            let serving = http1::serve(&edge, stream, client, shutdown.clone(), idle_until);
            match Box::pin(serving).await {
                http1::Ended::Idle(idle, until) => {
                    stream = idle;
                    until
                }
                ended => break ended,
            }
        };
        if !next_request(&edge, &stream, until).await {
            return;
        }
        idle_until = Some(until);
    };
    match ended {
        http1::Ended::Closed | http1::Ended::Idle(..) => {}
        // Boxed: the other transports' futures are large, and an idle keep-alive connection
        // on the fast path would carry their size all its life (benches/memory.sh).
        http1::Ended::Fallback(stream, read) if http2::is_preface(&read) => {
            Box::pin(http2::serve(
                edge, stream, read, client, slot, watcher, shutdown,
            ))
            .await;
        }
        http1::Ended::Fallback(stream, read) => {
            Box::pin(general::serve(edge, stream, read, client, slot, watcher)).await;
        }
    }
}

/// An idle keep-alive connection's wait, holding nothing but the socket and its entry in
/// the listener's idle set: `true` when a request starts before `until`; `false` at the
/// idle keep-alive timeout (nothing was sent: not counted) or shutdown.
async fn next_request<S: ClientStream>(edge: &Edge, idle: &S, until: Instant) -> bool {
    match idle.readable() {
        Some(readable) => edge.idle.wait(readable, until).await,
        None => false,
    }
}

/// The size of the future an async fn returns, without calling it.
fn future_size<A, B, C, D, E, F, R>(_: fn(A, B, C, D, E, F) -> R) -> usize {
    std::mem::size_of::<R>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    /// An idle keep-alive connection is its task (tokio's header and trailer around this
    /// future, rounded up to 128 bytes), its socket's registration, its entry in the idle
    /// set and the kernel's socket: the future must stay small (benches/memory.sh;
    /// docs/PERFORMANCE.md). Debug builds lay it out larger than release builds (the `debug`
    /// line at start-up says those): 544 bytes here, 664 with a timer and a shutdown waiter
    /// of its own.
    #[test]
    fn an_idle_connection_task_stays_small() {
        let plain = future_size(serve_http1::<TcpStream>);
        assert!(plain <= 560, "serve_http1 future is {plain} bytes");
    }
}
