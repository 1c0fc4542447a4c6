//! What every kind of upstream connection shares: the outcome of one send, the timeouts it
//! runs under, a TCP connect, and the lock-free queue idle connections wait in.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use crossbeam_queue::SegQueue;
use hyper::Request;
use tokio::net::TcpStream;

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
}

/// Timeouts that apply to one send (they come from the service's config and may change with
/// a reload, so they are passed per call rather than stored in the pool).
#[derive(Debug, Clone, Copy)]
pub struct SendTimeouts {
    pub connect: Duration,
    pub request: Duration,
    pub idle: Duration,
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
