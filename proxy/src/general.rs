//! The general transport: hyper serves every HTTP/1.x request the fast path does not take
//! (bodies, upgrades, HTTP/1.0, heads the fast path cannot parse), and [`handle`] serves the
//! HTTP/2 streams `crate::http2` does not take on the raw client (bodies, HTTP/2 upstreams),
//! running the same phases ([`crate::phases`]) over the parsed request.
//!
//! What is hyper's own here: its server connection ([`serve`], with the limits set in
//! [`http_builder`]), the request checks it needs on top of its parser ([`check_request`]),
//! the request and response rewritten as `http` types, `Upgrade` tunnels, and turning a
//! [`ProxyError`] into a response. The response body carries the request's context and
//! finishes it when it ends (`body::ResponseBody`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use switchyard_config::{Limits, SafetyNet};

use crate::access_log::{AccessLog, Pending};
use crate::body::{BodyError, BodyFailure, BodySent, ClientBody, RequestBody};
use crate::edge::{ClientStream, Edge, Rejection, Slot};
use crate::error::ProxyError;
use crate::framing::{AbortSignal, FramingVerdict, ScanIo, Scanner};
use crate::headers;
use crate::mirror::Copy;
use crate::phases::{self, Served, Transport};
use crate::request::{End, RequestCtx};
use crate::response::ResponseBody;
use crate::retry::{Failed, NotSent};
use crate::table::{Backend, ServiceRoute};
use crate::upstream::SendError;

/// One client connection on this transport; lives as long as the connection (and any tunnel
/// made from it).
#[derive(Debug)]
pub(crate) struct Conn {
    client: SocketAddr,
    edge: Arc<Edge>,
    /// The smuggling scanner's findings for HTTP/1.x connections (framing.rs).
    framing: Option<Arc<FramingVerdict>>,
    /// Set when an upstream broke off a response: the connection then ends with a reset.
    abort: Arc<AbortSignal>,
    /// Released when the connection and its tunnel are gone (connection cap, active gauge).
    _slot: Slot,
}

impl Conn {
    /// A connection's state for this transport; `framing`: the smuggling scanner's verdict
    /// (HTTP/1.x only).
    pub(crate) fn new(
        edge: Arc<Edge>,
        client: SocketAddr,
        framing: Option<Arc<FramingVerdict>>,
        slot: Slot,
    ) -> Arc<Conn> {
        Arc::new(Conn {
            client,
            edge,
            framing,
            abort: Arc::default(),
            _slot: slot,
        })
    }
}

/// Serves one HTTP/1.x connection (plain or TLS) to the end with hyper. `read_before`: bytes
/// the fast path already read from `io`.
pub(crate) async fn serve<I: ClientStream + 'static>(
    edge: Arc<Edge>,
    io: I,
    read_before: Bytes,
    client: SocketAddr,
    slot: Slot,
    watcher: Watcher,
) {
    // Everything is read through the smuggling scanner.
    let framing = Arc::new(FramingVerdict::default());
    let scanner = Scanner::new(edge.max_head, Arc::clone(&framing));
    let conn = Conn::new(Arc::clone(&edge), client, Some(framing), slot);
    let io = ScanIo::new(io, Some(scanner), Arc::clone(&conn.abort)).with_read_before(read_before);
    let service = service_fn(move |req: Request<Incoming>| {
        let conn = Arc::clone(&conn);
        let req = req.map(ClientBody::Http1);
        async move { Ok::<_, std::convert::Infallible>(handle(&conn, req).await) }
    });
    let conn = edge
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        let reason = e.downcast_ref::<hyper::Error>().and_then(|e| {
            if e.is_timeout() {
                Some(Rejection::HeaderTimeout)
            } else if e.is_parse_too_large() {
                Some(Rejection::HeaderTooLarge)
            } else if e.is_parse() {
                Some(Rejection::BadRequest)
            } else {
                None
            }
        });
        if let Some(reason) = reason {
            edge.rejections.count(reason);
        }
        tracing::debug!(%client, error = %e, "connection ended with an error");
    }
}

