//! The request's journey through the proxy, phase by phase, in one place.
//!
//! ```text
//! check_request → route_service → choose_version → choose_backend
//!      → upstream_request → send (retry once if it never reached a backend)
//!      → downstream_response → record
//! ```
//!
//! Each phase is a small function over the per-request [`RequestCtx`] (Pingora-style), so a
//! reader can name every step and find it here. Every proxy-made failure is a
//! [`ProxyError`]; it becomes a response in exactly one place ([`ProxyError::into_response`]).
//! The whole request works on the one routing table that was current when it arrived.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::headers;
use crate::pick::sticky_bucket;
use crate::stats::FailureReason;
use crate::table::{OverrideRule, RoutingTable, ServiceRoute, StickyKey, VersionRoute};
use crate::upstream::SendError;
use crate::TableHandle;

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
    fn service(&self) -> &ServiceRoute {
        &self.table.services[self.service]
    }

    fn version(&self) -> &VersionRoute {
        &self.service().versions[self.version]
    }
}

/// Handles one request end to end. Never fails: errors become proxy-made responses.
pub async fn handle(
    table: &TableHandle,
    client: SocketAddr,
    scheme: &'static str,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let arrived = Instant::now();
    if let Err(e) = check_request(&req) {
        return e.into_response();
    }
    let table = table.load_full();
    let Some(service) = route_service(&table, &req) else {
        return ProxyError::NoRoute.into_response();
    };
    let Some(version) = choose_version(&table.services[service], &req) else {
        // Only possible when no version has weight and no override matched.
        return ProxyError::NoRoute.into_response();
    };
    let mut ctx = RequestCtx {
        arrived,
        client,
        scheme,
        table,
        service,
        version,
        backend: None,
    };
    let result = forward(&mut ctx, req).await;
    record(&ctx, result)
}

/// Phase 1: refuse requests whose framing is ambiguous (request smuggling).
fn check_request(req: &Request<Incoming>) -> Result<(), ProxyError> {
    let h = req.headers();
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Err(ProxyError::BadRequest(
            "both Content-Length and Transfer-Encoding: request refused\n",
        ));
    }
    Ok(())
}

/// Phase 2: which service (SPEC §4.1).
fn route_service(table: &RoutingTable, req: &Request<Incoming>) -> Option<usize> {
    let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    table.matcher.find(host, req.uri().path())
}

/// Phase 3: which version — override, then sticky key, then weighted random (SPEC §4.2–3).
fn choose_version(service: &ServiceRoute, req: &Request<Incoming>) -> Option<usize> {
    for rule in service.overrides.iter() {
        let hit = match rule {
            OverrideRule::Header { name, value, .. } => {
                req.headers().get_all(name).iter().any(|v| v == value)
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
        Some(StickyKey::Header(name)) => req.headers().get(name).map(HeaderValue::as_bytes),
        Some(StickyKey::Cookie(name)) => cookie(req, name).map(str::as_bytes),
        None => None,
    };
    match key {
        Some(key) => service.pick.pick_bucket(sticky_bucket(key)),
        None => service.pick.pick_random(rand::random()),
    }
}

/// Finds a cookie's value without allocating.
fn cookie<'r>(req: &'r Request<Incoming>, name: &str) -> Option<&'r str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Phases 4–6: choose a backend, rewrite the request, send it; retry once on another backend
/// of the same version if it never reached the first one.
async fn forward(
    ctx: &mut RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let table = Arc::clone(&ctx.table);
    let service = &table.services[ctx.service];
    let version = &service.versions[ctx.version];
    let Some(first) = version.pick_backend(None) else {
        return Err(ProxyError::NoHealthyBackend(
            version.no_healthy_body.clone(),
        ));
    };
    ctx.backend = Some(first);
    let mut req = upstream_request(ctx, req);
    let mut retried = false;
    loop {
        let backend = &version.backends[ctx.backend.expect("set above")];
        match backend.pool.send(req, service.timeouts).await {
            Ok(response) => return Ok(downstream_response(response)),
            Err(SendError::NotSent(back, why)) => {
                tracing::debug!(backend = %backend.address, ?why, "upstream connect failed");
                let next = if retried {
                    None
                } else {
                    version.pick_backend(ctx.backend)
                };
                match next {
                    Some(next) => {
                        // Not counted as a request: the client never sees this attempt.
                        retried = true;
                        ctx.backend = Some(next);
                        req = back;
                    }
                    None => return Err(ProxyError::Connect),
                }
            }
            Err(SendError::Timeout) => return Err(ProxyError::Timeout),
            Err(SendError::Reset(e)) => {
                tracing::debug!(backend = %backend.address, error = %e, "upstream reset");
                return Err(ProxyError::Reset);
            }
        }
    }
}

/// Phase 5: the request as the upstream sees it (HTTP/1.1, origin-form, forwarding headers).
fn upstream_request(ctx: &RequestCtx, req: Request<Incoming>) -> Request<Incoming> {
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
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::add_forwarding(&mut parts.headers, ctx.client.ip(), ctx.scheme);
    Request::from_parts(parts, body)
}

/// Phase 7: the upstream's response as the client sees it.
fn downstream_response(response: Response<Incoming>) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, ResponseBody::Upstream(body))
}

/// Phase 8: count the request once, for metrics and analysis alike.
fn record(
    ctx: &RequestCtx,
    result: Result<Response<ResponseBody>, ProxyError>,
) -> Response<ResponseBody> {
    if cfg!(feature = "bench-no-record") {
        // Benchmarks only: measure the proxy without its recordings.
        return result.unwrap_or_else(ProxyError::into_response);
    }
    let version = ctx.version();
    version.stats.record_latency(ctx.arrived.elapsed());
    let (status, failure, response) = match result {
        Ok(r) => {
            let status = r.status().as_u16();
            let failure = (status >= 500).then_some(FailureReason::Status);
            (status, failure, r)
        }
        Err(e) => (e.status().as_u16(), e.failure(), e.into_response()),
    };
    let stats = match ctx.backend {
        Some(b) => &version.backend_stats[b],
        None => &version.stats.unassigned,
    };
    stats.record(status, failure);
    response
}
