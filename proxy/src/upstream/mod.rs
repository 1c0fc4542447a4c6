//! Upstream connections: per backend, a lock-free keep-alive pool and one send.
//!
//! Connecting is a separate step from sending (as in Pingora), so the proxy knows whether a
//! request ever reached a backend: a refused or timed-out connect hands the untouched request
//! back and the caller may retry it on another backend (SPEC §4). A pooled connection the
//! backend closed while idle also hands the request back (hyper's `try_send_request`), and we
//! quietly use a fresh connection instead — a keep-alive race is never the client's error.
//!
//! One [`UpstreamPool`] per backend, by protocol: [`http1`] (hyper's client connections for
//! the general path, raw sockets for the fast transports, which exchange on them through
//! [`raw`]), [`h2`] (one shared multiplexed connection, h2c or TLS through [`tls`]); [`pool`]
//! holds what they share.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use hyper::body::Incoming;
use hyper::{Request, Response};
use switchyard_config::{Upstream, UpstreamProtocol};
use tokio_rustls::TlsConnector;

mod h2;
mod http1;
mod pool;
pub(crate) mod raw;
mod tls;

pub(crate) use http1::RawConn;
pub use pool::{ConnectFailure, SendError, SendTimeouts};

use crate::body::RequestBody;

/// Keep-alive connections to one backend address.
pub struct UpstreamPool {
    address: SocketAddr,
    upstream: Upstream,
    http1: Arc<http1::Http1Conns>,
    h2: h2::H2Conn,
    /// Caps and queue for every connection to this backend.
    gate: Arc<pool::Gate>,
    /// `h2`: the TLS client, built on first use (reads the CA file or the system roots).
    tls: OnceLock<Result<TlsConnector, String>>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("address", &self.address)
            .field("upstream", &self.upstream)
            .field("idle", &self.http1.idle_len())
            .finish()
    }
}

impl UpstreamPool {
    pub fn new(address: SocketAddr, upstream: Upstream) -> UpstreamPool {
        // HTTP/1.1: every connection may be kept when it goes idle — the gate's
        // `max_connections` already bounds them, open and idle together. A fixed cap below it
        // (256 was) closed and reopened connections whenever more exchanges than the cap were
        // in flight at once: h2load -c64 -m10 (640 streams) cost 0.02-0.04 connects and
        // closes per request, HAProxy none.
        let idle = match upstream.protocol {
            UpstreamProtocol::Http1 => usize::MAX,
            _ => 1,
        };
        let gate = Arc::new(pool::Gate::default());
        UpstreamPool {
            address,
            upstream,
            http1: Arc::new(http1::Http1Conns::new(address, idle, Arc::clone(&gate))),
            h2: h2::H2Conn::default(),
            gate,
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
        &self,
        req: Request<RequestBody>,
        timeouts: SendTimeouts,
    ) -> Result<Response<Incoming>, SendError> {
        match self.upstream.protocol {
            UpstreamProtocol::Http1 => self.http1.send(req, timeouts).await,
            // Boxed: the HTTP/2 path (TLS client state, handshake) would otherwise make every
            // request's future — moved and copied whole by the runtime — several KiB larger.
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                Box::pin(self.send_h2(req, timeouts)).await
            }
        }
    }

    async fn send_h2(
        &self,
        req: Request<RequestBody>,
        timeouts: SendTimeouts,
    ) -> Result<Response<Incoming>, SendError> {
        let tls = match self.upstream.protocol {
            UpstreamProtocol::H2 => match self
                .tls
                .get_or_init(|| tls::connector(self.upstream.ca.as_deref()))
            {
                Ok(c) => Some(c),
                Err(e) => {
                    let err = std::io::Error::other(e.clone());
                    return Err(SendError::NotSent(req, ConnectFailure::Refused(err)));
                }
            },
            _ => None,
        };
        let target = h2::Target {
            address: self.address,
            tls,
        };
        self.h2.send(&self.gate, target, req, timeouts).await
    }

    /// Fast path: a connection for one exchange, and whether it was pooled (see
    /// `Http1Conns::acquire_raw`).
    pub(crate) async fn acquire_raw(
        &self,
        timeouts: &SendTimeouts,
        fresh: bool,
    ) -> Result<(RawConn, bool), ConnectFailure> {
        self.http1.acquire_raw(timeouts, fresh).await
    }

    /// Fast path: a connection whose last exchange ended cleanly goes back to the pool.
    pub(crate) fn put_raw(&self, conn: RawConn) {
        self.http1.put_raw(conn)
    }

    /// The backend left the routing table: idle connections close now, busy ones when their
    /// exchange ends (nothing goes back to the pool), and the shared HTTP/2 connection closes
    /// once its streams in flight finish. Requests already on their way still complete.
    pub fn drain(&self) {
        self.http1.drain();
        self.h2.drain();
    }
}
