//! HTTP/1.1 to a backend: keep-alive connections for both transports.
//!
//! The general path sends through hyper's client connection (`http1::SendRequest`); the
//! fast path ([`crate::http1`]) reads and writes the socket itself ([`RawConn`]). Each kind
//! has its own lock-free idle queue. A connection goes back into its queue only after a
//! complete exchange: for hyper, once it says the connection is ready for the next request
//! (its response body fully read), exactly as hyper-util's pool does.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::pool::{
    connect_tcp, head_within, Acquired, ConnectFailure, Gate, IdleQueue, OpenSlot, Opening,
    SendError, SendTimeouts,
};
use crate::body::RequestBody;
use crate::workers::PerWorker;

struct IdleConn {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// An HTTP/1.1 connection the fast path ([`crate::http1`]) drives itself: the socket and the
/// bytes read from it. Pooled only between complete exchanges.
#[derive(Debug)]
pub(crate) struct RawConn {
    pub stream: TcpStream,
    pub buf: bytes::BytesMut,
    since: Instant,
    _slot: OpenSlot,
}

impl RawConn {
    /// Registers the socket with the calling worker's reactor instead of the one it was
    /// opened on; `None` (the connection closes) if that fails.
    fn rehome(self) -> Option<RawConn> {
        let std = self.stream.into_std().ok()?;
        Some(RawConn {
            stream: TcpStream::from_std(std).ok()?,
            ..self
        })
    }
}

/// The HTTP/1.1 connections to one backend.
pub(super) struct Http1Conns {
    address: SocketAddr,
    /// Idle connections of the general (hyper) path, per worker (a worker takes and returns
    /// its own, so their sockets stay on its reactor)…
    idle: PerWorker<IdleQueue<IdleConn>>,
    /// …and of the fast path, which reads and writes the socket itself.
    raw_idle: PerWorker<IdleQueue<RawConn>>,
    /// Caps and queue, shared by both kinds.
    gate: Arc<Gate>,
    /// The backend left the table: connections are closed after use, never pooled.
    draining: AtomicBool,
}

impl Http1Conns {
    pub(super) fn new(address: SocketAddr, idle: usize, gate: Arc<Gate>) -> Http1Conns {
        Http1Conns {
            address,
            idle: PerWorker::new(|| IdleQueue::new(idle)),
            raw_idle: PerWorker::new(|| IdleQueue::new(idle)),
            gate,
            draining: AtomicBool::new(false),
        }
    }

    /// See [`super::UpstreamPool::drain`].
    pub(super) fn drain(&self) {
        self.draining.store(true, Relaxed);
        self.idle.iter().for_each(|q| while q.pop().is_some() {});
        self.raw_idle
            .iter()
            .for_each(|q| while q.pop().is_some() {});
    }

    pub(super) fn idle_len(&self) -> usize {
        self.idle.iter().map(IdleQueue::len).sum()
    }

    /// General path: sends `req` over a pooled (or new) connection, waits for the head.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        timeouts: SendTimeouts,
    ) -> Result<Response<Incoming>, SendError> {
        let body = req.body().sent();
        loop {
            let idle = || self.take_idle(self.idle.local(), timeouts.idle);
            // Another worker's: its connection task stays on that worker (rare: at the caps).
            let steal = || {
                self.idle
                    .others()
                    .find_map(|q| self.take_idle(q, timeouts.idle))
            };
            let (mut sender, reused) = match self.gate.acquire(&timeouts, idle, steal).await {
                Ok(Acquired::Idle(s)) => (s, true),
                // Boxed, as it is rare (no idle connection) and large.
                Ok(Acquired::Open(opening)) => {
                    match Box::pin(self.connect(timeouts.connect, opening)).await {
                        Ok(s) => (s, false),
                        Err(failure) => return Err(SendError::NotSent(req, failure)),
                    }
                }
                Err(failure) => return Err(SendError::NotSent(req, failure)),
            };
            let response = sender.try_send_request(req);
            let sent = head_within(response, body.as_deref(), timeouts.request).await;
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

    fn take_idle(
        &self,
        queue: &IdleQueue<IdleConn>,
        max_idle: Duration,
    ) -> Option<http1::SendRequest<RequestBody>> {
        while let Some(conn) = queue.pop() {
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
        opening: Opening,
    ) -> Result<http1::SendRequest<RequestBody>, ConnectFailure> {
        let stream = connect_tcp(self.address, timeout).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectFailure::Refused(io::Error::other(e)))?;
        let slot = opening.opened();
        tokio::spawn(async move {
            // Ends when the backend closes or the last sender is dropped; an upgraded (101)
            // connection is handed to the tunnel instead.
            let _ = conn.with_upgrades().await;
            drop(slot);
        });
        Ok(sender)
    }

    /// Puts the connection back once its response has been read to the end.
    fn return_when_ready(self: &Arc<Self>, mut sender: http1::SendRequest<RequestBody>) {
        let conns = Arc::clone(self);
        tokio::spawn(async move {
            if sender.ready().await.is_ok() && !conns.draining.load(Relaxed) {
                conns.idle.local().push(IdleConn {
                    sender,
                    since: Instant::now(),
                });
                conns.gate.returned();
            }
        });
    }

    /// Fast path: an idle connection that is still open, or `None`.
    fn take_raw(queue: &IdleQueue<RawConn>, max_idle: Duration) -> Option<RawConn> {
        while let Some(conn) = queue.pop() {
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
    /// (unless `fresh`), else a new one, within the backend's caps (else queued, see
    /// [`Gate::acquire`]).
    pub(super) async fn acquire_raw(
        &self,
        timeouts: &SendTimeouts,
        fresh: bool,
    ) -> Result<(RawConn, bool), ConnectFailure> {
        let idle = || {
            (!fresh)
                .then(|| Self::take_raw(self.raw_idle.local(), timeouts.idle))
                .flatten()
        };
        // Another worker's, at the caps only: moved to this worker's reactor (two epoll_ctl
        // calls), so its I/O wakes no other thread.
        let steal = || {
            (!fresh)
                .then(|| {
                    self.raw_idle
                        .others()
                        .find_map(|q| Self::take_raw(q, timeouts.idle))
                        .and_then(RawConn::rehome)
                })
                .flatten()
        };
        match self.gate.acquire(timeouts, idle, steal).await? {
            Acquired::Idle(conn) => Ok((conn, true)),
            // Boxed, as it is rare: the common future stays small.
            Acquired::Open(opening) => {
                let conn = Box::pin(self.connect_raw(timeouts.connect, opening)).await?;
                Ok((conn, false))
            }
        }
    }

    /// Fast path: a new connection.
    async fn connect_raw(
        &self,
        timeout: Duration,
        opening: Opening,
    ) -> Result<RawConn, ConnectFailure> {
        let stream = connect_tcp(self.address, timeout).await?;
        Ok(RawConn {
            stream,
            buf: bytes::BytesMut::new(),
            since: Instant::now(),
            _slot: opening.opened(),
        })
    }

    /// Fast path: a connection whose last exchange ended cleanly goes back to the pool.
    pub(super) fn put_raw(&self, mut conn: RawConn) {
        if self.draining.load(Relaxed) {
            // Dropped: closed, and its place in the gate freed.
            return;
        }
        if conn.buf.capacity() > 8 * 1024 {
            // After a large body: idle connections keep only a head-sized buffer.
            conn.buf = bytes::BytesMut::new();
        }
        conn.buf.clear();
        conn.since = Instant::now();
        self.raw_idle.local().push(conn);
        self.gate.returned();
    }
}
