//! Upstream connections: a lock-free keep-alive pool per backend, and one send.
//!
//! Connecting is a separate step from sending (as in Pingora), so the proxy knows whether a
//! request ever reached a backend: a refused or timed-out connect hands the untouched request
//! back and the caller may retry it on another backend (SPEC §4). A pooled connection the
//! backend closed while idle also hands the request back (hyper's `try_send_request`), and we
//! quietly use a fresh connection instead — a keep-alive race is never the client's error.
//!
//! The pool is a bounded lock-free queue of idle HTTP/1.1 connections ([`IdleQueue`]): push and pop are
//! lock-free, so requests to the same backend never wait on each other. A connection goes back
//! into the pool once hyper says it is ready for the next request (its response body fully
//! read), exactly as hyper-util's pool does.
//!
//! Per service the upstream protocol may instead be HTTP/2: `h2c` (cleartext, prior
//! knowledge) or `h2` (rustls client; the backend's certificate is checked against the
//! service's `ca` bundle or the system roots, for the backend's IP address). An HTTP/2
//! connection is *shared*: every request clones its `SendRequest` and runs as one stream
//! (multiplexed), so trailers and full-duplex streaming (gRPC) pass through. The current
//! connection sits in an `ArcSwapOption`; a request that finds it closed connects a new one.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::OnceLock;

use arc_swap::ArcSwapOption;
use crossbeam_queue::SegQueue;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use switchyard_config::{Upstream, UpstreamProtocol};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::body::RequestBody;

/// Idle connections kept per backend; more are closed after use.
const MAX_IDLE_PER_BACKEND: usize = 256;

/// Why a request did not get a response head from the upstream.
// The request is handed back by value: boxing it would add an allocation to the retry path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum SendError {
    /// Never reached the backend (connect refused or timed out): the request is handed back.
    NotSent(Request<RequestBody>, ConnectFailure),
    /// No response head within the request timeout.
    Timeout,
    /// The connection broke after the request was (maybe partly) sent.
    Reset(hyper::Error),
}

#[derive(Debug)]
pub enum ConnectFailure {
    Refused(io::Error),
    TimedOut,
}

struct IdleConn {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// An HTTP/1.1 connection the fast path ([`crate::h1`]) drives itself: the socket and the
/// bytes read from it. Pooled only between complete exchanges.
#[derive(Debug)]
pub(crate) struct RawConn {
    pub stream: TcpStream,
    pub buf: bytes::BytesMut,
    since: Instant,
}

/// Connections being opened to one backend at once (fast path). A burst of requests meeting
/// an empty pool — at start-up, after a spike — would otherwise open a connection each, all at
/// once, and overflow the backend's accept queue: a dropped SYN costs a second, or the connect
/// timeout. Beyond this many, requests wait for a connection to come back or a slot to free.
const MAX_CONNECTING: usize = 32;

/// One of the [`MAX_CONNECTING`] slots, released however the connect ends (or is dropped).
struct ConnectSlot<'a>(&'a UpstreamPool);

impl Drop for ConnectSlot<'_> {
    fn drop(&mut self) {
        self.0.connecting.fetch_sub(1, Relaxed);
        self.0.returned.notify_one();
    }
}

/// Idle connections, at most `cap`: a lock-free `SegQueue` that allocates as it fills and
/// frees as it drains, so the many backends of a large config that see little traffic cost
/// next to nothing (an `ArrayQueue` of 256 slots was ~20 KiB per backend up front).
struct IdleQueue<T> {
    queue: SegQueue<T>,
    len: AtomicUsize,
    cap: usize,
}

impl<T> IdleQueue<T> {
    fn new(cap: usize) -> IdleQueue<T> {
        IdleQueue {
            queue: SegQueue::new(),
            len: AtomicUsize::new(0),
            cap,
        }
    }

    fn pop(&self) -> Option<T> {
        let item = self.queue.pop()?;
        self.len.fetch_sub(1, Relaxed);
        Some(item)
    }

