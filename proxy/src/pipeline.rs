//! The request's journey through the proxy, phase by phase, in one place.
//!
//! ```text
//! check_request → route_service → choose_version → take_upgrade → choose_backend
//!      → upstream_request → send (retry once if it never reached a backend)
//!      → downstream_response (→ tunnel on 101) → record → access log
//! ```
//!
//! Each phase is a small function over the per-request [`RequestCtx`] (Pingora-style), so a
//! reader can name every step and find it here. Every proxy-made failure is a
//! [`ProxyError`]; it becomes a response in exactly one place ([`ProxyError::into_response`]).
//! The whole request works on the one routing table that was current when it arrived.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::access_log::{AccessLog, Pending};
use crate::body::{BodyError, RequestBody, ResponseBody};
use crate::error::ProxyError;
use crate::framing::FramingVerdict;
use crate::headers;
use crate::listener::{Rejection, Rejections, Slot, Tunnels};
use crate::pick::sticky_bucket;
use crate::stats::FailureReason;
use crate::table::{OverrideRule, RoutingTable, ServiceRoute, StickyKey, VersionRoute};
use crate::upstream::SendError;
use crate::TableHandle;

/// What every connection of one listener shares.
#[derive(Debug)]
pub struct Edge {
    pub table: TableHandle,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
    pub max_request_body: Option<u64>,
    pub access_log: Option<Arc<AccessLog>>,
    pub tunnels: Tunnels,
    pub rejections: Rejections,
}

/// One client connection; lives as long as the connection (and any tunnel made from it).
#[derive(Debug)]
pub struct Conn {
    pub client: SocketAddr,
    pub edge: Arc<Edge>,
    /// The smuggling scanner's findings for HTTP/1.x connections (framing.rs).
    pub framing: Option<Arc<FramingVerdict>>,
    /// Released when the connection and its tunnel are gone (connection cap, active gauge).
    pub(crate) _slot: Slot,
}

/// What the proxy knows about one request while it is being handled.
pub struct RequestCtx {
    pub arrived: Instant,
    pub client: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
    pub table: Arc<RoutingTable>,
    pub service: usize,
    pub version: usize,
    pub backend: Option<usize>,
}

impl RequestCtx {
    pub(crate) fn service(&self) -> &ServiceRoute {
        &self.table.services[self.service]
    }

    pub(crate) fn version(&self) -> &VersionRoute {
        &self.service().versions[self.version]
    }

    /// Phase 5: a healthy backend of the chosen version (round-robin), or the 503.
    pub(crate) fn choose_backend(&mut self) -> Result<(), ProxyError> {
        let version = self.version();
        match version.pick_backend(None) {
            Some(b) => {
                self.backend = Some(b);
                Ok(())
            }
            None => Err(ProxyError::NoHealthyBackend(
                version.no_healthy_body.clone(),
            )),
        }
    }

    /// The request never reached its backend: another backend of the same version, once per
    /// request (SPEC §4). Not counted as a request: the client never sees the failed attempt.
    pub(crate) fn retry_backend(&mut self, retried: &mut bool) -> Result<(), ProxyError> {
        let next = match *retried {
            true => None,
            false => self.version().pick_backend(self.backend),
        };
        *retried = true;
        self.backend = Some(next.ok_or(ProxyError::Connect)?);
        Ok(())
    }
}

/// Handles one request end to end. Never fails: errors become proxy-made responses.
pub async fn handle(conn: &Arc<Conn>, req: Request<Incoming>) -> Response<ResponseBody> {
    let arrived = Instant::now();
    let log = conn
        .edge
        .access_log
        .as_ref()
        .map(|log| Pending::start(log, conn.client, &req, arrived));
    let (response, ctx) = proxy(conn, req, arrived).await;
    match log {
        None => response,
        Some(mut log) => {
            match &ctx {
                Some(ctx) => log.set(
                    response.status().as_u16(),
                    Some(Arc::clone(&ctx.service().name)),
                    Some(Arc::clone(&ctx.version().name)),
                    ctx.backend.map(|b| ctx.version().backends[b].address),
                ),
                None => log.set(response.status().as_u16(), None, None, None),
            }
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, ResponseBody::Logged(Box::new((body, log))))
        }
    }
}