/// Handles one request end to end. Never fails: errors become proxy-made responses.
pub async fn handle(conn: &Arc<Conn>, req: Request<ClientBody>) -> Response<ResponseBody> {
    let edge = &conn.edge;
    let table = edge.table.load_full();
    let mut ctx = RequestCtx::new(table, conn.client, edge.scheme, Instant::now());
    let http1_client = req.version() <= Version::HTTP_11;
    let mut t = Hyper {
        conn,
        client: Some(req),
        upstream: None,
        upgrade: None,
        body: None,
        kept: None,
        keep_body: None,
    };
    match phases::run(edge, &mut ctx, &mut t).await {
        Served::Upstream(response) => respond(conn, ctx, response, t.upgrade, t.body, http1_client),
        Served::Proxy(e) => {
            let response = into_response(&e);
            ctx.finish(End::Complete, e.body().len() as u64);
            response
        }
        // hyper takes every request; this arm only keeps the match whole.
        Served::HandOff => into_response(&ProxyError::NoRoute),
    }
}

/// The request as this transport holds it through the phases.
struct Hyper<'c> {
    conn: &'c Arc<Conn>,
    /// The client's request, until the upstream request is made from it.
    client: Option<Request<ClientBody>>,
    /// The upstream request (handed back by an attempt that never sent it).
    upstream: Option<Request<RequestBody>>,
    /// An HTTP/1.1 `Upgrade` passed through: the protocol asked for, the client's side.
    upgrade: Option<(HeaderValue, OnUpgrade)>,
    /// When the request body was sent upstream, and how it failed (`None`: no body).
    body: Option<Arc<BodySent>>,
    /// What a replay by the safety net or a mirror copy sends again: the upstream request's
    /// head and its whole body (kept only when one may be needed).
    kept: Option<Kept>,
    /// The largest body to keep, read whole before the first attempt (`None`: none).
    keep_body: Option<u64>,
}

