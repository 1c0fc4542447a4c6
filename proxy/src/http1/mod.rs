//! The fast HTTP/1.1 path: the common request proxied on one task, from bytes to bytes.
//!
//! Why: through hyper, a proxied request costs ~42k instructions, and most of them are not
//! proxying — the request and response cross two tasks and three channels (server connection,
//! client connection, body), every header is hashed into a `HeaderMap` and serialized back out,
//! and a task is spawned to return the upstream connection to its pool (docs/PERFORMANCE.md).
//! nginx and HAProxy do none of that. So, like them (and Pingora), this path parses the
//! client's head in place with `httparse`, routes it with the very same phases as the general
//! path ([`phases::route_service`], [`phases::choose_version`], `pick_backend`,
//! [`phases::record_outcome`]), writes the upstream request head straight from the client's
//! bytes (hop-by-hop headers out, `X-Forwarded-*` in), and streams the response back on the
//! same task over a pooled upstream socket it owns.
//!
//! It serves plain-TCP connections and TLS connections that chose HTTP/1.1 (ALPN), and takes
//! only what it can do exactly: an HTTP/1.1 request with no body (no
//! `Transfer-Encoding`, `Content-Length` absent or 0), no `Upgrade`/`Expect`, one `Host`, a
//! plain origin-form target, to a service whose upstream speaks HTTP/1.1. Anything else — a
//! body, an upgrade, HTTP/1.0, h2c's preface, a head it cannot parse or that is too large —
//! hands the connection to the general path (hyper, with the smuggling scanner) with the bytes
//! read so far put back in front, at a request boundary, for the rest of the connection's life.
//! hyper then answers exactly as it always did (400, 431, 413…).
//!
//! Responses: 1xx are skipped; the body is framed as the upstream framed it (`Content-Length`
//! or chunked, passed through verbatim while the chunk framing is checked) or, without either,
//! read until the upstream closes and sent with `Connection: close`. An upstream that breaks

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use http::HeaderMap;

use crate::access_log::{AccessLog, Pending};
use crate::edge::{ClientStream, Edge, Rejection};
use crate::error::ProxyError;
use crate::mirror::Copy;
use crate::phases::{self, Served, Transport};
use crate::request::{End, RequestCtx};
use crate::retry::{self as policy, Failed};
use crate::table::{Backend, ServiceRoute};
use crate::upstream::raw::{self, Asked, Framing, ResponseHead};
use crate::upstream::RawConn;

mod parse;

use parse::{logged_request, parse_request, write_error, write_upstream_head, Parsed, Span, View};

/// Read sizes: a client's head (most fit in 1 KiB, as nginx's default header buffer assumes;
/// the buffer doubles as needed), and body chunks streamed to the client.
const CLIENT_HEAD_READ: usize = 1024;
const BODY_READ: usize = 64 * 1024;
/// How long a kept-alive connection waits before giving its buffers back.
const IDLE_BUFFERS: Duration = Duration::from_secs(1);

/// How a connection left the fast path.
pub(crate) enum Ended<S> {
    /// Closed: by either side, a timeout, shutdown, or a broken response.
    Closed,
    /// For the general path: the stream and the bytes already read from it.
    Fallback(S, Bytes),
    /// Idle between requests for a while (plain TCP): nothing of the connection's state is
    /// needed until the socket is readable again, before the idle deadline (then `serve`
    /// again, with it). The caller waits holding only the socket, so an idle keep-alive
    /// connection costs its socket and a small task (benches/memory.sh).
    Idle(S, Instant),
}

/// Per-connection buffers, reused by every request on it.
struct Scratch {
    /// Bytes read from the client and not yet consumed.
    buf: BytesMut,
    /// `(name, value)` spans of the current head in `buf`.
    headers: Vec<Span>,
    /// The upstream request head (kept until the response head came: a retry resends it).
    request: Vec<u8>,
    /// The client's response head and the first body bytes, or a proxy-made response.
    out: Vec<u8>,
}