async fn proxy(
    conn: &Arc<Conn>,
    mut req: Request<Incoming>,
    arrived: Instant,
) -> (Response<ResponseBody>, Option<RequestCtx>) {
    if let Err(e) = check_request(conn, &req) {
        conn.edge.rejections.count(match e {
            ProxyError::PayloadTooLarge => Rejection::BodyTooLarge,
            _ => Rejection::BadRequest,
        });
        return (e.into_response(), None);
    }
    let table = conn.edge.table.load_full();
    let Some(service) = route_service(&table, &req) else {
        return (ProxyError::NoRoute.into_response(), None);
    };
    let Some(version) = choose_version(&table.services[service], &req) else {
        // Only possible when no version has weight and no override matched.
        return (ProxyError::NoRoute.into_response(), None);
    };
    let upgrade = take_upgrade(&table.services[service], &mut req);
    let mut ctx = RequestCtx {
        arrived,
        client: conn.client,
        scheme: conn.edge.scheme,
        table,
        service,
        version,
        backend: None,
    };
    let result = forward(&mut ctx, conn, req, upgrade).await;
    (record(&ctx, result), Some(ctx))
}

/// Phase 1: refuse requests whose framing is ambiguous (request smuggling) or whose declared
/// body is over the limit — before anything is routed or forwarded.
fn check_request(conn: &Conn, req: &Request<Incoming>) -> Result<(), ProxyError> {
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
        // HTTP/2 (h2 already refuses Transfer-Encoding and checks DATA against the length):
        // one Content-Length at most, so no downgraded HTTP/1.1 request can carry two.
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
    }
    if let Some(limit) = conn.edge.max_request_body {
        if req.body().size_hint().lower() > limit {
            return Err(ProxyError::PayloadTooLarge);
        }
    }
    Ok(())
}

/// What routing reads from a request head. The general path reads hyper's parsed
/// `Request`; the fast HTTP/1.1 path ([`crate::h1`]) reads the client's bytes in place. Both
/// route through the same phases below.
pub trait RequestHead {
    /// The host the request is for (`:authority`, the absolute URI's host, or `Host`).
    fn host(&self) -> Option<&str>;
    fn path(&self) -> &str;
    /// Every value of header `name`, in order.
    fn header_values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a;
}

impl<B> RequestHead for Request<B> {
    fn host(&self) -> Option<&str> {
        self.uri().authority().map(|a| a.as_str()).or_else(|| {
            self.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
    }

    fn path(&self) -> &str {
        self.uri().path()
    }

    fn header_values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers()
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
    }
}

/// The routing decision alone — phases 2 and 3, `(service, version)` indices into `table` —
/// for fuzzing and tools; the data path runs the same two phases inside [`handle`].
pub fn route(table: &RoutingTable, req: &impl RequestHead) -> Option<(usize, usize)> {
    let service = route_service(table, req)?;
    let version = choose_version(&table.services[service], req)?;
    Some((service, version))
}

/// Phase 2: which service (SPEC §4.1).
pub(crate) fn route_service(table: &RoutingTable, req: &impl RequestHead) -> Option<usize> {
    table.matcher.find(req.host(), req.path())
}

/// Phase 3: which version — override, then sticky key, then weighted random (SPEC §4.2–3).
pub(crate) fn choose_version(service: &ServiceRoute, req: &impl RequestHead) -> Option<usize> {
    for rule in service.overrides.iter() {
        let hit = match rule {
            OverrideRule::Header { name, value, .. } => {
                req.header_values(name).any(|v| v == value.as_bytes())
            }
            OverrideRule::Cookie { name, value, .. } => cookie(req, name) == Some(&**value),
        };
        if hit {
            return Some(match rule {
                OverrideRule::Header { version, .. } | OverrideRule::Cookie { version, .. } => {
                    *version
                }
            });
        }
    }
    let key = match &service.sticky {
        Some(StickyKey::Header(name)) => req.header_values(name).next(),
        Some(StickyKey::Cookie(name)) => cookie(req, name).map(str::as_bytes),
        None => None,
    };
    match key {
        Some(key) => service.pick.pick_bucket(sticky_bucket(key)),
        None => service.pick.pick_random(rand::random()),
    }
}

/// Finds a cookie's value without allocating.
fn cookie<'r>(req: &'r impl RequestHead, name: &str) -> Option<&'r str> {
    static COOKIE: HeaderName = header::COOKIE;
    req.header_values(&COOKIE)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Phase 4: an HTTP/1.1 `Upgrade` (WebSocket…) request to an HTTP/1.1 upstream keeps its
/// `Connection: upgrade` + `Upgrade` headers and gets a tunnel if the backend answers 101.
/// Anything else loses them as hop-by-hop headers — `Upgrade: h2c` always does, so a client
/// can never tunnel HTTP/2 past the proxy's checks (h2c smuggling).
fn take_upgrade(
    service: &ServiceRoute,
    req: &mut Request<Incoming>,
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
    let asked = req.headers().get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    if !asked {
        return None;
    }
    let upgrade = upgrade.clone();
    Some((upgrade, hyper::upgrade::on(req)))
}

