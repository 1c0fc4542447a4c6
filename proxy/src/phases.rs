//! The request's phases, in order, over one per-request context (Pingora-style).
//!
//! ```text
//! accept → limits → route (service, version) → pick (backend) → forward (retry)
//!        → record + log → respond
//! ```
//!
//! Both transports — the fast HTTP/1.1 path ([`crate::http1`]) and hyper's general path
//! ([`crate::general`]) — route with these functions over the [`RequestHead`] view each has
//! of the request, and record with [`record_outcome`]. The whole request works on the one
//! routing table that was current when it arrived.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::Request;

use crate::error::ProxyError;
use crate::pick::sticky_bucket;
use crate::stats::FailureReason;
use crate::table::{OverrideRule, RoutingTable, ServiceRoute, StickyKey, VersionRoute};

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

/// What routing reads from a request head. The general path reads hyper's parsed
/// `Request`; the fast HTTP/1.1 path ([`crate::http1`]) reads the client's bytes in place. Both
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
/// for fuzzing and tools; the data path runs the same two phases on every request.
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