/// Serves requests on a client connection until it closes, must fall back, or idles.
/// `idle_until`: the header-read deadline of a connection that comes back from [`Ended::Idle`].
pub(crate) async fn serve<S: ClientStream>(
    edge: &Edge,
    mut stream: S,
    client: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
    mut idle_until: Option<Instant>,
) -> Ended<S> {
    let client_ip = client.ip().to_string();
    let mut s = Scratch {
        buf: BytesMut::new(),
        headers: Vec::new(),
        request: Vec::new(),
        out: Vec::new(),
    };
    let stopping = shutdown.changed();
    tokio::pin!(stopping);
    // One timer for both deadlines (buffers back, head read), kept from request to request
    // (see `until`).
    let timer =
        tokio::time::sleep_until(idle_until.unwrap_or_else(|| Instant::now() + IDLE_BUFFERS));
    tokio::pin!(timer);
    // The clock reading the next head's deadlines start from, when the last request already
    // took one at the right moment (see `Streamed::Done`): one clock read per request less.
    let mut answered: Option<Instant> = None;
    loop {
        // Phase 0: a whole request head (or a reason to leave this path).
        let now = answered.take().unwrap_or_else(Instant::now);
        let deadline = idle_until
            .take()
            .unwrap_or_else(|| now + edge.header_read_timeout);
        // A busy connection keeps its buffers (and this state) from request to request; one
        // idle for a second gives them all back.
        let soon = deadline.min(now + IDLE_BUFFERS);
        let head = loop {
            match parse_request(&s.buf, &mut s.headers) {
                Parsed::Head(head) => break head,
                Parsed::Fallback => return Ended::Fallback(stream, s.buf.freeze()),
                Parsed::Partial if s.buf.len() >= edge.max_head => {
                    return Ended::Fallback(stream, s.buf.freeze());
                }
                Parsed::Partial => {}
            }
            let idle = s.buf.is_empty() && s.buf.capacity() > 0;
            let idled = match idle.then(|| stream.readable()).flatten() {
                Some(readable) => tokio::select! {
                    biased;
                    _ = &mut stopping => return Ended::Closed,
                    _ = readable => false,
                    () = until(timer.as_mut(), soon) => true,
                },
                None => false,
            };
            if idled {
                return Ended::Idle(stream, deadline);
            }
            // Most reads find their bytes there (the socket was just readable): read at once,
            // and only wait beside the deadline and shutdown when they are not (cancel-safe: a
            // read that is not ready takes nothing).
            let read = match read_more(&mut stream, &mut s.buf).now_or_never() {
                Some(read) => Some(read),
                None => tokio::select! {
                    biased;
                    _ = &mut stopping => return Ended::Closed,
                    read = read_more(&mut stream, &mut s.buf) => Some(read),
                    () = until(timer.as_mut(), deadline) => None,
                },
            };
            match read {
                Some(Ok(0)) | Some(Err(_)) => return Ended::Closed,
                Some(Ok(_)) => {}
                None => {
                    if !s.buf.is_empty() {
                        edge.rejections.count(Rejection::HeaderTimeout);
                    }
                    return Ended::Closed;
                }
            }
        };

        // The phases, over this transport.
        let arrived = std::time::Instant::now();
        let mut ctx = RequestCtx::new(edge.table.load_full(), client, edge.scheme, arrived);
        let method = &s.buf[head.method.clone()];
        let mut t = Fast {
            view: View {
                buf: &s.buf,
                head: &head,
                headers: &s.headers,
            },
            request: &mut s.request,
            out: &mut s.out,
            client_ip: &client_ip,
            head_method: method == b"HEAD",
            idempotent: policy::is_idempotent(method),
        };
        let served = phases::run(edge, &mut ctx, &mut t).await;
        let (mut up, response) = match served {
            Served::HandOff => {
                ctx.hand_off();
                return Ended::Fallback(stream, s.buf.freeze());
            }
            Served::Proxy(e) => {
                s.buf.advance(head.len);
                let bytes = write_error(&mut s.out, &e, head.close);
                ctx.finish(End::Complete, bytes);
                if stream.write_all(&s.out).await.is_err() || head.close {
                    return close(stream).await;
                }
                continue;
            }
            Served::Upstream(answer) => answer,
        };
        s.buf.advance(head.len);

        // respond: the body, streamed as the upstream framed it; then record + log.
        let mut bytes = 0;
        let streamed = stream_body(
            &mut up,
            response.framing,
            &mut stream,
            &mut s.out,
            &mut bytes,
        )
        .await;
        match streamed {
            Streamed::Done { reusable, waited } => {
                if !waited {
                    // The response went out in one write that did not wait, right after its
                    // head came: that moment (`answered`'s clock read) is when the client's
                    // next head may start arriving, to well below the timeouts' precision.
                    answered = ctx
                        .latency
                        .and_then(|l| ctx.sent.checked_add(l))
                        .map(Instant::from_std);
                }
                ctx.finish(End::Complete, bytes);
                if reusable && response.upstream_keep_alive {
                    let backend = ctx.backend.expect("answered by a backend");
                    ctx.version().backends[backend].pool.put_raw(up);
                }
            }
            Streamed::Broken(end) => {
                ctx.finish(end, bytes);
                if end == End::UpstreamAborted {
                    // Never a clean close that could pass for the end of the response.
                    stream.reset_on_close();
                }
                return Ended::Closed;
            }
        }
        if head.close || response.close_client {
            return close(stream).await;
        }
    }
}

/// The request as this transport holds it: spans into the connection's buffers.
struct Fast<'a> {
    view: View<'a>,
    /// The upstream request head (kept until the response head came: a retry resends it).
    request: &'a mut Vec<u8>,
    /// The client's response head, written while the upstream's is read.
    out: &'a mut Vec<u8>,
    client_ip: &'a str,
    head_method: bool,
    idempotent: bool,
}

impl<'a> Transport for Fast<'a> {
    type Head = View<'a>;
    type Response = (RawConn, ResponseHead);

