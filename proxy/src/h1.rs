//! The fast HTTP/1.1 path: the common request proxied on one task, from bytes to bytes.
//!
//! Why: through hyper, a proxied request costs ~42k instructions, and most of them are not
//! proxying — the request and response cross two tasks and three channels (server connection,
//! client connection, body), every header is hashed into a `HeaderMap` and serialized back out,
//! and a task is spawned to return the upstream connection to its pool (docs/PERFORMANCE.md).
//! nginx and HAProxy do none of that. So, like them (and Pingora), this path parses the
//! client's head in place with `httparse`, routes it with the very same phases as the general
//! path ([`pipeline::route_service`], [`pipeline::choose_version`], `pick_backend`,
//! [`pipeline::record_outcome`]), writes the upstream request head straight from the client's
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
//! mid-body closes the client connection, as the general path does.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Uri, Version};
use std::future::Future;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::access_log::{LoggedRequest, Pending};
use crate::error::ProxyError;
use crate::headers::{self, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::listener::Rejection;
use crate::pipeline::{self, Edge, RequestCtx, RequestHead};
use crate::stats::FailureReason;
use crate::upstream::{RawConn, SendTimeouts, UpstreamPool};

/// Headers in a request head; more go to hyper (which answers 431).
const MAX_HEADERS: usize = 100;
/// Headers in an upstream response head; more is a bad gateway.
const MAX_RESPONSE_HEADERS: usize = 128;
/// Bytes in an upstream response head.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Read sizes: a client's head (most fit in 1 KiB, as nginx's default header buffer assumes;
/// the buffer doubles as needed), an upstream's head, and body chunks streamed to the client.
const CLIENT_HEAD_READ: usize = 1024;
const HEAD_READ: usize = 4 * 1024;
const BODY_READ: usize = 64 * 1024;
/// How long a kept-alive connection waits before giving its buffers back.
const IDLE_BUFFERS: Duration = Duration::from_secs(1);

/// How a connection left the fast path.
pub(crate) enum Ended<S> {
    /// Closed: by either side, a timeout, shutdown, or a broken response.
    Closed,
    /// For the general path: the stream and the bytes already read from it.
    Fallback(S, Bytes),
}

/// A client connection the fast path can serve: plain TCP, or TLS (HTTP/1.1 by ALPN).
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Waits for input without reading, where the socket alone can tell (plain TCP): lets an
    /// idle connection hold no buffer. `None` for TLS, which may hold decrypted bytes the
    /// socket no longer shows — it must be read to find out.
    fn readable(&self) -> Option<impl Future<Output = io::Result<()>> + Send + '_>;
}

impl ClientStream for TcpStream {
    fn readable(&self) -> Option<impl Future<Output = io::Result<()>> + Send + '_> {
        Some(TcpStream::readable(self))
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn readable(&self) -> Option<impl Future<Output = io::Result<()>> + Send + '_> {
        None::<std::future::Pending<io::Result<()>>>
    }
}

/// What every connection of a listener needs to know on this path.
pub(crate) struct Settings {
    pub header_read_timeout: Duration,
    pub max_head: usize,
}

/// One request head, as spans into the connection's read buffer.
struct Head {
    len: usize,
    method: Range<usize>,
    target: Range<usize>,
    host: Range<usize>,
    /// The client asked to close after this request.
    close: bool,
    /// `Connection` names other headers, which are hop-by-hop too.
    connection_lists: bool,
    x_forwarded_for: bool,
    x_forwarded_host: bool,
}

/// Per-connection buffers, reused by every request on it.
struct Scratch {
    /// Bytes read from the client and not yet consumed.
    buf: BytesMut,
    /// `(name, value)` spans of the current head in `buf`.
    headers: Vec<(Range<usize>, Range<usize>)>,
    /// The upstream request head (kept until the response head came: a retry resends it).
    request: Vec<u8>,
    /// The client's response head and the first body bytes, or a proxy-made response.
    out: Vec<u8>,
}

/// The request head as routing reads it.
struct View<'a> {
    buf: &'a [u8],
    head: &'a Head,
    headers: &'a [(Range<usize>, Range<usize>)],
}

