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
        match failed {
            Failed::NotSent(why) => {
                let next = match self.retried {
                    true => None,
                    false => version.pick_backend(Some(failed_on)),
                };
                self.retried = true;
                next.ok_or(match why {
                    NotSent::Connect => ProxyError::Connect,
                    NotSent::Busy => ProxyError::Busy,
                })
            }
            Failed::Timeout => Err(ProxyError::Timeout),
            Failed::Reset => Err(ProxyError::Reset),
            Failed::Client(e) => Err(e),
        }
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

/// The safety net's budget, after tower's `TpsBudget`: over the last 10 s, replays may be
/// at most `percent` of the canary's requests, and 10 replays per second are always
/// allowed, so a canary that fails everything cannot double the stable's load.
///
/// Lock-free: one slot per second of the window for requests and one for replays, each a
/// single `AtomicU64` packing the second it counts (high 32 bits) with its count (low 32),
/// so moving a slot on to a new second and counting in it is one compare-and-swap — no
/// rotation lock (tower's has a `Mutex` for that), no reset race.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    start: std::time::Instant,
    percent: u64,
    requests: [std::sync::atomic::AtomicU64; WINDOW],
    replays: [std::sync::atomic::AtomicU64; WINDOW],
}

const WINDOW: usize = switchyard_config::SafetyNet::WINDOW_SECONDS as usize;
const FLOOR: u64 = switchyard_config::SafetyNet::FLOOR_PER_SECOND as u64;

impl RetryBudget {
    pub(crate) fn new(percent: u32) -> RetryBudget {
        RetryBudget {
            start: std::time::Instant::now(),
            percent: u64::from(percent),
            requests: Default::default(),
            replays: Default::default(),
        }
    }

    fn second(&self, at: std::time::Instant) -> u64 {
        // +1: second 0 is "never counted" in an empty slot.
        at.saturating_duration_since(self.start).as_secs() + 1
    }

    /// One request routed to the canary, at `at`.
    pub(crate) fn deposit(&self, at: std::time::Instant) {
        bump(&self.requests, self.second(at));
    }

    /// A replay at `at`, if the budget allows it (then it is counted).
    pub(crate) fn withdraw(&self, at: std::time::Instant) -> bool {
        let now = self.second(at);
        let this_second = count_in(&self.replays, now, 1);
        let allowed = this_second < FLOOR
            || count_in(&self.replays, now, WINDOW as u64) * 100
                < count_in(&self.requests, now, WINDOW as u64) * self.percent;
        if allowed {
            bump(&self.replays, now);
        }
        allowed
    }
}

/// Counts one at second `now` in its slot (a slot left from an older second starts over).
fn bump(slots: &[std::sync::atomic::AtomicU64; WINDOW], now: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let slot = &slots[(now % WINDOW as u64) as usize];
    let mut current = slot.load(Relaxed);
    loop {
        let (second, count) = (current >> 32, current & u64::from(u32::MAX));
        let next = match second.cmp(&now) {
            std::cmp::Ordering::Equal => (now << 32) | (count + 1).min(u64::from(u32::MAX)),
            std::cmp::Ordering::Less => (now << 32) | 1,
            // A racing request already moved the slot on: count it there.
            std::cmp::Ordering::Greater => return,
        };
        match slot.compare_exchange_weak(current, next, Relaxed, Relaxed) {
            Ok(_) => return,
            Err(seen) => current = seen,
        }
    }
}

/// The counts of the `seconds` seconds up to and including `now`.
fn count_in(slots: &[std::sync::atomic::AtomicU64; WINDOW], now: u64, seconds: u64) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    slots
        .iter()
        .map(|s| s.load(Relaxed))
        .filter(|v| now.saturating_sub(v >> 32) < seconds)
        .map(|v| v & u64::from(u32::MAX))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_budget_allows_its_share_of_requests_and_a_floor_per_second() {
        let budget = RetryBudget::new(20);
        let t0 = budget.start;
        // 1,000 canary requests a second, all failing, for 20 s.
        let mut replays = 0;
        for s in 0..20u64 {
            let at = t0 + Duration::from_millis(s * 1000 + 500);
            for _ in 0..1000 {
                budget.deposit(at);
                replays += u64::from(budget.withdraw(at));
            }
        }
        // 20% of 20,000 (the first second's floor aside).
        assert!((3_900..=4_100).contains(&replays), "{replays} replays");
        // Few requests: the floor of 10 a second still holds.
        let quiet = RetryBudget::new(20);
        let at = quiet.start + Duration::from_millis(100);
        let allowed = (0..50).filter(|_| quiet.withdraw(at)).count();
        assert_eq!(allowed, 10);
        let later = at + Duration::from_secs(1);
        assert!(quiet.withdraw(later));
        let _ = Instant::now();
    }

    #[test]
    fn only_safe_methods_with_their_whole_body_are_replayed() {
        assert!(may_replay(b"GET", true));
        assert!(may_replay(b"PUT", true));
        assert!(!may_replay(b"POST", true));
        assert!(!may_replay(b"PATCH", true));
        assert!(!may_replay(b"GET", false));
    }
}