/// A copy of an upstream request, to send it once more.
struct Kept {
    method: http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Kept {
    fn of(req: &Request<RequestBody>, body: Bytes) -> Kept {
        Kept {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
            body,
        }
    }

    fn request(&self) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::kept(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

impl Transport for Hyper<'_> {
    type Head = Request<ClientBody>;
    type Response = Response<Incoming>;

    fn head(&self) -> &Request<ClientBody> {
        self.client
            .as_ref()
            .expect("read before the upstream request is made")
    }

    fn check(&mut self, edge: &Edge) -> Result<(), ProxyError> {
        check_request(self.conn, self.head()).inspect_err(|e| {
            edge.rejections.count(match e {
                ProxyError::PayloadTooLarge => Rejection::BodyTooLarge,
                _ => Rejection::BadRequest,
            })
        })
    }

    fn takes(&self, _: &ServiceRoute) -> bool {
        true
    }

    fn log_line(&self, log: &Arc<AccessLog>, ctx: &RequestCtx) -> Pending {
        Pending::of_request(log, ctx.client, self.head(), ctx.arrived)
    }

    fn prepare(&mut self, ctx: &RequestCtx, keep: Option<u64>) {
        let mut req = self.client.take().expect("prepared once");
        self.upgrade = take_upgrade(ctx.service(), &mut req);
        let upgrade = self.upgrade.as_ref().map(|(v, _)| v);
        let upstream = upstream_request(ctx, req, &self.conn.edge, upgrade);
        self.body = upstream.body().sent();
        if let (Some(limit), None) = (keep, &self.upgrade) {
            if upstream.body().is_end_stream() {
                self.kept = Some(Kept::of(&upstream, Bytes::new()));
            } else if upstream
                .body()
                .size_hint()
                .upper()
                .is_some_and(|n| n <= limit)
            {
                self.keep_body = Some(limit);
            }
        }
        self.upstream = Some(upstream);
    }

    fn again(&mut self) -> bool {
        let Some(kept) = self
            .kept
            .as_ref()
            .filter(|k| k.body.len() as u64 <= SafetyNet::MAX_BODY)
        else {
            return false;
        };
        self.upstream = Some(kept.request());
        self.body = None;
        true
    }

    fn copy(&mut self, max_body: u64) -> Option<Copy> {
        let kept = self.kept.as_ref()?;
        (kept.body.len() as u64 <= max_body).then(|| Copy::Hyper(Box::new(kept.request())))
    }

    async fn exchange(
        &mut self,
        service: &ServiceRoute,
        backend: &Backend,
        sent: &mut Instant,
    ) -> Result<Response<Incoming>, Failed> {
        if self.keep_body.take().is_some() {
            // Kept whole for a replay or a copy: read before the first attempt, so the
            // request timeout and the judged latency start once it is all here.
            self.keep_whole_body().await?;
            *sent = Instant::now();
        }
        let req = self
            .upstream
            .take()
            .expect("an upstream request per attempt");
        let result = backend.pool.send(req, service.timeouts).await;
        if let Some(at) = self.body.as_ref().and_then(|b| b.at()) {
            *sent = at;
        }
        let e = match result {
            Ok(response) => return Ok(response),
            Err(SendError::NotSent(back, why)) => {
                tracing::debug!(backend = %backend.address, ?why, "upstream connect failed");
                self.upstream = Some(back);
                return Err(Failed::NotSent(NotSent::of(&why)));
            }
            Err(e) => e,
        };
        // The client's body failing is the client's problem, not the backend's — whatever
        // the upstream connection made of it.
        let body = self.body.as_ref().and_then(|b| b.failure());
        let found = match &e {
            SendError::Reset(e) => BodyError::find(e).map(BodyError::failure),
            _ => None,
        };
        match (body.or(found), e) {
            (Some(fault), _) => Err(self.client_fault(fault)),
            (None, SendError::Timeout) => Err(Failed::Timeout),
            (None, e) => {
                tracing::debug!(backend = %backend.address, error = ?e, "upstream reset");
                Err(Failed::Reset)
            }
        }
    }

    fn status(response: &Response<Incoming>) -> (u16, Option<&HeaderMap>) {
        (response.status().as_u16(), Some(response.headers()))
    }
}

impl Hyper<'_> {
    /// The client's body failed: its fault, counted at the edge, never the backend's.
    fn client_fault(&self, fault: BodyFailure) -> Failed {
        let rejections = &self.conn.edge.rejections;
        match fault {
            BodyFailure::TooLarge => {
                rejections.count(Rejection::BodyTooLarge);
                Failed::Client(ProxyError::PayloadTooLarge)
            }
            BodyFailure::Client => {
                rejections.count(Rejection::BadRequest);
                Failed::Client(ProxyError::BadRequest("invalid request body\n"))
            }
            BodyFailure::Timeout => {
                rejections.count(Rejection::BodyTimeout);
                Failed::Client(ProxyError::BodyTimeout)
            }
        }
    }

    /// Reads the upstream request's body whole (it has a length within the keep limit) and
    /// sends it from the kept copy; the body limit and client body timeout still apply.
    async fn keep_whole_body(&mut self) -> Result<(), Failed> {
        let req = self.upstream.take().expect("prepared");
        let (parts, body) = req.into_parts();
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return Err(self.client_fault(e.failure())),
        };
        let kept = Kept {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body: bytes,
        };
        self.upstream = Some(kept.request());
        self.kept = Some(kept);
        self.body = None;
        Ok(())
    }
}

