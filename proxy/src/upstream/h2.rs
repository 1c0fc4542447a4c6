//! HTTP/2 to a backend: `h2c` (cleartext, prior knowledge) or `h2` (rustls, ALPN `h2`).
//!
//! One connection per backend is *shared*: every request clones its `SendRequest` and runs
//! as one stream (multiplexed), so trailers and full-duplex streaming (gRPC) pass through.
//! The current connection sits in an `ArcSwapOption`; a request that finds it closed
//! connects a new one — one connect at a time (the backend's [`Gate`]), every other stream
//! that meets no connection waits for it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::pool::{head_within, Acquired, ConnectFailure, Gate, Opening, SendError, SendTimeouts};
use crate::body::RequestBody;

/// The shared HTTP/2 connection to one backend.
#[derive(Default)]
pub(super) struct H2Conn {
    shared: ArcSwapOption<http2::SendRequest<RequestBody>>,
}

/// How to reach the backend: its address, and the TLS client for `h2` (`None`: h2c).
pub(super) struct Target<'a> {
    pub address: SocketAddr,
    pub tls: Option<&'a TlsConnector>,
}

impl H2Conn {
    /// Lets go of the shared connection: it closes once the streams in flight on it end
    /// (hyper closes a client connection whose last sender is gone).
    pub(super) fn drain(&self) {
        self.shared.store(None);
    }

    /// One stream on the shared connection (connecting one if there is none).
    pub(super) async fn send(
        &self,
        gate: &Arc<Gate>,
        target: Target<'_>,
        mut req: Request<RequestBody>,
        timeouts: SendTimeouts,
    ) -> Result<Response<Incoming>, SendError> {
        let deadline = tokio::time::Instant::now() + timeouts.request;
        let body = req.body().sent();
        h2_request(&target, &mut req);
        let mut fresh = false;
        // One connect at a time: the streams that meet no connection wait for that one.
        let single = SendTimeouts {
            max_connecting: 1,
            ..timeouts
        };
        loop {
            let live = || self.shared.load_full().filter(|s| !s.is_closed());
            let mut sender = match live() {
                Some(s) => http2::SendRequest::clone(&s),
                None => match gate.acquire(&single, live, || None).await {
                    Ok(Acquired::Idle(s)) => http2::SendRequest::clone(&s),
                    Ok(Acquired::Open(opening)) => {
                        match connect(&target, timeouts.connect, opening).await {
                            Ok(s) => {
                                fresh = true;
                                self.shared.store(Some(Arc::new(s.clone())));
                                gate.wake_all();
                                s
                            }
                            Err(failure) => return Err(SendError::NotSent(req, failure)),
                        }
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
            let response = sender.try_send_request(req);
            let sent = head_within(response, body.as_deref(), timeouts.request).await;
            match sent {
                Err(_elapsed) => return Err(SendError::Timeout),
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(mut e)) => match e.take_message() {
                    // The shared connection was going away: try once on a new one.
                    Some(back) if !fresh => {
                        tracing::debug!(backend = %target.address, error = %e.error(), "h2 connection closed; reconnecting");
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
}

/// HTTP/2 wants the scheme and authority in the URI (`:scheme`, `:authority`); the
/// client's Host becomes the authority.
fn h2_request(target: &Target<'_>, req: &mut Request<RequestBody>) {
    let scheme = match target.tls {
        Some(_) => Scheme::HTTPS,
        None => Scheme::HTTP,
    };
    let authority = req
        .headers_mut()
        .remove(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| {
            Authority::try_from(target.address.to_string().as_str())
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

async fn connect(
    target: &Target<'_>,
    timeout: Duration,
    opening: Opening,
) -> Result<http2::SendRequest<RequestBody>, ConnectFailure> {
    let connect = async {
        let stream = TcpStream::connect(target.address)
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
        if let Some(connector) = target.tls {
            let name = rustls::pki_types::ServerName::IpAddress(target.address.ip().into());
            let tls = connector
                .connect(name, stream)
                .await
                .map_err(ConnectFailure::Refused)?;
            let (sender, conn) = builder
                .handshake(TokioIo::new(tls))
                .await
                .map_err(refused)?;
            Ok((sender, tokio::spawn(conn)))
        } else {
            let (sender, conn) = builder
                .handshake(TokioIo::new(stream))
                .await
                .map_err(refused)?;
            Ok((sender, tokio::spawn(conn)))
        }
    };
    let (sender, task) = match tokio::time::timeout(timeout, connect).await {
        Err(_) => return Err(ConnectFailure::TimedOut),
        Ok(r) => r?,
    };
    // The connection holds its place until its task ends.
    let slot = opening.opened();
    tokio::spawn(async move {
        let _ = task.await;
        drop(slot);
    });
    Ok(sender)
}
