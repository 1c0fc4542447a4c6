//! The request's phases, written once, in order; both transports drive them.
//!
//! ```text
//! accept        listener.rs: connection cap, TLS, ALPN → a transport
//! limits        limits(): TRACE (unless allowed), then the transport's own checks
//!               (request framing, declared body size)
//! route         route_service() → choose_version(): service, then version (SPEC §4.1–3)
//! pick          a healthy backend of that version (round-robin)
//! forward       the transport's upstream request, then exchange() per attempt, with
//!               retry.rs deciding whether and where an attempt that failed goes again
//! record + log  request.rs RequestCtx::finish, when the response has ended (once)
//! respond       the transport writes the head and streams the body
//! ```
//!
//! [`run`] is that list as code, over one per-request [`RequestCtx`] (Pingora's phases over
//! its `CTX`). A [`Transport`] — the fast HTTP/1.1 path ([`crate::http1`], raw bytes) or
//! hyper's general path ([`crate::general`], every protocol) — supplies what differs: how the
//! request head is read, which limits it checks itself, how the upstream request is written
//! and one attempt on one backend is made. The whole request works on the one routing table
//! that was current when it arrived.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Request;
use switchyard_config::SafetyNet;

use crate::access_log::{AccessLog, Pending};
use crate::canary::{user_hash, NetResult};
use crate::edge::{Edge, Rejection};
use crate::error::ProxyError;
use crate::mirror::{self, Copy};
use crate::pick::sticky_bucket;
use crate::request::{self, Answer, RequestCtx};
use crate::retry::{self as policy, Failed, Retries};
use crate::table::{Backend, OverrideRule, RoutingTable, ServiceRoute, StickyKey};

/// What differs between the transports; [`run`] does the rest.
pub(crate) trait Transport {
    type Head: RequestHead;
    /// What a successful exchange yields (a response head, and whatever carries the body).
    type Response;

    /// The request head, as the phases read it.
    fn head(&self) -> &Self::Head;

    /// Limits this transport checks itself (request framing, declared body size).
    fn check(&mut self, edge: &Edge) -> Result<(), ProxyError>;

    /// Whether this transport serves requests for `service` (the fast path hands HTTP/2
    /// upstreams to hyper before anything is recorded).
    fn takes(&self, service: &ServiceRoute) -> bool;

    /// The access log line for this request.
    fn log_line(&self, log: &Arc<AccessLog>, ctx: &RequestCtx) -> Pending;

    /// The request as the upstream will see it (hop-by-hop headers out, forwarding in).
    /// `keep`: it may be sent again (the safety net) or copied (a mirror step), so keep what
    /// that needs — a body only if it has a length of at most `keep` bytes.
    fn prepare(&mut self, ctx: &RequestCtx, keep: Option<u64>);

    /// The safety net (SPEC §13): make the request ready to be sent once more, to another
    /// version, after an attempt that reached a backend. `false` when it cannot be: its body
    /// went upstream without a copy kept, or one over 64 KiB.
    fn again(&mut self) -> bool;

    /// A mirror step (SPEC §13): a copy of the request for the canary, if its body (if any)
    /// was kept and is at most `max_body` bytes.
    fn copy(&mut self, max_body: u64) -> Option<Copy>;

    /// One attempt on one backend, up to the response head. `sent` is moved to the moment
    /// the backend had the whole request (the end of its body), if that comes first.
    fn exchange(
        &mut self,
        service: &ServiceRoute,
        backend: &Backend,
        sent: &mut Instant,
    ) -> impl Future<Output = Result<Self::Response, Failed>> + Send;

    /// The response's status and, where the transport has them, its headers.
    fn status(response: &Self::Response) -> (u16, Option<&HeaderMap>);
}

/// How [`run`] left the request.
pub(crate) enum Served<R> {
    /// The upstream answered; the transport streams the response, then finishes `ctx`.
    Upstream(R),
    /// The proxy answers this itself; the transport writes it, then finishes `ctx`.
    Proxy(ProxyError),
    /// This transport does not take the request: another one starts it over.
    HandOff,
}

