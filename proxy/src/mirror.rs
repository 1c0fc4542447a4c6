//! Mirror steps (SPEC §13, a dark canary): users are served by the stable; a copy of a share
//! of the service's requests goes to the canary, off the request path, and its answer is
//! thrown away.
//!
//! Why this shape: a copy must never delay, change or fail the original. So it is made only
//! after the original's upstream attempt is over (its response head is on its way to the
//! client), it runs on its own task, and what it holds is its own (a copy of the upstream
//! head, and of a body only when that was small enough to keep whole — `mirror.max_body`).
//! A canary that falls behind cannot pile copies up: at most [`MAX_IN_FLIGHT`] per service
//! are under way, more are dropped and counted. Each copy is recorded like a real request on
//! the canary — the one failure rule, the canary's counters and latency ([`RequestCtx`]) —
//! so analysis, fast-fail and the metrics judge the canary on the copies exactly as on users'
//! traffic; it counts for no user and writes no access-log line.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use http::Request;
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;

use crate::body::RequestBody;
use crate::canary::{CanaryCounters, LiveRollout, MirrorResult};
use crate::error::ProxyError;
use crate::request::{self, End, RequestCtx};
use crate::retry::{self as policy, Failed, NotSent};
use crate::upstream::raw::{self, Asked, Framing};
use crate::upstream::{SendError, SendTimeouts, UpstreamPool};

/// Read size for a copy's response body.
const BODY_READ: usize = 64 * 1024;

/// Copies under way per service, at most; beyond it a copy is dropped.
pub const MAX_IN_FLIGHT: usize = 1000;

/// What a copy sends: the upstream head as bytes, sent over the raw HTTP/1.1 client (a
/// bodyless request, as the fast path and the HTTP/2 server send them), or hyper's request.
pub(crate) enum Copy {
    Raw {
        head: Vec<u8>,
        head_method: bool,
        idempotent: bool,
    },
    Hyper(Box<Request<RequestBody>>),
}

/// Whether this request of the service is one of the `mirror_pct` percent to copy.
pub(crate) fn sampled(live: &LiveRollout) -> bool {
    live.mirror_pct >= 100 || rand::random::<u32>() % 100 < live.mirror_pct
}

/// Sends `copy` of the request in `ctx` to the rollout's canary on its own task — unless
/// [`MAX_IN_FLIGHT`] copies of the service are already under way (then it is dropped).
pub(crate) fn send(ctx: &RequestCtx, live: &LiveRollout, copy: Copy) {
    let (s, _) = ctx.route.expect("routed");
    let counters = Arc::clone(&ctx.table.services[s].canary_counters);
    if counters.mirror_in_flight.fetch_add(1, Relaxed) >= MAX_IN_FLIGHT {
        counters.mirror_in_flight.fetch_sub(1, Relaxed);
        counters.mirror(MirrorResult::Dropped);
        return;
    }
    counters.mirror(MirrorResult::Sent);
    let slot = InFlight(counters);
    let mut copy_ctx = RequestCtx::new(
        Arc::clone(&ctx.table),
        ctx.client,
        ctx.scheme,
        Instant::now(),
    );
    copy_ctx.route = Some((s, live.canary));
    tokio::spawn(async move {
        let failed = run(copy_ctx, copy).await;
        if failed {
            slot.0.mirror(MirrorResult::Failed);
        }
        drop(slot);
    });
}

/// Holds one of the service's in-flight places until the copy is done.
struct InFlight(Arc<CanaryCounters>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.mirror_in_flight.fetch_sub(1, Relaxed);
    }
}

/// One copy on one canary backend, recorded as the canary's request; whether it failed.
async fn run(mut ctx: RequestCtx, copy: Copy) -> bool {
    let table = Arc::clone(&ctx.table);
    let (s, v) = ctx.route.expect("routed");
    let service = &table.services[s];
    let version = &service.versions[v];
    let end = match version.pick_backend(None) {
        None => {
            ctx.failed(ProxyError::NoHealthyBackend(
                version.no_healthy_body.clone(),
            ));
            End::Complete
        }
        Some(b) => {
            ctx.backend = Some(b);
            let pool = &version.backends[b].pool;
            // A copy's whole exchange, body included, is bounded by twice the request
            // timeout: a canary that stalls mid-body cannot hold an in-flight place forever.
            let bound = service.timeouts.request * 2;
            let exchange = async {
                match copy {
                    Copy::Raw {
                        head,
                        head_method,
                        idempotent,
                    } => {
                        let asked = Asked {
                            request: &head,
                            head_method,
                            idempotent,
                            client_close: false,
                            may_reconnect: policy::may_reconnect,
                        };
                        raw_copy(pool, asked, &service.timeouts, &mut ctx).await
                    }
                    Copy::Hyper(req) => hyper_copy(pool, *req, service, &mut ctx).await,
                }
            };
            match tokio::time::timeout(bound, exchange).await {
                Ok(end) => end,
                Err(_) if ctx.latency.is_some() => End::UpstreamAborted,
                Err(_) => {
                    ctx.failed(ProxyError::Timeout);
                    End::Complete
                }
            }
        }
    };
    let failed = request::failure(&ctx.answer, end).is_some();
    ctx.finish(end, 0);
    failed
}

/// A copy over the raw HTTP/1.1 client: the answer read to its end and discarded (the
/// connection pooled again after a clean end). The response head is noted in `ctx`.
async fn raw_copy(
    pool: &UpstreamPool,
    asked: Asked<'_>,
    timeouts: &SendTimeouts,
    ctx: &mut RequestCtx,
) -> End {
    let mut head = Vec::new();
    let (mut up, response) = match raw::exchange(pool, asked, timeouts, &mut head).await {
        Ok(answered) => answered,
        Err(e) => {
            ctx.failed(policy::answer_of(Failed::from(e)));
            return End::Complete;
        }
    };
    ctx.answered(response.status, None);
    let mut framing = response.framing;
    let mut reusable = true;
    loop {
        let Ok((n, done)) = framing.feed(&up.buf) else {
            return End::UpstreamAborted;
        };
        reusable &= n == up.buf.len();
        up.buf.clear();
        if done {
            break;
        }
        if up.buf.capacity() < BODY_READ {
            up.buf.reserve(BODY_READ);
        }
        match up.stream.read_buf(&mut up.buf).await {
            Ok(0) if matches!(framing, Framing::UntilClose) => return End::Complete,
            Ok(0) | Err(_) => return End::UpstreamAborted,
            Ok(_) => {}
        }
    }
    if reusable && response.upstream_keep_alive {
        pool.put_raw(up);
    }
    End::Complete
}

/// A copy through hyper's client (a kept body, an HTTP/2 upstream): the response read to its
/// end and discarded.
async fn hyper_copy(
    pool: &UpstreamPool,
    req: Request<RequestBody>,
    service: &crate::table::ServiceRoute,
    ctx: &mut RequestCtx,
) -> End {
    let failed = match pool.send(req, service.timeouts).await {
        Ok(response) => {
            ctx.answered(response.status().as_u16(), Some(response.headers()));
            return match response.into_body().collect().await {
                Ok(body) => {
                    if let Some(trailers) = body.trailers() {
                        ctx.trailers(trailers);
                    }
                    End::Complete
                }
                Err(_) => End::UpstreamAborted,
            };
        }
        Err(SendError::NotSent(_, why)) => Failed::NotSent(NotSent::of(&why)),
        Err(SendError::Timeout) => Failed::Timeout,
        Err(SendError::Reset(_)) => Failed::Reset,
    };
    ctx.failed(policy::answer_of(failed));
    End::Complete
}