    fn head(&self) -> &View<'a> {
        &self.view
    }

    fn check(&mut self, _: &Edge) -> Result<(), ProxyError> {
        // Parsing already refused anything this path cannot take exactly (it went to hyper).
        Ok(())
    }

    fn takes(&self, service: &ServiceRoute) -> bool {
        // HTTP/2 upstreams are hyper's; it re-reads this request from the start.
        service.upstream_is_http1
    }

    fn log_line(&self, log: &Arc<AccessLog>, ctx: &RequestCtx) -> Pending {
        Pending::new(log, ctx.client, logged_request(&self.view), ctx.arrived)
    }

    fn prepare(&mut self, ctx: &RequestCtx, _keep: Option<u64>) {
        write_upstream_head(self.request, &self.view, self.client_ip, ctx.scheme);
    }

    fn again(&mut self) -> bool {
        // No body, and the upstream head stays in `request` until the response head came.
        true
    }

    async fn exchange(
        &mut self,
        service: &ServiceRoute,
        backend: &Backend,
        _sent: &mut std::time::Instant,
    ) -> Result<(RawConn, ResponseHead), Failed> {
        let asked = Asked {
            request: self.request,
            head_method: self.head_method,
            idempotent: self.idempotent,
            client_close: self.view.head.close,
            may_reconnect: policy::may_reconnect,
        };
        let attempt = raw::exchange(&backend.pool, asked, &service.timeouts, self.out).await;
        attempt.map_err(Failed::from)
    }

    fn copy(&mut self, _max_body: u64) -> Option<Copy> {
        // No body on this path.
        Some(Copy::Raw {
            head: self.request.clone(),
            head_method: self.head_method,
            idempotent: self.idempotent,
        })
    }

    fn status(response: &(RawConn, ResponseHead)) -> (u16, Option<&HeaderMap>) {
        (response.1.status, None)
    }
}

/// Resolves when `deadline` has passed, on the connection's one timer. A busy connection's
/// deadlines only move later, so its timer-wheel entry stays where it is and, when it fires
/// before the current deadline, is moved there then: about one timer-wheel operation per
/// second instead of one (and a runtime handle clone) per request.
async fn until(mut timer: Pin<&mut Sleep>, deadline: Instant) {
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    loop {
        timer.as_mut().await;
        if Instant::now() >= deadline {
            return;
        }
        timer.as_mut().reset(deadline);
    }
}

/// Closes the client connection with a FIN after what was written.
async fn close<S: ClientStream>(mut stream: S) -> Ended<S> {
    let _ = stream.shutdown().await;
    Ended::Closed
}

/// Reads more bytes into `buf`, growing it a head-read at a time.
async fn read_more<S: ClientStream>(stream: &mut S, buf: &mut BytesMut) -> io::Result<usize> {
    if let Some(readable) = (buf.capacity() == 0).then(|| stream.readable()).flatten() {
        // An idle connection gave its buffer back: take one only when there is input.
        readable.await?;
    }
    if buf.capacity() - buf.len() < 256 {
        buf.reserve(CLIENT_HEAD_READ.max(buf.capacity()));
    }
    stream.read_buf(buf).await
}

enum Streamed {
    /// The whole body reached the client; `reusable`: the upstream sent nothing after it;
    /// `waited`: it took more than the first write, or that write had to wait for the client.
    Done { reusable: bool, waited: bool },
    /// One side broke off mid-body (which one: `End`): the client connection must close.
    Broken(End),
}

/// Streams the response body from the upstream to the client. `out` holds the response head;
/// the first body bytes join it so a small response is one write.
/// `sent` counts the body bytes written (for chunked bodies: as framed on the wire).
async fn stream_body(
    up: &mut RawConn,
    mut framing: Framing,
    client: &mut impl ClientStream,
    out: &mut Vec<u8>,
    sent: &mut u64,
) -> Streamed {
    let Ok((n, mut done)) = framing.feed(&up.buf) else {
        return Streamed::Broken(End::UpstreamAborted);
    };
    out.extend_from_slice(&up.buf[..n]);
    *sent += n as u64;
    let mut reusable = n == up.buf.len();
    up.buf.clear();
    let mut waited = !done;
    let mut write = std::pin::pin!(client.write_all(out));
    let written = std::future::poll_fn(|cx| {
        let poll = write.as_mut().poll(cx);
        waited |= poll.is_pending();
        poll
    });
    if written.await.is_err() {
        return Streamed::Broken(End::ClientGone);
    }
    while !done {
        if up.buf.capacity() < BODY_READ {
            up.buf.reserve(BODY_READ);
        }
        match up.stream.read_buf(&mut up.buf).await {
            Ok(0) if matches!(framing, Framing::UntilClose) => {
                return Streamed::Done {
                    reusable: false,
                    waited: true,
                };
            }
            Ok(0) | Err(_) => return Streamed::Broken(End::UpstreamAborted),
            Ok(_) => {}
        }
        let Ok((n, finished)) = framing.feed(&up.buf) else {
            return Streamed::Broken(End::UpstreamAborted);
        };
        if client.write_all(&up.buf[..n]).await.is_err() {
            return Streamed::Broken(End::ClientGone);
        }
        *sent += n as u64;
        reusable &= n == up.buf.len();
        done = finished;
        up.buf.clear();
    }
    Streamed::Done { reusable, waited }
}