/// The phases, in order, for one request.
pub(crate) async fn run<T: Transport>(
    edge: &Edge,
    ctx: &mut RequestCtx,
    t: &mut T,
) -> Served<T::Response> {
    // limits
    if let Err(e) = limits(edge, t) {
        start_log(edge, ctx, t);
        return fail(ctx, e);
    }
    // route
    let table = Arc::clone(&ctx.table);
    let Some(s) = route_service(&table, t.head()) else {
        start_log(edge, ctx, t);
        return fail(ctx, ProxyError::NoRoute);
    };
    let service = &table.services[s];
    if !t.takes(service) {
        return Served::HandOff;
    }
    start_log(edge, ctx, t);
    let Some(v) = choose_version(service, t.head()) else {
        // Only possible when no version has weight and no override matched.
        return fail(ctx, ProxyError::NoRoute);
    };
    ctx.route = Some((s, v));
    if let Some(live) = service.rollout.as_ref().filter(|r| r.active) {
        // Measured impact (SPEC §13): who this request counts for.
        ctx.user = Some(user_hash(sticky_key(service, t.head()), ctx.client));
        ctx.to_canary = v == live.canary;
    }
    // pick, forward
    match forward(ctx, t, service, v).await {
        Ok(response) => {
            let (status, headers) = T::status(&response);
            ctx.answered(status, headers);
            Served::Upstream(response)
        }
        Err(e) => fail(ctx, e),
    }
}

/// The edge's own limits, then the transport's.
fn limits<T: Transport>(edge: &Edge, t: &mut T) -> Result<(), ProxyError> {
    if !edge.allow_trace && t.head().method() == b"TRACE" {
        edge.rejections.count(Rejection::MethodNotAllowed);
        return Err(ProxyError::MethodNotAllowed);
    }
    t.check(edge)
}

fn start_log<T: Transport>(edge: &Edge, ctx: &mut RequestCtx, t: &T) {
    if let Some(log) = &edge.access_log {
        ctx.log = Some(t.log_line(log, ctx));
    }
}

fn fail<R>(ctx: &mut RequestCtx, e: ProxyError) -> Served<R> {
    ctx.failed(e.clone());
    Served::Proxy(e)
}

/// Write the upstream request, send it to version `v`; during a mirror step, copy it to the
/// canary; and if it failed on a running rollout's canary, let the safety net replay it on
/// the stable (SPEC §13).
async fn forward<T: Transport>(
    ctx: &mut RequestCtx,
    t: &mut T,
    service: &ServiceRoute,
    v: usize,
) -> Result<T::Response, ProxyError> {
    let net = service
        .rollout
        .as_ref()
        .filter(|r| r.safety_net_for(v).is_some());
    let replayable = net.is_some() && policy::may_replay(t.head().method(), true);
    let mirror = service
        .rollout
        .as_ref()
        .filter(|r| r.active && r.mirror_pct > 0 && v != r.canary && mirror::sampled(r));
    let keep = [
        replayable.then_some(SafetyNet::MAX_BODY),
        mirror.map(|r| r.mirror_max_body),
    ]
    .into_iter()
    .flatten()
    .max();
    t.prepare(ctx, keep);
    let first = send(ctx, t, service, v).await;
    if let Some(live) = mirror {
        // After the original's attempt, on its own task: a copy never delays it.
        if let Some(copy) = t.copy(live.mirror_max_body) {
            mirror::send(ctx, live, copy);
        }
    }
    let Some(live) = net else {
        return first;
    };
    live.budget.deposit(ctx.arrived);
    let answer = match &first {
        Ok(response) => Answer::Upstream {
            status: T::status(response).0,
            grpc: None,
        },
        Err(e) => Answer::Proxy(e.clone()),
    };
    if !request::fails(&answer) {
        return first;
    }
    let counters = &service.canary_counters;
    if !(replayable && t.again()) {
        counters.safety_net(NetResult::Unsafe);
        return first;
    }
    if !live.budget.withdraw(Instant::now()) {
        counters.safety_net(NetResult::Budget);
        return first;
    }
    // The canary's answer is dropped unread (its connection with it); the client gets the
    // stable's.
    drop(first);
    ctx.replay_on(live.stable, answer);
    let second = send(ctx, t, service, live.stable).await;
    let ok = second.as_ref().is_ok_and(|r| T::status(r).0 < 500);
    counters.safety_net(if ok { NetResult::Ok } else { NetResult::Failed });
    second
}

