//! What every kind of upstream connection shares: the outcome of one send, the timeouts and
//! caps it runs under, the per-backend connection [`Gate`] (caps and queue), a TCP connect,
//! and the lock-free queue idle connections wait in.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::SegQueue;
use hyper::Request;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::body::{BodySent, RequestBody};

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
    /// No connection came free within the queue timeout, or the queue was full.
    Busy,
}

/// What applies to one send: timeouts and the per-backend connection caps. They come from the
/// service's config and may change with a reload, so they are passed per call rather than
/// stored in the pool (which outlives a reload).
#[derive(Debug, Clone, Copy)]
pub struct SendTimeouts {
    pub connect: Duration,
    pub request: Duration,
    pub idle: Duration,
    /// Connections open to one backend at most (idle ones included; HAProxy's `maxconn`).
    pub max_connections: usize,
    /// Connects under way to one backend at most.
    pub max_connecting: usize,
    /// Requests that may wait for a connection to one backend, and for how long.
    pub queue: usize,
    pub queue_timeout: Duration,
}

/// Counts and caps one backend's connections, and queues the requests that must wait for one
/// (both transports, both protocols): a burst meeting an empty pool — at start-up, after a
/// spike, 400 HTTP/2 streams at once — would otherwise open a connection each, overflow the
/// backend's accept queue, and lose requests to dropped SYNs.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    open: AtomicUsize,
    connecting: AtomicUsize,
    waiting: AtomicUsize,
    /// A connection came back, closed, or finished connecting.
    wake: Notify,
}

/// Leave to open one connection: counted as connecting until [`Opening::opened`] (or drop).
pub(crate) struct Opening {
    gate: Arc<Gate>,
    done: bool,
}

/// Held by an open connection; frees its place when the connection is gone.
#[derive(Debug)]
pub(crate) struct OpenSlot(Arc<Gate>);

/// What [`Gate::acquire`] found.
pub(crate) enum Acquired<T> {
    Idle(T),
    Open(Opening),
}

impl Gate {
    /// A pooled connection (from `idle`) or the leave to open one — at once, or after waiting
    /// in the backend's queue (bounded in size and time; then [`ConnectFailure::Busy`]).
    ///
    /// `idle` takes from this worker's idle connections; `steal` from another worker's, only
    /// when no new connection may open (the backend's caps count every worker's connections,
    /// so one worker's idle ones must not starve another).
    pub(crate) async fn acquire<T>(
        self: &Arc<Self>,
        s: &SendTimeouts,
        mut idle: impl FnMut() -> Option<T>,
        mut steal: impl FnMut() -> Option<T>,
    ) -> Result<Acquired<T>, ConnectFailure> {
        if let Some(found) = self.try_now(s, &mut idle, &mut steal) {
            return Ok(found);
        }
        if self.waiting.fetch_add(1, SeqCst) >= s.queue {
            self.waiting.fetch_sub(1, Relaxed);
            return Err(ConnectFailure::Busy);
        }
        // Pairs with the fence in `returned`: it sees this waiter, or the queue scan below
        // sees its connection.
        fence(SeqCst);
        let _waiting = Waiting(self);
        let deadline = tokio::time::Instant::now() + s.queue_timeout;
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(found) = self.try_now(s, &mut idle, &mut steal) {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Err(ConnectFailure::Busy);
            }
        }
    }

    fn try_now<T>(
        self: &Arc<Self>,
        s: &SendTimeouts,
        idle: &mut impl FnMut() -> Option<T>,
        steal: &mut impl FnMut() -> Option<T>,
    ) -> Option<Acquired<T>> {
        if let Some(conn) = idle() {
            return Some(Acquired::Idle(conn));
        }
        if self.connecting.fetch_add(1, Relaxed) >= s.max_connecting {
            self.connecting.fetch_sub(1, Relaxed);
            return steal().map(Acquired::Idle);
        }
        if self.open.fetch_add(1, Relaxed) >= s.max_connections {
            self.open.fetch_sub(1, Relaxed);
            self.connecting.fetch_sub(1, Relaxed);
            return steal().map(Acquired::Idle);
        }
        Some(Acquired::Open(Opening {
            gate: Arc::clone(self),
            done: false,
        }))
    }

    /// Wakes one waiting request: a connection came back to the pool. Only when one waits:
    /// `Notify`'s state is a cache line every worker would otherwise write per request.
    pub(crate) fn returned(&self) {
        fence(SeqCst);
        if self.waiting.load(Relaxed) > 0 {
            self.wake.notify_one();
        }
    }

    /// Wakes every waiting request: a multiplexed (HTTP/2) connection is up for all of them.
    pub(crate) fn wake_all(&self) {
        self.wake.notify_waiters();
    }
}

impl Opening {
    /// The connect succeeded: the connection holds the slot from now on.
    pub(crate) fn opened(mut self) -> OpenSlot {
        self.done = true;
        self.gate.connecting.fetch_sub(1, Relaxed);
        // A connect slot is free again.
        self.gate.wake.notify_one();
        OpenSlot(Arc::clone(&self.gate))
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        if !self.done {
            // The connect failed or was abandoned.
            self.gate.connecting.fetch_sub(1, Relaxed);
            self.gate.open.fetch_sub(1, Relaxed);
            self.gate.wake.notify_one();
        }
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
        self.0.wake.notify_one();
    }
}

struct Waiting<'a>(&'a Gate);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Relaxed);
    }
}

/// Waits for the response head. The request timeout runs from the moment the request's body
/// has been handed upstream (at once for a request without one): the time to the head is
/// the backend's, however long the client takes to upload.
pub(super) async fn head_within<F: std::future::Future>(
    response: F,
    body: Option<&BodySent>,
    timeout: Duration,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::pin!(response);
    if let Some(body) = body {
        tokio::select! {
            biased;
            early = &mut response => return Ok(early),
            () = body.wait() => {}
        }
    }
    tokio::time::timeout(timeout, response).await
}

/// A new TCP connection to `address`, within `timeout`, with Nagle off.
pub(super) async fn connect_tcp(
    address: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ConnectFailure> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Err(_) => return Err(ConnectFailure::TimedOut),
        Ok(Err(e)) => return Err(ConnectFailure::Refused(e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Idle connections, at most `cap`: a lock-free `SegQueue` that allocates as it fills and
/// frees as it drains, so the many backends of a large config that see little traffic cost
/// next to nothing (an `ArrayQueue` of 256 slots was ~20 KiB per backend up front).
pub(super) struct IdleQueue<T> {
    queue: SegQueue<T>,
    len: AtomicUsize,
    cap: usize,
}

impl<T> IdleQueue<T> {
    pub(super) fn new(cap: usize) -> IdleQueue<T> {
        IdleQueue {
            queue: SegQueue::new(),
            len: AtomicUsize::new(0),
            cap,
        }
    }

    pub(super) fn pop(&self) -> Option<T> {
        let item = self.queue.pop()?;
        self.len.fetch_sub(1, Relaxed);
        Some(item)
    }

    /// Keeps `item` unless the queue is full (then it is dropped, closing the connection).
    pub(super) fn push(&self, item: T) {
        if self.len.fetch_add(1, Relaxed) < self.cap {
            self.queue.push(item);
        } else {
            self.len.fetch_sub(1, Relaxed);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }
}