impl RequestHead for View<'_> {
    fn host(&self) -> Option<&str> {
        std::str::from_utf8(&self.buf[self.head.host.clone()]).ok()
    }

    fn path(&self) -> &str {
        let target = &self.buf[self.head.target.clone()];
        let path = target.split(|&b| b == b'?').next().unwrap_or(target);
        // The target was checked to be plain ASCII when parsed.
        std::str::from_utf8(path).unwrap_or("/")
    }

    fn header_values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        let name = name.as_str().as_bytes();
        self.headers
            .iter()
            .filter(move |(n, _)| self.buf[n.clone()].eq_ignore_ascii_case(name))
            .map(move |(_, v)| &self.buf[v.clone()])
    }
}

/// Serves requests on a client connection until it closes or must fall back.
pub(crate) async fn serve<S: ClientStream>(
    edge: &Edge,
    mut stream: S,
    client: SocketAddr,
    settings: &Settings,
    mut shutdown: watch::Receiver<bool>,
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
    loop {
        // Phase 0: a whole request head (or a reason to leave this path).
        let deadline = Instant::now() + settings.header_read_timeout;
        let head = loop {
            match parse_request(&s.buf, &mut s.headers) {
                Parsed::Head(head) => break head,
                Parsed::Fallback => return Ended::Fallback(stream, s.buf.freeze()),
                Parsed::Partial if s.buf.len() >= settings.max_head => {
                    return Ended::Fallback(stream, s.buf.freeze());
                }
                Parsed::Partial => {}
            }
            let idle = s.buf.is_empty() && s.buf.capacity() > 0;
            if let Some(readable) = idle.then(|| stream.readable()).flatten() {
                // A busy connection keeps its buffers from request to request; one idle for a
                // second gives them back, so idle keep-alive connections hold none.
                let soon = deadline.min(Instant::now() + IDLE_BUFFERS);
                tokio::select! {
                    biased;
                    _ = &mut stopping => return Ended::Closed,
                    ready = tokio::time::timeout_at(soon, readable) => {
                        if ready.is_err() {
                            s.buf = BytesMut::new();
                            s.request = Vec::new();
                            s.out = Vec::new();
                        }
                    }
                }
            }
            let read = tokio::select! {
                biased;
                _ = &mut stopping => return Ended::Closed,
                read = tokio::time::timeout_at(deadline, read_more(&mut stream, &mut s.buf)) => read,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return Ended::Closed,
                Ok(Ok(_)) => {}
                Err(_elapsed) => {
                    if !s.buf.is_empty() {
                        edge.rejections.count(Rejection::HeaderTimeout);
                    }
                    return Ended::Closed;
                }
            }
        };

        // Phases 2–3: route with the general path's phases.
        let arrived = std::time::Instant::now();
        let table = edge.table.load_full();
        let view = View {
            buf: &s.buf,
            head: &head,
            headers: &s.headers,
        };
        let mut log = edge
            .access_log
            .as_ref()
            .map(|log| Pending::new(log, client, logged_request(&view), arrived));
        let route = pipeline::route_service(&table, &view);
        if route.is_some_and(|i| !table.services[i].upstream_is_http1) {
            // HTTP/2 upstreams are hyper's; it re-reads this request from the start.
            return Ended::Fallback(stream, s.buf.freeze());
        }
        let routed =
            route.and_then(|i| Some((i, pipeline::choose_version(&table.services[i], &view)?)));
        let head_method = &s.buf[head.method.clone()] == b"HEAD";
        let idempotent = is_idempotent(&s.buf[head.method.clone()]);
        let Some((service, version)) = routed else {
            s.buf.advance(head.len);
            let bytes = write_error(&mut s.out, &ProxyError::NoRoute, head.close);
            if let Some(log) = &mut log {
                log.set(404, None, None, None);
                log.bytes = bytes;
            }
            if stream.write_all(&s.out).await.is_err() || head.close {
                return close(stream).await;
            }
            continue;
        };
        let mut ctx = RequestCtx {
            arrived,
            client,
            scheme: edge.scheme,
            table,
            service,
            version,
            backend: None,
        };

        // Phase 6: the upstream request head, straight from the client's bytes.
        write_upstream_head(&mut s.request, &view, &client_ip, edge.scheme);
        s.buf.advance(head.len);

        // Phases 5 and 7: a backend, the exchange, the response head (into `out`).
        let asked = Asked {
            request: &s.request,
            head_method,
            idempotent,
            client_close: head.close,
        };
        let sent = send(&mut ctx, asked, &mut s.out).await;
        if let Some(log) = &mut log {
            let status = sent
                .as_ref()
                .map_or_else(|e| e.status().as_u16(), |(_, r)| r.status);
            log.set(
                status,
                Some(Arc::clone(&ctx.service().name)),
                Some(Arc::clone(&ctx.version().name)),
                ctx.backend.map(|b| ctx.version().backends[b].address),
            );
        }
        let (mut up, response) = match sent {
            Ok(ok) => ok,
            Err(e) => {
                pipeline::record_outcome(&ctx, e.status().as_u16(), e.failure());
                let bytes = write_error(&mut s.out, &e, head.close);
                if let Some(log) = &mut log {
                    log.bytes = bytes;
                }
                if stream.write_all(&s.out).await.is_err() || head.close {
                    return close(stream).await;
                }
                continue;
            }
        };
        let status = response.status;
        pipeline::record_outcome(
            &ctx,
            status,
            (status >= 500).then_some(FailureReason::Status),
        );
        let pool = &ctx.version().backends[ctx.backend.expect("sent")].pool;

        // The body, streamed as the upstream framed it.
        let mut bytes = 0;
        let streamed = stream_body(
            &mut up,
            response.framing,
            &mut stream,
            &mut s.out,
            &mut bytes,
        )
        .await;
        if let Some(log) = &mut log {
            log.bytes = bytes;
        }
        match streamed {
            Streamed::Done { reusable } => {
                if reusable && response.upstream_keep_alive {
                    pool.put_raw(up);
                }
            }
            Streamed::Broken => return Ended::Closed,
        }
        if head.close || response.close_client {
            return close(stream).await;
        }
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

enum Parsed {
    Head(Head),
    Partial,
    Fallback,
}

/// Parses a request head in place and decides whether this path can take it.
fn parse_request(buf: &[u8], spans: &mut Vec<(Range<usize>, Range<usize>)>) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Fallback,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Fallback;
    };
    if method == "CONNECT" || !target.starts_with('/') || !target.bytes().all(is_plain_target) {
        return Parsed::Fallback;
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let mut head = Head {
        len,
        method: span(method.as_bytes()),
        target: span(target.as_bytes()),
        host: 0..0,
        close: false,
        connection_lists: false,
        x_forwarded_for: false,
        x_forwarded_host: false,
    };
    let mut hosts = 0;
    spans.clear();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value.trim_ascii();
        let is = |n: &HeaderName| name.eq_ignore_ascii_case(n.as_str().as_bytes());
        match name.len() {
            4 if is(&header::HOST) => {
                hosts += 1;
                head.host = span(value);
            }
            6 if is(&header::EXPECT) => return Parsed::Fallback,
            7 if is(&header::UPGRADE) => return Parsed::Fallback,
            10 if is(&header::CONNECTION) => {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        head.close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        head.connection_lists = true;
                    }
                }
            }
            // A body, or framing to check: the general path (and its smuggling checks).
            14 if is(&header::CONTENT_LENGTH) && value != b"0" => return Parsed::Fallback,
            17 if is(&header::TRANSFER_ENCODING) => return Parsed::Fallback,
            15 if is(&X_FORWARDED_FOR) => head.x_forwarded_for = true,
            16 if is(&X_FORWARDED_HOST) => head.x_forwarded_host = true,
            _ => {}
        }
        spans.push((span(name), span(value)));
    }
    let lengths = spans
        .iter()
        .filter(|(n, _)| buf[n.clone()].eq_ignore_ascii_case(b"content-length"))
        .count();
    if hosts != 1 || lengths > 1 {
        return Parsed::Fallback;
    }
    Parsed::Head(head)
}