/// Pick a healthy backend of version `v` and make attempts until one answers or the retry
/// policy says stop.
async fn send<T: Transport>(
    ctx: &mut RequestCtx,
    t: &mut T,
    service: &ServiceRoute,
    v: usize,
) -> Result<T::Response, ProxyError> {
    let version = &service.versions[v];
    let mut backend = version
        .pick_backend(None)
        .ok_or_else(|| ProxyError::NoHealthyBackend(version.no_healthy_body.clone()))?;
    ctx.backend = Some(backend);
    let mut retries = Retries::default();
    loop {
        let attempt = t.exchange(service, &version.backends[backend], &mut ctx.sent);
        match attempt.await {
            Ok(response) => return Ok(response),
            Err(failed) => {
                tracing::debug!(backend = %version.backends[backend].address, ?failed, "upstream attempt failed");
                backend = retries.next(version, backend, failed)?;
                ctx.backend = Some(backend);
            }
        }
    }
}

/// What routing reads from a request head. The general path reads hyper's parsed
/// `Request`; the fast HTTP/1.1 path ([`crate::http1`]) reads the client's bytes in place. Both
/// route through the same phases below.
pub trait RequestHead {
    /// The host the request is for (`:authority`, the absolute URI's host, or `Host`), as
    /// sent (routing lower-cases it and drops the port).
    fn host(&self) -> Option<&[u8]>;
    /// The target's path, without the query.
    fn path(&self) -> &[u8];
    fn method(&self) -> &[u8];
    /// Every value of header `name`, in order.
    fn header_values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a;
}

impl<B> RequestHead for Request<B> {
    fn host(&self) -> Option<&[u8]> {
        self.uri()
            .authority()
            .map(|a| a.as_str().as_bytes())
            .or_else(|| self.headers().get(header::HOST).map(HeaderValue::as_bytes))
    }

    fn path(&self) -> &[u8] {
        self.uri().path().as_bytes()
    }

    fn method(&self) -> &[u8] {
        self.method().as_str().as_bytes()
    }

    fn header_values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers()
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
    }
}

/// The routing decision alone — the route phase, `(service, version)` indices into `table` —
/// for fuzzing and tools; the data path runs the same two phases on every request.
pub fn route(table: &RoutingTable, req: &impl RequestHead) -> Option<(usize, usize)> {
    let service = route_service(table, req)?;
    let version = choose_version(&table.services[service], req)?;
    Some((service, version))
}

/// Route, part 1: which service (SPEC §4.1).
pub(crate) fn route_service(table: &RoutingTable, req: &impl RequestHead) -> Option<usize> {
    let host = if table.matcher.by_host() {
        req.host()
    } else {
        None
    };
    table.matcher.find(host, req.path())
}

/// Route, part 2: which version — override, then sticky key, then weighted random (SPEC §4.2–3).
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
    match sticky_key(service, req) {
        Some(key) => service.pick.pick_bucket(sticky_bucket(key)),
        None => service.pick.pick_random(rand::random()),
    }
}

/// The request's sticky key, if the service has one and the request carries it.
fn sticky_key<'r>(service: &'r ServiceRoute, req: &'r impl RequestHead) -> Option<&'r [u8]> {
    match &service.sticky {
        Some(StickyKey::Header(name)) => req.header_values(name).next(),
        Some(StickyKey::Cookie(name)) => cookie(req, name).map(str::as_bytes),
        None => None,
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
