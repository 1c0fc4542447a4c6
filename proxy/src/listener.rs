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
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use switchyard_config::{Limits, TracePolicy};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::access_log::AccessLog;
pub use crate::edge::ListenerStats;
use crate::edge::{ClientStream, Edge, Rejection, Rejections, Slot, Tunnels};
use crate::general::{self, Protocol};
use crate::http1;
use crate::tls::CertStore;
use crate::TableHandle;

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

    /// Serves until `shutdown` turns true, then drains in-flight requests for up to `drain`.
    pub async fn serve(
        self,
        table: TableHandle,
        limits: Limits,
        mut shutdown: watch::Receiver<bool>,
        drain: Duration,
    ) {
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
            header_read_timeout: limits.header_read_timeout,
            client_body_timeout: limits.client_body_timeout,
            max_head: limits.max_header_bytes.max(8192),
            access_log: self.access_log.clone(),
            tunnels: Tunnels::default(),
            rejections: Rejections::new(&self.name),
            allow_trace: limits.trace == TracePolicy::Forward,
            http: general::http_builder(&limits),
            http2_only: general::http_builder(&limits).http2_only(),
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
            let edge = Arc::clone(&edge);
            let watcher = graceful.watcher();
            match &acceptor {
                None => {
                    let shutdown = shutdown.clone();
                    let any = Protocol::Any;
                    tokio::spawn(serve_http1(
                        edge, stream, client, slot, watcher, shutdown, any,
                    ));
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        let handshake = acceptor.accept(stream);
                        let tls =
                            match tokio::time::timeout(edge.header_read_timeout, handshake).await {
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
                        let alpn = match tls.get_ref().1.alpn_protocol() {
                            Some(b"h2") => Protocol::Http2,
                            Some(_) => Protocol::Http1,
                            None => Protocol::Any,
                        };
                        if alpn == Protocol::Http2 {
                            general::serve(edge, tls, Bytes::new(), client, slot, watcher, alpn)
                                .await;
                        } else {
                            serve_http1(edge, tls, client, slot, watcher, shutdown, alpn).await;
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
            edge.tunnels.close_all();
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

/// Serves an HTTP/1.x connection (plain TCP, or TLS that chose HTTP/1.1): on the fast path
/// while its requests allow, then (if ever) on hyper with the bytes read so far put back.
async fn serve_http1<S: ClientStream + 'static>(
    edge: Arc<Edge>,
    stream: S,
    client: SocketAddr,
    slot: Slot,
    watcher: Watcher,
    shutdown: watch::Receiver<bool>,
    protocol: Protocol,
) {
    // The watcher stays held meanwhile, so a graceful shutdown waits for this connection
    // too (the fast path closes it at its next idle moment).
    match http1::serve(&edge, stream, client, shutdown).await {
        http1::Ended::Closed => {}
        http1::Ended::Fallback(stream, read) => {
            general::serve(edge, stream, read, client, slot, watcher, protocol).await;
        }
    }
}