/// What the access log says about a request, from its raw head.
fn logged_request(req: &View<'_>) -> LoggedRequest {
    let buf = req.buf;
    let value = |name: &HeaderName| {
        req.header_values(name)
            .next()
            .and_then(|v| HeaderValue::from_bytes(v).ok())
    };
    LoggedRequest {
        method: Method::from_bytes(&buf[req.head.method.clone()]).unwrap_or_default(),
        uri: Uri::try_from(&buf[req.head.target.clone()]).unwrap_or_default(),
        protocol: Version::HTTP_11,
        host: HeaderValue::from_bytes(&buf[req.head.host.clone()]).ok(),
        referer: value(&header::REFERER),
        user_agent: value(&header::USER_AGENT),
    }
}

/// Target bytes this path forwards as they are: RFC 3986 path and query characters (a
/// subset of what the general path accepts; anything else goes there).
fn is_plain_target(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

fn is_idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}

/// The request as the upstream sees it: same method, target and headers, minus hop-by-hop
/// headers, plus `X-Forwarded-For` (appended), `-Proto` (replaced) and `-Host` (if absent).
fn write_upstream_head(out: &mut Vec<u8>, req: &View<'_>, client_ip: &str, scheme: &str) {
    let buf = req.buf;
    out.clear();
    out.extend_from_slice(&buf[req.head.method.clone()]);
    out.push(b' ');
    out.extend_from_slice(&buf[req.head.target.clone()]);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let connection = |name: &[u8]| {
        req.header_values(&header::CONNECTION)
            .any(|c| headers::connection_lists(c, name))
    };
    for (n, v) in req.headers {
        let name = &buf[n.clone()];
        if headers::is_hop_by_hop(name)
            || (req.head.connection_lists && connection(name))
            || name.eq_ignore_ascii_case(X_FORWARDED_FOR.as_str().as_bytes())
            || name.eq_ignore_ascii_case(X_FORWARDED_PROTO.as_str().as_bytes())
        {
            continue;
        }
        push_header(out, name, &buf[v.clone()]);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if req.head.x_forwarded_for {
        for v in req.header_values(&X_FORWARDED_FOR) {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(scheme.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !req.head.x_forwarded_host {
        push_header(out, b"x-forwarded-host", &buf[req.head.host.clone()]);
    }
    out.extend_from_slice(b"\r\n");
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A proxy-made response (DESIGN §5: the same status and text as the general path); returns
/// the body's length.
fn write_error(out: &mut Vec<u8>, e: &ProxyError, close: bool) -> u64 {
    let status = e.status();
    let body = e.body();
    out.clear();
    push_status_line(
        out,
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
    );
    // As hyper adds to the general path's responses (RFC 9110 §6.6.1); a rare path, so the
    // date is formatted here rather than cached.
    push_header(
        out,
        b"date",
        httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes(),
    );
    out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\ncontent-length: ");
    push_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    body.len() as u64
}

fn push_status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// What the client asked the upstream, and how.
#[derive(Clone, Copy)]
struct Asked<'a> {
    request: &'a [u8],
    head_method: bool,
    idempotent: bool,
    client_close: bool,
}

/// The upstream's response head (already rewritten for the client into the caller's buffer).
struct ResponseHead {
    status: u16,
    framing: Framing,
    /// The upstream connection may carry another request after this one.
    upstream_keep_alive: bool,
    /// The body ends when the upstream closes, so the client connection must close too.
    close_client: bool,
}

/// Why an attempt on one upstream connection got no usable response head.
enum Attempt {
    /// The request did not reach the backend: another backend may take it.
    NotSent,
    /// The connection closed before any response byte (a stale keep-alive connection, or a
    /// backend that gave up): for a reused connection and an idempotent request, a fresh
    /// connection may be tried.
    ClosedEarly,
    Timeout,
    Invalid,
}

/// Phases 5 and 7: pick a backend, send, read the response head; retry once on another
/// backend when the request never reached the first one (SPEC §4), like the general path.
async fn send(
    ctx: &mut RequestCtx,
    asked: Asked<'_>,
    out: &mut Vec<u8>,
) -> Result<(RawConn, ResponseHead), ProxyError> {
    let table = Arc::clone(&ctx.table);
    let service = &table.services[ctx.service];
    let version = &service.versions[ctx.version];
    ctx.choose_backend()?;
    let deadline = Instant::now() + service.timeouts.request;
    let mut retried = false;
    loop {
        let backend = &version.backends[ctx.backend.expect("set above")];
        let attempt = exchange(&backend.pool, asked, &service.timeouts, deadline, out).await;
        match attempt {
            Ok(ok) => return Ok(ok),
            Err(Attempt::NotSent) => ctx.retry_backend(&mut retried)?,
            Err(Attempt::Timeout) => return Err(ProxyError::Timeout),
            Err(Attempt::ClosedEarly | Attempt::Invalid) => return Err(ProxyError::Reset),
        }
    }
}

/// One backend: a pooled connection (or a fresh one if the pooled one turns out stale), the
/// request written, the response head read.
async fn exchange(
    pool: &UpstreamPool,
    asked: Asked<'_>,
    timeouts: &SendTimeouts,
    deadline: Instant,
    out: &mut Vec<u8>,
) -> Result<(RawConn, ResponseHead), Attempt> {
    let mut stale_retry = true;
    loop {
        let acquired = tokio::time::timeout_at(deadline, pool.acquire_raw(timeouts, !stale_retry));
        let (mut up, reused) = match acquired.await {
            Err(_elapsed) => return Err(Attempt::Timeout),
            Ok(Ok(acquired)) => acquired,
            Ok(Err(why)) => {
                tracing::debug!(backend = %pool.address(), ?why, "upstream connect failed");
                return Err(Attempt::NotSent);
            }
        };
        let result =
            tokio::time::timeout_at(deadline, write_and_read_head(&mut up, asked, out)).await;
        match result {
            Err(_elapsed) => return Err(Attempt::Timeout),
            Ok(Ok(head)) => return Ok((up, head)),
            Ok(Err(Attempt::NotSent)) if !reused => return Err(Attempt::NotSent),
            Ok(Err(Attempt::NotSent | Attempt::ClosedEarly))
                if reused && stale_retry && asked.idempotent =>
            {
                // A keep-alive race: the backend closed the idle connection as we used it.
                stale_retry = false;
            }
            Ok(Err(Attempt::NotSent)) => return Err(Attempt::ClosedEarly),
            Ok(Err(e)) => return Err(e),
        }
    }
}

async fn write_and_read_head(
    up: &mut RawConn,
    asked: Asked<'_>,
    out: &mut Vec<u8>,
) -> Result<ResponseHead, Attempt> {
    up.stream
        .write_all(asked.request)
        .await
        .map_err(|_| Attempt::NotSent)?;
    let mut any = false;
    loop {
        if !up.buf.is_empty() {
            match parse_response(&up.buf, asked.head_method, asked.client_close, out) {
                ParsedResponse::Head(len, head) => {
                    up.buf.advance(len);
                    return Ok(head);
                }
                ParsedResponse::Informational(len) => {
                    up.buf.advance(len);
                    continue;
                }
                ParsedResponse::Partial if up.buf.len() < MAX_RESPONSE_HEAD => {}
                ParsedResponse::Partial | ParsedResponse::Invalid => return Err(Attempt::Invalid),
            }
        }
        if up.buf.capacity() - up.buf.len() < 512 {
            up.buf.reserve(HEAD_READ);
        }
        match up.stream.read_buf(&mut up.buf).await {
            Ok(0) | Err(_) if !any => return Err(Attempt::ClosedEarly),
            Ok(0) | Err(_) => return Err(Attempt::Invalid),
            Ok(_) => any = true,
        }
    }
}

enum ParsedResponse {
    Head(usize, ResponseHead),
    Informational(usize),
    Partial,
    Invalid,
}

/// Parses the upstream's response head and writes the client's version of it.
fn parse_response(
    buf: &[u8],
    head_method: bool,
    client_close: bool,
    out: &mut Vec<u8>,
) -> ParsedResponse {
    let mut raw = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut res = httparse::Response::new(&mut raw);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return ParsedResponse::Partial,
        Err(_) => return ParsedResponse::Invalid,
    };
    let (Some(status), Some(minor)) = (res.code, res.version) else {
        return ParsedResponse::Invalid;
    };
    match status {
        // 101 is never asked for on this path; below 100 is no status at all.
        0..=99 | 101 => return ParsedResponse::Invalid,
        100..=199 => return ParsedResponse::Informational(len),
        _ => {}
    }
    let mut upstream_keep_alive = minor == 1;
    let mut chunked = false;
    let mut length: Option<u64> = None;
    let mut connection_lists = false;
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value.trim_ascii();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only plain `chunked` can be passed through as it is.
            if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                return ParsedResponse::Invalid;
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = parse_length(value) else {
                return ParsedResponse::Invalid;
            };
            if length.is_some_and(|l| l != n) {
                return ParsedResponse::Invalid;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    upstream_keep_alive = false;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    connection_lists = true;
                }
            }
        }
    }
    let no_body = head_method || status == 204 || status == 304;
    let framing = if no_body {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(Chunked::default())
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        upstream_keep_alive = false;
        Framing::UntilClose
    };
    let close_client = client_close || matches!(framing, Framing::UntilClose);

    out.clear();
    push_status_line(out, status, res.reason.unwrap_or(""));
    let listed = |name: &[u8]| {
        res.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection") && headers::connection_lists(h.value, name)
        })
    };
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        if headers::is_hop_by_hop(name)
            || (connection_lists && listed(name))
            || (chunked && name.eq_ignore_ascii_case(b"content-length"))
        {
            continue;
        }
        push_header(out, name, h.value);
    }
    if chunked && !no_body {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close_client {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    ParsedResponse::Head(
        len,
        ResponseHead {
            status,
            framing,
            upstream_keep_alive,
            close_client,
        },
    )
}

fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

enum Streamed {
    /// The whole body reached the client; `reusable`: the upstream sent nothing after it.
    Done { reusable: bool },
    /// Either side broke off mid-body: the client connection must close.
    Broken,
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
        return Streamed::Broken;
    };
    out.extend_from_slice(&up.buf[..n]);
    *sent += n as u64;
    let mut reusable = n == up.buf.len();
    up.buf.clear();
    if client.write_all(out).await.is_err() {
        return Streamed::Broken;
    }
    while !done {
        if up.buf.capacity() < BODY_READ {
            up.buf.reserve(BODY_READ);
        }
        match up.stream.read_buf(&mut up.buf).await {
            Ok(0) if matches!(framing, Framing::UntilClose) => {
                return Streamed::Done { reusable: false };
            }
            Ok(0) | Err(_) => return Streamed::Broken,
            Ok(_) => {}
        }
        let Ok((n, finished)) = framing.feed(&up.buf) else {
            return Streamed::Broken;
        };
        if client.write_all(&up.buf[..n]).await.is_err() {
            return Streamed::Broken;
        }
        *sent += n as u64;
        reusable &= n == up.buf.len();
        done = finished;
        up.buf.clear();
    }
    Streamed::Done { reusable }
}