/// Phases 5–7: choose a backend, rewrite the request, send it; retry once on another backend
/// of the same version if it never reached the first one. A 101 answer to an upgrade becomes
/// a tunnel between the two upgraded connections.
async fn forward(
    ctx: &mut RequestCtx,
    conn: &Arc<Conn>,
    req: Request<Incoming>,
    upgrade: Option<(HeaderValue, OnUpgrade)>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let table = Arc::clone(&ctx.table);
    let service = &table.services[ctx.service];
    let version = &service.versions[ctx.version];
    ctx.choose_backend()?;
    let (upgrade_value, client_upgrade) = match upgrade {
        Some((v, on)) => (Some(v), Some(on)),
        None => (None, None),
    };
    let mut req = upstream_request(ctx, req, conn.edge.max_request_body, upgrade_value.as_ref());
    let mut retried = false;
    loop {
        let backend = &version.backends[ctx.backend.expect("set above")];
        match backend.pool.send(req, service.timeouts).await {
            Ok(mut response) => {
                let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
                if let (true, Some(client)) = (upgraded, client_upgrade) {
                    let upstream = hyper::upgrade::on(&mut response);
                    tunnel(conn, client, upstream);
                }
                return Ok(downstream_response(
                    response,
                    upgraded.then_some(()).and(upgrade_value),
                ));
            }
            Err(SendError::NotSent(back, why)) => {
                tracing::debug!(backend = %backend.address, ?why, "upstream connect failed");
                ctx.retry_backend(&mut retried)?;
                req = back;
            }
            Err(SendError::Timeout) => return Err(ProxyError::Timeout),
            Err(SendError::Reset(e)) => {
                // The client's body failing is the client's problem, not the backend's.
                match BodyError::find(&e) {
                    Some(BodyError::TooLarge) => {
                        conn.edge.rejections.count(Rejection::BodyTooLarge);
                        return Err(ProxyError::PayloadTooLarge);
                    }
                    Some(BodyError::Client(_)) => {
                        conn.edge.rejections.count(Rejection::BadRequest);
                        return Err(ProxyError::BadRequest("invalid request body\n"));
                    }
                    None => {}
                }
                tracing::debug!(backend = %backend.address, error = %e, "upstream reset");
                return Err(ProxyError::Reset);
            }
        }
    }
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

/// Phase 6: the request as the upstream sees it (origin-form, forwarding headers; the pool
/// adapts version and URI to its protocol).
fn upstream_request(
    ctx: &RequestCtx,
    req: Request<Incoming>,
    max_body: Option<u64>,
    upgrade: Option<&HeaderValue>,
) -> Request<RequestBody> {
    let (mut parts, body) = req.into_parts();
    // HTTP/2 clients send the host as :authority; an HTTP/1.1 upstream needs a Host header.
    if !parts.headers.contains_key(header::HOST) {
        if let Some(authority) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
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
    Request::from_parts(parts, RequestBody::new(body, max_body))
}

/// Phase 7: the upstream's response as the client sees it. A 101 keeps its upgrade headers.
fn downstream_response(
    response: Response<Incoming>,
    upgrade: Option<HeaderValue>,
) -> Response<ResponseBody> {
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
    Response::from_parts(parts, ResponseBody::Upstream(body))
}

/// Phase 8: count the request once, for metrics and analysis alike.
fn record(
    ctx: &RequestCtx,
    result: Result<Response<ResponseBody>, ProxyError>,
) -> Response<ResponseBody> {
    match result {
        Ok(r) => {
            let status = r.status().as_u16();
            record_outcome(
                ctx,
                status,
                (status >= 500).then_some(FailureReason::Status),
            );
            r
        }
        Err(e) => {
            record_outcome(ctx, e.status().as_u16(), e.failure());
            e.into_response()
        }
    }
}

/// Phase 8 for either path: the status the client gets and, if failed, why.
pub(crate) fn record_outcome(ctx: &RequestCtx, status: u16, failure: Option<FailureReason>) {
    if cfg!(feature = "bench-no-record") {
        // Benchmarks only: measure the proxy without its recordings.
        return;
    }
    let version = ctx.version();
    version.stats.record_latency(ctx.arrived.elapsed());
    let stats = match ctx.backend {
        Some(b) => &version.backend_stats[b],
        None => &version.stats.unassigned,
    };
    stats.record(status, failure);
}