/// Respond: the upstream's head to the client, its body streamed behind it carrying `ctx`
/// (finished when the body ends). A 101 answer to an upgrade becomes a tunnel between the
/// two upgraded connections.
fn respond(
    conn: &Arc<Conn>,
    mut ctx: RequestCtx,
    mut response: Response<Incoming>,
    upgrade: Option<(HeaderValue, OnUpgrade)>,
    body: Option<Arc<BodySent>>,
    http1_client: bool,
) -> Response<ResponseBody> {
    let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let (asked, client) = match upgrade {
        Some((v, on)) => (Some(v), Some(on)),
        None => (None, None),
    };
    if let (true, Some(client)) = (upgraded, client) {
        let upstream = hyper::upgrade::on(&mut response);
        tunnel(conn, client, upstream);
        ctx.finish(End::Complete, 0);
    }
    let (parts, upstream) = downstream_response(response, upgraded.then_some(()).and(asked));
    // An HTTP/1.x client is shown an upstream abort as a reset connection (HTTP/2: hyper
    // resets the stream).
    let abort = http1_client.then(|| Arc::clone(&conn.abort));
    Response::from_parts(parts, ResponseBody::upstream(upstream, ctx, body, abort))
}

/// A proxy-made answer as a hyper response: the status and text of [`ProxyError`].
pub(crate) fn into_response(e: &ProxyError) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::text(e.body()));
    *response.status_mut() = e.status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if e.closes() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Limits, hyper's part: refuse requests whose framing is ambiguous (request smuggling) or
/// whose declared body is over the limit — before anything is routed or forwarded.
fn check_request(conn: &Conn, req: &Request<ClientBody>) -> Result<(), ProxyError> {
    let h = req.headers();
    if req.version() <= Version::HTTP_11 {
        // What hyper's parser hides (CL+TE, bad chunk lines), seen by the connection's scanner.
        if let Some(verdict) = &conn.framing {
            verdict
                .check()
                .map_err(|e| ProxyError::BadRequest(e.message()))?;
        }
        if let Some(te) = h.get(header::TRANSFER_ENCODING) {
            if h.contains_key(header::CONTENT_LENGTH) {
                return Err(ProxyError::BadRequest(
                    "both Content-Length and Transfer-Encoding: request refused\n",
                ));
            }
            // hyper decodes `chunked` only; a body still under another coding (`gzip, chunked`)
            // would reach the backend without its coding named.
            if h.get_all(header::TRANSFER_ENCODING).iter().nth(1).is_some()
                || !te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked")
            {
                return Err(ProxyError::BadRequest(
                    "unsupported Transfer-Encoding: request refused\n",
                ));
            }
        }
    } else {
        check_h2(h)?;
    }
    if let Some(limit) = conn.edge.max_request_body {
        if req.body().size_hint().lower() > limit {
            return Err(ProxyError::PayloadTooLarge);
        }
    }
    Ok(())
}

/// Limits for an HTTP/2 request (the h2 codec already refuses `Transfer-Encoding` and checks
/// DATA against the length): one `Content-Length` at most, so no downgraded HTTP/1.1 request
/// can carry two — for both HTTP/2 paths.
pub(crate) fn check_h2(h: &HeaderMap) -> Result<(), ProxyError> {
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    if lengths.next().is_some() && lengths.next().is_some() {
        return Err(ProxyError::BadRequest(
            "more than one Content-Length: request refused\n",
        ));
    }
    if h.contains_key(header::TRANSFER_ENCODING) {
        return Err(ProxyError::BadRequest(
            "Transfer-Encoding is not allowed in HTTP/2: request refused\n",
        ));
    }
    Ok(())
}

/// Forward, hyper's part: an HTTP/1.1 `Upgrade` (WebSocket…) request to an HTTP/1.1 upstream keeps its
/// `Connection: upgrade` + `Upgrade` headers and gets a tunnel if the backend answers 101.
/// Anything else loses them as hop-by-hop headers — `Upgrade: h2c` always does, so a client
/// can never tunnel HTTP/2 past the proxy's checks (h2c smuggling).
fn take_upgrade(
    service: &ServiceRoute,
    req: &mut Request<ClientBody>,
) -> Option<(HeaderValue, OnUpgrade)> {
    if req.version() != Version::HTTP_11 || !service.upstream_is_http1 {
        return None;
    }
    let upgrade = req.headers().get(header::UPGRADE)?;
    if upgrade
        .to_str()
        .map_or(true, |v| v.to_ascii_lowercase().contains("h2c"))
    {
        return None;
    }
    if !headers::ConnectionOptions::of(req.headers()).upgrade {
        return None;
    }
    let upgrade = upgrade.clone();
    Some((upgrade, hyper::upgrade::on(req)))
}

