//! One request's context (Pingora's `CTX`), and the one place its outcome is judged,
//! recorded and logged.
//!
//! Both transports create a [`RequestCtx`] when a request head has arrived, the phases
//! ([`crate::phases`]) fill it in (route, backend, the answer), and the transport calls
//! [`RequestCtx::finish`] when the response has ended — after the last body byte, when the
//! upstream broke off mid-body, or when the client went away (`Drop` does it then). Finishing
//! applies the one failure rule ([`failure`], SPEC §5, DESIGN §9), records the counters and
//! the latency once, and sends the request's one access log line. Nothing else on the data
//! path touches the recordings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::access_log::{Finished, Pending};
use crate::error::ProxyError;
use crate::grpc;
use crate::stats::FailureReason;
use crate::table::{RoutingTable, ServiceRoute, VersionRoute};

/// What the client was answered.
#[derive(Debug, Default)]
pub(crate) enum Answer {
    /// Nothing yet: the client left before any answer.
    #[default]
    None,
    /// The proxy answered itself.
    Proxy(ProxyError),
    /// The upstream's response head was passed on.
    Upstream {
        status: u16,
        /// For a gRPC response: its `grpc-status`, once seen (headers or trailers).
        grpc: Option<Grpc>,
    },
}

/// A gRPC response's status, as far as it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grpc {
    /// Not seen yet (it comes in the trailers).
    Pending,
    Status(u32),
}

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Sent whole (or, for a proxy-made answer, written).
    Complete,
    /// The upstream broke off in the middle of the body.
    UpstreamAborted,
    /// The client went away, or its own request body failed: nothing the backend did.
    ClientGone,
}

/// The one rule for what counts as the backend's failure (SPEC §5, DESIGN §9): a 5xx, a
/// proxy-made 502/503/504 (connect, busy, no healthy backend, timeout to the response head,
/// reset before it), an abort mid-body (`reset`), a server-side gRPC status (`grpc`). Never
/// the client's slowness or abort (408, 413, 400, 499 are not failures).
pub(crate) fn failure(answer: &Answer, end: End) -> Option<FailureReason> {
    match answer {
        Answer::None => None,
        Answer::Proxy(e) => match e {
            ProxyError::NoHealthyBackend(_) | ProxyError::Connect | ProxyError::Busy => {
                Some(FailureReason::Connect)
            }
            ProxyError::Timeout => Some(FailureReason::Timeout),
            ProxyError::Reset => Some(FailureReason::Reset),
            ProxyError::NoRoute
            | ProxyError::BadRequest(_)
            | ProxyError::PayloadTooLarge
            | ProxyError::BodyTimeout
            | ProxyError::MethodNotAllowed => None,
        },
        Answer::Upstream { .. } if end == End::UpstreamAborted => Some(FailureReason::Reset),
        Answer::Upstream { status, .. } if *status >= 500 => Some(FailureReason::Status),
        Answer::Upstream {
            grpc: Some(Grpc::Status(code)),
            ..
        } if grpc::is_server_fault(*code) => Some(FailureReason::Grpc),
        Answer::Upstream { .. } => None,
    }
}

/// Whether `answer` is the backend's failure (the rule above, for an answer that ended).
pub(crate) fn fails(answer: &Answer) -> bool {
    failure(answer, End::Complete).is_some()
}

/// The status a request is logged and counted with.
fn status(answer: &Answer) -> u16 {
    match answer {
        // nginx's "client closed request".
        Answer::None => 499,
        Answer::Proxy(e) => e.status().as_u16(),
        Answer::Upstream { status, .. } => *status,
    }
}

/// What the proxy knows about one request while it is being handled.
#[derive(Debug)]
pub struct RequestCtx {
    pub arrived: Instant,
    pub client: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
    /// The routing table current when the request arrived; the whole request uses it.
    pub table: Arc<RoutingTable>,
    /// `(service, version)` once routed.
    pub(crate) route: Option<(usize, usize)>,
    pub backend: Option<usize>,
    /// When the backend had the whole request: arrival, or the end of the request body. The
    /// latency the analysis judges runs from here to the response head, so a slow upload is
    /// never the backend's slowness.
    pub(crate) sent: Instant,
    /// Time to the response head, once it came.
    pub(crate) latency: Option<Duration>,
    pub(crate) answer: Answer,
    pub(crate) log: Option<Pending>,
    /// The user this request counts for in a running rollout's impact (SPEC §13).
    pub(crate) user: Option<u64>,
    /// Sent to a running rollout's canary (still true when the safety net replayed it).
    pub(crate) to_canary: bool,
    finished: bool,
}

impl RequestCtx {
    pub(crate) fn new(
        table: Arc<RoutingTable>,
        client: SocketAddr,
        scheme: &'static str,
        arrived: Instant,
    ) -> RequestCtx {
        RequestCtx {
            arrived,
            client,
            scheme,
            table,
            route: None,
            backend: None,
            sent: arrived,
            latency: None,
            answer: Answer::None,
            log: None,
            user: None,
            to_canary: false,
            finished: false,
        }
    }

    /// The routed service. Only called once routed.
    pub(crate) fn service(&self) -> &ServiceRoute {
        &self.table.services[self.route.expect("routed").0]
    }

    /// The routed version. Only called once routed.
    pub(crate) fn version(&self) -> &VersionRoute {
        let (s, v) = self.route.expect("routed");
        &self.table.services[s].versions[v]
    }

