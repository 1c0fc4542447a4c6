//! When a request may be sent again, and where: the one retry policy of the data path.
//!
//! SPEC §4: a request that never reached a backend is retried once on another backend of the
//! same version. Everything else that went wrong with an attempt — a timeout, a reset, a
//! garbled head — has (maybe) reached the backend and is answered as it is; what went wrong on
//! the client's side is never retried and never the backend's failure. Within one backend, a
//! pooled keep-alive connection that turns out closed may be replaced by a fresh one
//! ([`may_reconnect`]). Both transports take these decisions here and nowhere else.

use crate::error::ProxyError;
use crate::table::VersionRoute;
use crate::upstream::raw::Attempt;
use crate::upstream::ConnectFailure;

/// Why one attempt on one backend got no response head.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The request never reached the backend: another backend may take it.
    NotSent(NotSent),
    /// The backend did not send a response head within the request timeout.
    Timeout,
    /// The connection broke before the response head, or the head was garbage.
    Reset,
    /// The client's side failed (its body too large, malformed or too slow): answered as is,
    /// never retried, never the backend's failure.
    Client(ProxyError),
}

/// Why a request never reached the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotSent {
    /// The connect was refused or timed out.
    Connect,
    /// No connection came free within the queue timeout, or too many requests were waiting.
    Busy,
}

/// One request's retry state.
#[derive(Debug, Default)]
pub(crate) struct Retries {
    retried: bool,
}

impl Retries {
    /// After an attempt on backend `failed_on` failed: the backend to try next, or the answer
    /// the client gets. Retries are not counted as requests: the client never sees them.
    pub(crate) fn next(
        &mut self,
        version: &VersionRoute,
        failed_on: usize,
        failed: Failed,
    ) -> Result<usize, ProxyError> {
        if let Failed::NotSent(_) = failed {
            let next = match self.retried {
                true => None,
                false => version.pick_backend(Some(failed_on)),
            };
            self.retried = true;
            if let Some(next) = next {
                return Ok(next);
            }
        }
        Err(answer_of(failed))
    }
}

/// The answer the client gets for an attempt that failed and goes no further.
pub(crate) fn answer_of(failed: Failed) -> ProxyError {
    match failed {
        Failed::NotSent(NotSent::Connect) => ProxyError::Connect,
        Failed::NotSent(NotSent::Busy) => ProxyError::Busy,
        Failed::Timeout => ProxyError::Timeout,
        Failed::Reset => ProxyError::Reset,
        Failed::Client(e) => e,
    }
}

/// A pooled connection closed before any byte of the response came: may the request go
/// again, once, on a fresh connection to the same backend? Always if it was not sent (the
/// write failed); if it was, only when repeating it is harmless (an idempotent method,
/// RFC 9110 §9.2.2).
pub(crate) fn may_reconnect(sent: bool, idempotent: bool) -> bool {
    !sent || idempotent
}

impl NotSent {
    /// Why a connection could not be had.
    pub(crate) fn of(failure: &ConnectFailure) -> NotSent {
        match failure {
            ConnectFailure::Busy => NotSent::Busy,
            ConnectFailure::Refused(_) | ConnectFailure::TimedOut => NotSent::Connect,
        }
    }
}

impl From<Attempt> for Failed {
    /// An attempt of the raw HTTP/1.1 client, as the policy sees it.
    fn from(attempt: Attempt) -> Failed {
        match attempt {
            Attempt::NotSent(why) => Failed::NotSent(NotSent::of(&why)),
            Attempt::Timeout => Failed::Timeout,
            Attempt::ClosedEarly | Attempt::Invalid => Failed::Reset,
        }
    }
}

/// Whether a method is idempotent (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}

/// The safety net (SPEC §13): may a request that failed on the canary be replayed on the
/// stable? Only one that is safe to send twice — GET, HEAD, OPTIONS, or an idempotent PUT
/// or DELETE — and whose whole body the transport still has (`kept`: no body, or one of at
/// most 64 KiB kept for this). A response head already passed on, or a body streamed
/// without a copy, is never replayed.
pub(crate) fn may_replay(method: &[u8], kept: bool) -> bool {
    kept && matches!(method, b"GET" | b"HEAD" | b"OPTIONS" | b"PUT" | b"DELETE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_methods_with_their_whole_body_are_replayed() {
        assert!(may_replay(b"GET", true));
        assert!(may_replay(b"PUT", true));
        assert!(!may_replay(b"POST", true));
        assert!(!may_replay(b"PATCH", true));
        assert!(!may_replay(b"GET", false));
    }
}