/// How the response body ends.
enum Framing {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

impl Framing {
    /// Takes body bytes: how many of `data` belong to the body, and whether it is complete.
    fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), ()> {
        match self {
            Framing::Length(left) => {
                let n = (*left).min(data.len() as u64);
                *left -= n;
                Ok((n as usize, *left == 0))
            }
            Framing::Chunked(c) => c.feed(data),
            Framing::UntilClose => Ok((data.len(), false)),
        }
    }
}

/// Follows chunked framing byte by byte (data runs are skipped whole), so the body passes
/// through verbatim — extensions and trailers included — and its end is known exactly.
#[derive(Default)]
struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
    trailer_bytes: usize,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
}

/// Bounds on what a chunked body may carry besides data.
const MAX_CHUNK_DIGITS: u8 = 15;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

impl Chunked {
    fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), ()> {
        use ChunkState::*;
        let mut i = 0;
        while i < data.len() {
            if self.state == Data {
                let n = self.size.min((data.len() - i) as u64);
                self.size -= n;
                i += n as usize;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match (self.state, b) {
                (Size, b) if b.is_ascii_hexdigit() && self.digits < MAX_CHUNK_DIGITS => {
                    let digit = (b as char).to_digit(16).expect("hex digit");
                    self.size = self.size * 16 + u64::from(digit);
                    self.digits += 1;
                    Size
                }
                (Size, b';') if self.digits > 0 => Extension,
                (Size, b'\r') if self.digits > 0 => SizeLf,
                (Extension, b'\r') => SizeLf,
                (Extension, b) if b != b'\n' => Extension,
                (SizeLf, b'\n') if self.size == 0 => TrailerStart,
                (SizeLf, b'\n') => Data,
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => {
                    self.digits = 0;
                    Size
                }
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart | TrailerLine, b) if b != b'\n' && b != b'\r' => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(());
                    }
                    TrailerLine
                }
                (TrailerLine, b'\r') => TrailerLf,
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => return Ok((i, true)),
                _ => return Err(()),
            };
        }
        Ok((i, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(input: &[u8]) -> Result<(usize, bool), ()> {
        Chunked::default().feed(input)
    }

    #[test]
    fn chunked_body_ends_exactly_after_the_last_chunk_and_trailers() {
        let body = b"4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nx-checksum: 1\r\n\r\nNEXT";
        assert_eq!(chunked(body), Ok((body.len() - 4, true)));
        assert_eq!(chunked(b"0\r\n\r\n"), Ok((5, true)));
    }

    #[test]
    fn chunked_body_split_anywhere_gives_the_same_end() {
        let body = b"a\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n";
        for cut in 0..body.len() {
            let mut c = Chunked::default();
            let (a, done_a) = c.feed(&body[..cut]).unwrap();
            assert_eq!(a, cut);
            assert!(!done_a || cut == body.len());
            let (b, done_b) = c.feed(&body[cut..]).unwrap();
            assert_eq!(a + b, body.len(), "cut at {cut}");
            assert!(done_b, "cut at {cut}");
        }
    }

    #[test]
    fn bad_chunk_framing_is_an_error() {
        assert!(chunked(b"zz\r\n").is_err());
        assert!(chunked(b"\r\n").is_err());
        assert!(chunked(b"3\r\nabcX").is_err());
        assert!(chunked(b"1234567890abcdef0\r\n").is_err());
        assert!(chunked(b"3\nabc").is_err());
    }

    fn parse(raw: &[u8]) -> Parsed {
        parse_request(raw, &mut Vec::new())
    }

    #[test]
    fn plain_requests_take_the_fast_path_and_others_fall_back() {
        assert!(matches!(
            parse(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            Parsed::Head(_)
        ));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHo"), Parsed::Partial));
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /a<b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw), Parsed::Fallback),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn upstream_head_drops_hop_by_hop_and_adds_forwarding() {
        let raw = b"GET /x HTTP/1.1\r\nHost: api.test\r\nConnection: keep-alive, X-Secret\r\n\
            X-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 203.0.113.7\r\n\
            X-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n";
        let mut spans = Vec::new();
        let Parsed::Head(head) = parse_request(raw, &mut spans) else {
            panic!("not parsed");
        };
        let view = View {
            buf: raw,
            head: &head,
            headers: &spans,
        };
        let mut out = Vec::new();
        write_upstream_head(&mut out, &view, "127.0.0.1", "http");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /x HTTP/1.1\r\nHost: api.test\r\nAccept: */*\r\n\
             x-forwarded-for: 203.0.113.7, 127.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: api.test\r\n\r\n"
        );
    }

    #[test]
    fn response_head_is_rewritten_for_the_client() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: t\r\nConnection: keep-alive\r\n\
            Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
        let mut out = Vec::new();
        let ParsedResponse::Head(len, head) = parse_response(raw, false, false, &mut out) else {
            panic!("not parsed");
        };
        assert_eq!(len, raw.len());
        assert!(matches!(head.framing, Framing::Chunked(_)));
        assert!(head.upstream_keep_alive && !head.close_client);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: t\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        // No length, no chunking: read until close, and tell the client.
        let ParsedResponse::Head(_, head) =
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n", false, false, &mut out)
        else {
            panic!("not parsed");
        };
        assert!(matches!(head.framing, Framing::UntilClose));
        assert!(!head.upstream_keep_alive && head.close_client);
        assert!(matches!(
            parse_response(b"HTTP/1.1 100 Continue\r\n\r\n", false, false, &mut out),
            ParsedResponse::Informational(25)
        ));
        assert!(matches!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                false,
                &mut out
            ),
            ParsedResponse::Invalid
        ));
    }

    /// Mutated real heads and bodies (a deterministic xorshift mutator, so every `cargo test`
    /// runs the same 20,000 cases): the parsers never panic, spans stay inside the head, what
    /// the proxy writes upstream or to the client parses back whole (no header injection), and
    /// chunked framing never claims bytes it was not given.
    #[test]
    fn parsers_survive_mutated_input() {
        let seeds: [&[u8]; 6] = [
            b"GET /a?b=1 HTTP/1.1\r\nHost: api.test\r\nCookie: u=1; v=2\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
            b"DELETE /x HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\nGET / HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close, x-b\r\nX-B: 2\r\n\r\nhello",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"a;x=y\r\n0123456789\r\n0\r\nt: 1\r\n\r\n",
        ];
        let interesting = b"\r\n :;,0aA\t\x00\x7f\xff/?";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        let parses_back_as_request = |out: &[u8]| {
            let mut raw = [httparse::EMPTY_HEADER; 2 * MAX_HEADERS];
            let mut req = httparse::Request::new(&mut raw);
            matches!(req.parse(out), Ok(httparse::Status::Complete(n)) if n == out.len())
        };
        for _ in 0..20_000 {
            let mut input = seeds[next() % seeds.len()].to_vec();
            for _ in 0..next() % 6 {
                let at = next() % (input.len() + 1);
                match next() % 4 {
                    0 if at < input.len() => input[at] = interesting[next() % interesting.len()],
                    1 => input.insert(at, interesting[next() % interesting.len()]),
                    2 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => {
                        let from = next() % (input.len() + 1);
                        let piece = input[from.min(at)..from.max(at)].to_vec();
                        input.splice(at..at, piece);
                    }
                }
            }

            let mut spans = Vec::new();
            if let Parsed::Head(head) = parse_request(&input, &mut spans) {
                assert!(head.len <= input.len());
                assert!(spans
                    .iter()
                    .all(|(n, v)| n.end <= head.len && v.end <= head.len));
                let view = View {
                    buf: &input,
                    head: &head,
                    headers: &spans,
                };
                let mut out = Vec::new();
                write_upstream_head(&mut out, &view, "127.0.0.1", "http");
                assert!(
                    parses_back_as_request(&out),
                    "{:?}",
                    String::from_utf8_lossy(&out)
                );
                let _ = pipeline::route_service(&crate::RoutingTable::default(), &view);
            }

            let mut out = Vec::new();
            if let ParsedResponse::Head(len, _) = parse_response(&input, false, false, &mut out) {
                assert!(len <= input.len());
                let mut raw = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS + 2];
                let mut res = httparse::Response::new(&mut raw);
                assert!(
                    matches!(res.parse(&out), Ok(httparse::Status::Complete(n)) if n == out.len()),
                    "{:?}",
                    String::from_utf8_lossy(&out)
                );
            }

            let cut = next() % (input.len() + 1);
            let mut c = Chunked::default();
            if let Ok((a, done)) = c.feed(&input[..cut]) {
                assert!(a <= cut);
                if !done {
                    if let Ok((b, _)) = c.feed(&input[cut..]) {
                        assert!(b <= input.len() - cut);
                    }
                }
            }
        }
    }

    #[test]
    fn status_codes_and_lengths_render_as_decimal() {
        let mut out = Vec::new();
        push_decimal(&mut out, 0);
        out.push(b' ');
        push_decimal(&mut out, 18_446_744_073_709_551_615);
        assert_eq!(out, b"0 18446744073709551615");
    }
}