    /// Keeps `item` unless the queue is full (then it is dropped, closing the connection).
    fn push(&self, item: T) {
        if self.len.fetch_add(1, Relaxed) < self.cap {
            self.queue.push(item);
        } else {
            self.len.fetch_sub(1, Relaxed);
        }
    }

    fn len(&self) -> usize {
        self.len.load(Relaxed)
    }
}

/// Keep-alive connections to one backend address.
pub struct UpstreamPool {
    address: SocketAddr,
    upstream: Upstream,
    /// HTTP/1.1: idle connections of the general (hyper) path…
    idle: IdleQueue<IdleConn>,
    /// …and of the fast path, which reads and writes the socket itself.
    raw_idle: IdleQueue<RawConn>,
    /// Fast path: connects under way, and a wake-up when a connection or a slot comes back.
    connecting: AtomicUsize,
    returned: tokio::sync::Notify,
    /// HTTP/2: the shared connection.
    shared: ArcSwapOption<http2::SendRequest<RequestBody>>,
    /// `h2`: the TLS client, built on first use (reads the CA file or the system roots).
    tls: OnceLock<Result<TlsConnector, String>>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("address", &self.address)
            .field("upstream", &self.upstream)
            .field("idle", &self.idle.len())
            .finish()
    }
}

/// Timeouts that apply to one send (they come from the service's config and may change with
/// a reload, so they are passed per call rather than stored in the pool).
#[derive(Debug, Clone, Copy)]
pub struct SendTimeouts {
    pub connect: Duration,
    pub request: Duration,
    pub idle: Duration,
}

impl UpstreamPool {
    pub fn new(address: SocketAddr, upstream: Upstream) -> UpstreamPool {
        let idle = match upstream.protocol {
            UpstreamProtocol::Http1 => MAX_IDLE_PER_BACKEND,
            _ => 1,
        };
        UpstreamPool {
            address,
            upstream,
            idle: IdleQueue::new(idle),
            raw_idle: IdleQueue::new(idle),
            connecting: AtomicUsize::new(0),
            returned: tokio::sync::Notify::new(),
            shared: ArcSwapOption::empty(),
            tls: OnceLock::new(),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The protocol settings this pool was made for (a change needs a new pool).
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Sends `req` and waits for the response head.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<RequestBody>,
        timeouts: SendTimeouts,
    ) -> Result<Response<Incoming>, SendError> {
        match self.upstream.protocol {
            UpstreamProtocol::Http1 => self.send_http1(req, timeouts).await,
            // Boxed: the HTTP/2 path (TLS client state, handshake) would otherwise make every
            // request's future — moved and copied whole by the runtime — several KiB larger.
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                Box::pin(self.send_h2(req, timeouts)).await
            }
        }
    }

    async fn send_http1(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        timeouts: SendTimeouts,
    ) -> Result<Response<Incoming>, SendError> {
        let deadline = tokio::time::Instant::now() + timeouts.request;
        loop {
            let (mut sender, reused) = match self.take_idle(timeouts.idle) {
                Some(s) => (s, true),
                // Boxed, as it is rare (no idle connection) and large.
                None => match Box::pin(self.connect(timeouts.connect)).await {
                    Ok(s) => (s, false),
                    Err(failure) => return Err(SendError::NotSent(req, failure)),
                },
            };
            let sent = tokio::time::timeout_at(deadline, sender.try_send_request(req)).await;
            match sent {
                Err(_elapsed) => return Err(SendError::Timeout),
                Ok(Ok(response)) => {
                    self.return_when_ready(sender);
                    return Ok(response);
                }
                Ok(Err(mut e)) => match e.take_message() {
                    // A pooled connection died while idle: the request was not sent, so a
                    // fresh connection is safe. A fresh one failing like this is final.
                    Some(back) if reused => req = back,
                    Some(back) => {
                        let err = io::Error::new(io::ErrorKind::ConnectionReset, e.into_error());
                        return Err(SendError::NotSent(back, ConnectFailure::Refused(err)));
                    }
                    None => return Err(SendError::Reset(e.into_error())),
                },
            }
        }
    }

