//! Upstream connections: a lock-free keep-alive pool per backend, and one send.
//!
//! Connecting is a separate step from sending (as in Pingora), so the proxy knows whether a
//! request ever reached a backend: a refused or timed-out connect hands the untouched request
//! back and the caller may retry it on another backend (SPEC §4). A pooled connection the
//! backend closed while idle also hands the request back (hyper's `try_send_request`), and we
//! quietly use a fresh connection instead — a keep-alive race is never the client's error.
//!
//! The pool is a bounded `crossbeam` `ArrayQueue` of idle HTTP/1.1 senders: push and pop are
//! lock-free, so requests to the same backend never wait on each other. A connection goes back
//! into the pool once hyper says it is ready for the next request (its response body fully
//! read), exactly as hyper-util's pool does.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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

/// Keep-alive connections to one backend address.
pub struct UpstreamPool {
    address: SocketAddr,
    idle: ArrayQueue<IdleConn>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("address", &self.address)
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
    pub fn new(address: SocketAddr) -> UpstreamPool {
        UpstreamPool {
            address,
            idle: ArrayQueue::new(MAX_IDLE_PER_BACKEND),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Sends `req` and waits for the response head.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        timeouts: SendTimeouts,
    ) -> Result<Response<Incoming>, SendError> {
        let deadline = tokio::time::Instant::now() + timeouts.request;
        loop {
            let (mut sender, reused) = match self.take_idle(timeouts.idle) {
                Some(s) => (s, true),
                None => match self.connect(timeouts.connect).await {
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

    async fn connect(
        &self,
        timeout: Duration,
    ) -> Result<http1::SendRequest<RequestBody>, ConnectFailure> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.address)).await {
            Err(_) => return Err(ConnectFailure::TimedOut),
            Ok(Err(e)) => return Err(ConnectFailure::Refused(e)),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectFailure::Refused(io::Error::other(e)))?;
        tokio::spawn(async move {
            // Ends when the backend closes or the last sender is dropped.
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Puts the connection back once its response has been read to the end.
    fn return_when_ready(self: &Arc<Self>, mut sender: http1::SendRequest<RequestBody>) {
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                let _ = pool.idle.push(IdleConn {
                    sender,
                    since: Instant::now(),
                });
            }
        });
    }
}