/// Splices the client's and the backend's upgraded connections until either side closes or
/// the listener's drain deadline passes. The tunnel holds the connection's slot meanwhile.
fn tunnel(conn: &Arc<Conn>, client: OnUpgrade, upstream: OnUpgrade) {
    let conn = Arc::clone(conn);
    let mut closing = conn.edge.tunnels.enter();
    tokio::spawn(async move {
        let (client, upstream) = match tokio::join!(client, upstream) {
            (Ok(c), Ok(u)) => (c, u),
            (c, u) => {
                tracing::debug!(client = ?c.err(), upstream = ?u.err(), "upgrade failed");
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut upstream = hyper_util::rt::TokioIo::new(upstream);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                tracing::debug!(client = %conn.client, result = ?r, "tunnel closed");
            }
            _ = closing.wait() => {
                tracing::debug!(client = %conn.client, "tunnel closed at the drain deadline");
            }
        }
        drop(conn);
    });
}

/// Forward, hyper's part: the request as the upstream sees it (origin-form, forwarding headers; the pool
/// adapts version and URI to its protocol).
fn upstream_request(
    ctx: &RequestCtx,
    req: Request<ClientBody>,
    edge: &Edge,
    upgrade: Option<&HeaderValue>,
) -> Request<RequestBody> {
    let (mut parts, body) = req.into_parts();
    // The backend sees the host the request was routed by (`RequestHead::host`): HTTP/2's
    // :authority, or an absolute-form target's host, wins over a `Host` header
    // (RFC 9112 §3.2.2, RFC 9113 §8.3.1).
    if let Some(authority) = parts.uri.authority() {
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(header::HOST, v);
        }
    }
    if parts.uri.scheme().is_some() {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>();
        parts.uri = path.unwrap_or_else(|_| Uri::from_static("/"));
    }
    parts.version = Version::HTTP_11;
    // `TE: trailers` is hop-by-hop, but the proxy forwards trailers, so it may say it too to
    // an HTTP/2 upstream (gRPC servers want it).
    let trailers = !ctx.service().upstream_is_http1
        && parts.headers.get(header::TE).is_some_and(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("trailers"))
        });
    headers::strip_hop_by_hop(&mut parts.headers);
    if trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(upgrade) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, upgrade.clone());
    }
    headers::add_forwarding(&mut parts.headers, ctx.client.ip(), ctx.scheme);
    let body = RequestBody::new(body, edge.max_request_body, edge.client_body_timeout);
    Request::from_parts(parts, body)
}

/// Respond: the upstream's response head as the client sees it (the body follows as it is).
/// A 101 keeps its upgrade headers.
fn downstream_response(
    response: Response<Incoming>,
    upgrade: Option<HeaderValue>,
) -> (http::response::Parts, Incoming) {
    let (mut parts, body) = response.into_parts();
    let answered = parts.headers.get(header::UPGRADE).cloned();
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(asked) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(header::UPGRADE, answered.unwrap_or(asked));
    }
    (parts, body)
}

/// hyper's HTTP/1.x limits, set explicitly rather than left to defaults that may change
/// (HTTP/2 is `crate::http2`'s).
pub(crate) fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        // Runs from the moment the connection waits for a request head, so it bounds both a
        // slow head (slowloris) and an idle kept-alive connection.
        .header_read_timeout(limits.header_read_timeout)
        // hyper answers 431 when a request head does not fit; its minimum buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(100)
        .keep_alive(true);
    builder
}