    fn take_idle(&self, max_idle: Duration) -> Option<http1::SendRequest<RequestBody>> {
        while let Some(conn) = self.idle.pop() {
            if conn.sender.is_ready() && conn.since.elapsed() < max_idle {
                return Some(conn.sender);
            }
            // Closed by the backend, or idle too long: dropping the sender closes it.
        }
        None
    }

    /// A new TCP connection to the backend, within `timeout`.
    async fn connect_tcp(&self, timeout: Duration) -> Result<TcpStream, ConnectFailure> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.address)).await {
            Err(_) => return Err(ConnectFailure::TimedOut),
            Ok(Err(e)) => return Err(ConnectFailure::Refused(e)),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Fast path: an idle connection that is still open, or `None`.
    pub(crate) fn take_raw(&self, max_idle: Duration) -> Option<RawConn> {
        while let Some(conn) = self.raw_idle.pop() {
            if conn.since.elapsed() >= max_idle {
                continue;
            }
            // A backend that closed the idle connection made it readable (EOF); tokio knows
            // from its last epoll round, so this costs no system call on a live connection.
            match conn.stream.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(conn),
                _ => continue,
            }
        }
        None
    }

    /// Fast path: a connection for one exchange, and whether it was pooled — an idle one
    /// (unless `fresh`), else a new one, else (when [`MAX_CONNECTING`] are already being
    /// opened to this backend) the next one to come back. The caller bounds the wait.
    pub(crate) async fn acquire_raw(
        &self,
        timeouts: &SendTimeouts,
        fresh: bool,
    ) -> Result<(RawConn, bool), ConnectFailure> {
        loop {
            if !fresh {
                if let Some(conn) = self.take_raw(timeouts.idle) {
                    return Ok((conn, true));
                }
            }
            if self.connecting.fetch_add(1, Relaxed) < MAX_CONNECTING {
                let _slot = ConnectSlot(self);
                // Boxed, as it is rare: the common future stays small.
                let conn = Box::pin(self.connect_raw(timeouts.connect)).await?;
                return Ok((conn, false));
            }
            self.connecting.fetch_sub(1, Relaxed);
            self.returned.notified().await;
        }
    }

    /// Fast path: a new connection.
    async fn connect_raw(&self, timeout: Duration) -> Result<RawConn, ConnectFailure> {
        Ok(RawConn {
            stream: self.connect_tcp(timeout).await?,
            buf: bytes::BytesMut::new(),
            since: Instant::now(),
        })
    }

    /// Fast path: a connection whose last exchange ended cleanly goes back to the pool.
    pub(crate) fn put_raw(&self, mut conn: RawConn) {
        if conn.buf.capacity() > 8 * 1024 {
            // After a large body: idle connections keep only a head-sized buffer.
            conn.buf = bytes::BytesMut::new();
        }
        conn.buf.clear();
        conn.since = Instant::now();
        self.raw_idle.push(conn);
        self.returned.notify_one();
    }

    async fn connect(
        &self,
        timeout: Duration,
    ) -> Result<http1::SendRequest<RequestBody>, ConnectFailure> {
        let stream = self.connect_tcp(timeout).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectFailure::Refused(io::Error::other(e)))?;
        tokio::spawn(async move {
            // Ends when the backend closes or the last sender is dropped; an upgraded (101)
            // connection is handed to the tunnel instead.
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// HTTP/2: one stream on the shared connection (connecting one if there is none).
    async fn send_h2(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        timeouts: SendTimeouts,
    ) -> Result<Response<Incoming>, SendError> {
        let deadline = tokio::time::Instant::now() + timeouts.request;
        self.h2_request(&mut req);
        let mut fresh = false;
        loop {
            let current = self.shared.load_full().filter(|s| !s.is_closed());
            let mut sender = match current {
                Some(s) => http2::SendRequest::clone(&s),
                None => match self.connect_h2(timeouts.connect).await {
                    Ok(s) => {
                        fresh = true;
                        self.shared.store(Some(Arc::new(s.clone())));
                        s
                    }
                    Err(failure) => return Err(SendError::NotSent(req, failure)),
                },
            };
            match tokio::time::timeout_at(deadline, sender.ready()).await {
                Err(_elapsed) => return Err(SendError::Timeout),
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.shared.store(None);
                    if fresh {
                        let err = io::Error::new(io::ErrorKind::ConnectionReset, e);
                        return Err(SendError::NotSent(req, ConnectFailure::Refused(err)));
                    }
                    fresh = true;
                    continue;
                }
            }
            let sent = tokio::time::timeout_at(deadline, sender.try_send_request(req)).await;
            match sent {
                Err(_elapsed) => return Err(SendError::Timeout),
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(mut e)) => match e.take_message() {
                    // The shared connection was going away: try once on a new one.
                    Some(back) if !fresh => {
                        tracing::debug!(backend = %self.address, error = %e.error(), "h2 connection closed; reconnecting");
                        self.shared.store(None);
                        fresh = true;
                        req = back;
                    }
                    Some(back) => {
                        let err = io::Error::new(io::ErrorKind::ConnectionReset, e.into_error());
                        return Err(SendError::NotSent(back, ConnectFailure::Refused(err)));
                    }
                    None => return Err(SendError::Reset(e.into_error())),
                },
            }
        }
    }

    /// HTTP/2 wants the scheme and authority in the URI (`:scheme`, `:authority`); the
    /// client's Host becomes the authority.
    fn h2_request(&self, req: &mut Request<RequestBody>) {
        let scheme = match self.upstream.protocol {
            UpstreamProtocol::H2 => Scheme::HTTPS,
            _ => Scheme::HTTP,
        };
        let authority = req
            .headers_mut()
            .remove(header::HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| {
                Authority::try_from(self.address.to_string().as_str())
                    .expect("a socket address is an authority")
            });
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(scheme);
        parts.authority = Some(authority);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
        *req.version_mut() = Version::HTTP_2;
        // Connection-specific headers are malformed in HTTP/2; `te: trailers` is the exception.
        let te = req.headers_mut().remove(header::TE);
        if te.is_some() {
            req.headers_mut()
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }

    async fn connect_h2(
        &self,
        timeout: Duration,
    ) -> Result<http2::SendRequest<RequestBody>, ConnectFailure> {
        let connect = async {
            let stream = TcpStream::connect(self.address)
                .await
                .map_err(ConnectFailure::Refused)?;
            let _ = stream.set_nodelay(true);
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(20))
                .max_concurrent_reset_streams(256);
            let refused = |e: hyper::Error| ConnectFailure::Refused(io::Error::other(e));
            if self.upstream.protocol == UpstreamProtocol::H2 {
                let connector = self
                    .tls_connector()
                    .map_err(|e| ConnectFailure::Refused(io::Error::other(e)))?;
                let name = rustls::pki_types::ServerName::IpAddress(self.address.ip().into());
                let tls = connector
                    .connect(name, stream)
                    .await
                    .map_err(ConnectFailure::Refused)?;
                let (sender, conn) = builder
                    .handshake(TokioIo::new(tls))
                    .await
                    .map_err(refused)?;
                tokio::spawn(conn);
                Ok(sender)
            } else {
                let (sender, conn) = builder
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(refused)?;
                tokio::spawn(conn);
                Ok(sender)
            }
        };
        match tokio::time::timeout(timeout, connect).await {
            Err(_) => Err(ConnectFailure::TimedOut),
            Ok(r) => r,
        }
    }

    fn tls_connector(&self) -> Result<TlsConnector, String> {
        self.tls
            .get_or_init(|| upstream_tls(self.upstream.ca.as_deref()))
            .clone()
    }

    /// Puts the connection back once its response has been read to the end.
    fn return_when_ready(self: &Arc<Self>, mut sender: http1::SendRequest<RequestBody>) {
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                pool.idle.push(IdleConn {
                    sender,
                    since: Instant::now(),
                });
            }
        });
    }
}

/// A rustls client for `h2` upstreams: TLS 1.2/1.3, ALPN `h2`, trusting `ca` (a PEM bundle)
/// or, without one, the system's roots.
fn upstream_tls(ca: Option<&std::path::Path>) -> Result<TlsConnector, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| format!("upstream CA {}: {e}", path.display()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("upstream CA {}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