    /// The upstream's response head arrived: its status, and whether it is a gRPC answer
    /// (then its `grpc-status` may already be here, trailers-only, or come in the trailers).
    pub(crate) fn answered(&mut self, status: u16, headers: Option<&HeaderMap>) {
        self.latency = Some(self.sent.elapsed());
        let grpc = headers
            .filter(|h| grpc::is_grpc(h))
            .map(|h| grpc::status(h).map_or(Grpc::Pending, Grpc::Status));
        self.answer = Answer::Upstream { status, grpc };
    }

    /// The response's trailers: a gRPC call's status usually comes here.
    pub(crate) fn trailers(&mut self, trailers: &HeaderMap) {
        if let Answer::Upstream {
            grpc: Some(grpc @ Grpc::Pending),
            ..
        } = &mut self.answer
        {
            if let Some(code) = grpc::status(trailers) {
                *grpc = Grpc::Status(code);
            }
        }
    }

    /// The proxy answers `e` itself.
    pub(crate) fn failed(&mut self, e: ProxyError) {
        if self.route.is_some() && e.is_upstream() {
            self.latency = Some(self.sent.elapsed());
        }
        self.answer = Answer::Proxy(e);
    }

    /// The safety net replays this request on version `stable` of the same service: the
    /// canary's failed attempt (`answer`) is counted now as the canary's request — analysis,
    /// fast-fail and metrics judge it like any other — and the context starts over on the
    /// stable, whose answer the client gets (and which is counted when it finishes).
    pub(crate) fn replay_on(&mut self, stable: usize, answer: Answer) {
        let (s, canary) = self.route.expect("routed");
        self.latency = Some(self.sent.elapsed());
        let failure = failure(&answer, End::Complete);
        record(
            &self.table.services[s].versions[canary],
            self,
            status(&answer),
            failure,
        );
        self.route = Some((s, stable));
        self.backend = None;
        self.latency = None;
        self.answer = Answer::None;
        self.sent = Instant::now();
    }

    /// The request moves to another transport, which starts it again: nothing is recorded.
    pub(crate) fn hand_off(mut self) {
        self.finished = true;
    }

    /// The response ended: judge it, count it, log it — once.
    pub(crate) fn finish(&mut self, end: End, bytes: u64) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let failure = failure(&self.answer, end);
        let status = status(&self.answer);
        if let Some((s, v)) = self.route {
            record(&self.table.services[s].versions[v], self, status, failure);
            let rollout = &self.table.services[s].rollout;
            if let (Some(user), Some(impact)) =
                (self.user, rollout.as_ref().and_then(|r| r.impact.as_ref()))
            {
                impact.record(user, self.to_canary, failure.is_some());
            }
        }
        if let Some(log) = self.log.take() {
            let routed = self.route.map(|(s, v)| &self.table.services[s].versions[v]);
            log.send(Finished {
                status,
                bytes,
                service: self.route.map(|_| Arc::clone(&self.service().name)),
                version: routed.map(|v| Arc::clone(&v.name)),
                backend: routed.and_then(|v| Some(v.backends[self.backend?].address)),
            });
        }
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        // The client went away before the transport could finish (or a transport forgot).
        self.finish(End::ClientGone, 0);
    }
}

/// Counts the request once, for metrics and analysis alike; its latency only when there is
/// one to judge (a response head, or a proxy-made failure of the backend).
fn record(version: &VersionRoute, ctx: &RequestCtx, status: u16, failure: Option<FailureReason>) {
    if cfg!(feature = "bench-no-record") {
        // Benchmarks only: measure the proxy without its recordings.
        return;
    }
    if let Some(latency) = ctx.latency {
        version.stats.record_latency(latency);
    }
    let stats = match ctx.backend {
        Some(b) => &version.backend_stats[b],
        None => &version.stats.unassigned,
    };
    stats.record(status, failure);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(status: u16, grpc: Option<Grpc>) -> Answer {
        Answer::Upstream { status, grpc }
    }

    #[test]
    fn only_what_the_backend_did_counts_against_it() {
        use FailureReason::{Connect, Reset, Status, Timeout};
        let cases = [
            (upstream(200, None), End::Complete, None),
            (upstream(404, None), End::Complete, None),
            (upstream(503, None), End::Complete, Some(Status)),
            (upstream(200, None), End::UpstreamAborted, Some(Reset)),
            (upstream(200, None), End::ClientGone, None),
            (
                upstream(200, Some(Grpc::Status(14))),
                End::Complete,
                Some(FailureReason::Grpc),
            ),
            (upstream(200, Some(Grpc::Status(5))), End::Complete, None),
            (upstream(200, Some(Grpc::Status(0))), End::Complete, None),
            (upstream(200, Some(Grpc::Pending)), End::ClientGone, None),
            (
                Answer::Proxy(ProxyError::Timeout),
                End::Complete,
                Some(Timeout),
            ),
            (
                Answer::Proxy(ProxyError::Connect),
                End::Complete,
                Some(Connect),
            ),
            (
                Answer::Proxy(ProxyError::Busy),
                End::Complete,
                Some(Connect),
            ),
            (Answer::Proxy(ProxyError::BodyTimeout), End::Complete, None),
            (
                Answer::Proxy(ProxyError::PayloadTooLarge),
                End::Complete,
                None,
            ),
            (Answer::None, End::ClientGone, None),
        ];
        for (answer, end, want) in cases {
            assert_eq!(failure(&answer, end), want, "{answer:?} {end:?}");
        }
    }
}
