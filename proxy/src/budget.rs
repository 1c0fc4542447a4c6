//! The safety net's retry budget (SPEC §13), after tower's `TpsBudget`: how many failed
//! canary requests may be replayed on the stable right now. Whether one *may* be replayed at
//! all (method, body) is the retry policy's (`retry.rs` `may_replay`); this module only
//! counts, lock-free, so the check costs a request one compare-and-swap.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// The safety net's budget, after tower's `TpsBudget`: over the last 10 s, replays may be
/// at most `percent` of the canary's requests, and 10 replays per second are always
/// allowed, so a canary that fails everything cannot double the stable's load.
///
/// Lock-free: one slot per second of the window for requests and one for replays, each a
/// single `AtomicU64` packing the second it counts (high 32 bits) with its count (low 32),
/// so moving a slot on to a new second and counting in it is one compare-and-swap — no
/// rotation lock (tower's has a `Mutex` for that), no reset race.
#[derive(Debug)]
pub struct RetryBudget {
    start: Instant,
    percent: u64,
    requests: [AtomicU64; WINDOW],
    replays: [AtomicU64; WINDOW],
}

const WINDOW: usize = switchyard_config::SafetyNet::WINDOW_SECONDS as usize;
const FLOOR: u64 = switchyard_config::SafetyNet::FLOOR_PER_SECOND as u64;

impl RetryBudget {
    pub(crate) fn new(percent: u32) -> RetryBudget {
        RetryBudget {
            start: Instant::now(),
            percent: u64::from(percent),
            requests: Default::default(),
            replays: Default::default(),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        // +1: second 0 is "never counted" in an empty slot.
        at.saturating_duration_since(self.start).as_secs() + 1
    }

    /// One request routed to the canary, at `at`.
    pub(crate) fn deposit(&self, at: Instant) {
        bump(&self.requests, self.second(at));
    }

    /// A replay at `at`, if the budget allows it (then it is counted).
    pub(crate) fn withdraw(&self, at: Instant) -> bool {
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
fn bump(slots: &[AtomicU64; WINDOW], now: u64) {
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
fn count_in(slots: &[AtomicU64; WINDOW], now: u64, seconds: u64) -> u64 {
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
    use std::time::Duration;

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
    }
}
