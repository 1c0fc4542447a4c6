//! What discovery knows about one configured name, and when it asks again: a state machine
//! with no I/O and no clock of its own (time is passed in), so every rule of SPEC §12 is a
//! unit test with virtual time.
//!
//! The rules, in the order they matter to an operator:
//! - A name that has never resolved has no addresses (its version answers 503).
//! - A good answer replaces the set and is asked again when its TTL, clamped to
//!   `min_ttl ..= max_ttl`, runs out — a little before, at a random point in the last fifth,
//!   so names that resolved together do not stay in lock-step.
//! - A failed answer (SERVFAIL, REFUSED, NXDOMAIN, timeout) keeps the last good set, however
//!   many come; a DNS outage must not take traffic down with it.
//! - An empty answer keeps the last good set too, until [`EMPTY_ANSWERS_TO_REMOVE`] come in a
//!   row; only then does the name count as having no addresses — and even then a version
//!   that would be left with nothing keeps what it had (see [`super::version`]).
//! - After a failed or empty answer the name is asked again sooner than its TTL: `min_ttl`,
//!   doubling with each further one up to `max_ttl`, so a server that is down is not
//!   hammered and one that comes back is noticed within `max_ttl`.

use std::net::SocketAddr;
use std::time::Duration;

/// Empty answers in a row after which a name's addresses may go. Three: one empty answer is
/// routine during a deploy (a registry between deregistering the old and registering the new
/// instances, a recursive resolver's negative cache), and two can still be the same blip seen
/// twice within a second; three spread over at least `3 × min_ttl` (1 s, 2 s apart with the
/// backoff) are the name really being empty, while a scaled-down name still drains within a
/// few seconds at the default `min_ttl` of 1 s.
pub const EMPTY_ANSWERS_TO_REMOVE: u32 = 3;

/// The clamps of the `resolver:` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttls {
    pub min: Duration,
    pub max: Duration,
}

impl From<&switchyard_config::Resolver> for Ttls {
    fn from(r: &switchyard_config::Resolver) -> Ttls {
        Ttls {
            min: r.min_ttl,
            max: r.max_ttl,
        }
    }
}

impl Ttls {
    /// When to ask again, `delay` after an answer: clamped, then placed by `jitter` (0..1) in
    /// the last fifth before it — or, when the clamp is `min`, in the fifth after `min`, so
    /// short-TTL names spread out too. Always within `min ..= max`.
    pub fn next(&self, delay: Duration, jitter: f64) -> Duration {
        let d = delay.clamp(self.min, self.max);
        let (lo, hi) = if d > self.min {
            ((d - d / 5).max(self.min), d)
        } else {
            (self.min, (self.min + self.min / 5).min(self.max))
        };
        lo + (hi - lo).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// One resolution of a configured name, reduced to what the state machine needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Addresses, each with its relative weight (never an empty list), and the answer's TTL.
    Resolved {
        endpoints: Vec<(SocketAddr, u32)>,
        ttl: Duration,
    },
    /// The answer had no records.
    Empty,
    /// No usable answer; the text is for the log.
    Error(String),
}

#[derive(Debug, Clone)]
pub struct NameState {
    /// The last good answer's addresses, sorted; `None` = never resolved.
    last_good: Option<Vec<(SocketAddr, u32)>>,
    /// Empty answers since the last good one (errors neither count nor reset it).
    empty_in_a_row: u32,
    /// Failed or empty answers since the last good one, for the backoff.
    bad_in_a_row: u32,
    due: Duration,
}

impl NameState {
    /// A name first seen at `now`: resolve it at once.
    pub fn new(now: Duration) -> NameState {
        NameState {
            last_good: None,
            empty_in_a_row: 0,
            bad_in_a_row: 0,
            due: now,
        }
    }

    /// When this name should be resolved next.
    pub fn due(&self) -> Duration {
        self.due
    }

    /// Resolve again at once (e.g. the clamps changed on a reload).
    pub fn reschedule(&mut self, due: Duration) {
        self.due = due;
    }

    /// Takes the answer to a lookup that finished at `now`. Returns whether the addresses this
    /// name contributes ([`NameState::addresses`], [`NameState::gone`]) changed.
    pub fn apply(&mut self, now: Duration, outcome: &Outcome, ttls: Ttls, jitter: f64) -> bool {
        let before = (self.addresses().map(<[_]>::to_vec), self.gone());
        match outcome {
            Outcome::Resolved { endpoints, ttl } => {
                let mut endpoints = endpoints.clone();
                endpoints.sort_unstable();
                self.last_good = Some(endpoints);
                self.empty_in_a_row = 0;
                self.bad_in_a_row = 0;
                self.due = now + ttls.next(*ttl, jitter);
            }
            Outcome::Empty | Outcome::Error(_) => {
                if matches!(outcome, Outcome::Empty) {
                    self.empty_in_a_row = self.empty_in_a_row.saturating_add(1);
                }
                self.bad_in_a_row = self.bad_in_a_row.saturating_add(1);
                // min_ttl, 2 × min_ttl, 4 × ... up to max_ttl.
                let doublings = (self.bad_in_a_row - 1).min(20);
                let backoff = ttls.min.saturating_mul(1 << doublings);
                self.due = now + ttls.next(backoff, jitter);
            }
        }
        before != (self.addresses().map(<[_]>::to_vec), self.gone())
    }

    /// The last good set; `None` if the name never resolved.
    pub fn addresses(&self) -> Option<&[(SocketAddr, u32)]> {
        self.last_good.as_deref()
    }

    /// Whether enough empty answers came in a row for this name's addresses to go (a version
    /// that would be left with nothing keeps them, see [`super::version`]).
    pub fn gone(&self) -> bool {
        self.last_good.is_some() && self.empty_in_a_row >= EMPTY_ANSWERS_TO_REMOVE
    }

    /// Whether the name has ever resolved.
    pub fn resolved(&self) -> bool {
        self.last_good.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTLS: Ttls = Ttls {
        min: Duration::from_secs(1),
        max: Duration::from_secs(30),
    };

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn resolved(addrs: &[&str], ttl: u64) -> Outcome {
        Outcome::Resolved {
            endpoints: addrs.iter().map(|a| (addr(a), 100)).collect(),
            ttl: Duration::from_secs(ttl),
        }
    }

    fn set(state: &NameState) -> Vec<SocketAddr> {
        state
            .addresses()
            .unwrap_or_default()
            .iter()
            .map(|(a, _)| *a)
            .collect()
    }

    #[test]
    fn never_resolved_has_no_addresses_and_is_asked_at_once() {
        let s = NameState::new(secs(5.0));
        assert_eq!(s.addresses(), None);
        assert!(!s.resolved() && !s.gone());
        assert_eq!(s.due(), secs(5.0));
    }

    #[test]
    fn a_failing_name_that_never_resolved_stays_empty() {
        let mut s = NameState::new(Duration::ZERO);
        for i in 0..10 {
            assert!(!s.apply(
                secs(i as f64),
                &Outcome::Error("SERVFAIL".into()),
                TTLS,
                0.0
            ));
            assert!(!s.apply(secs(i as f64), &Outcome::Empty, TTLS, 0.0));
        }
        assert_eq!(s.addresses(), None);
        assert!(!s.gone(), "nothing to remove");
    }

    #[test]
    fn a_good_answer_is_asked_again_when_its_clamped_ttl_runs_out() {
        let mut s = NameState::new(Duration::ZERO);
        assert!(s.apply(secs(0.0), &resolved(&["10.0.0.1:80"], 10), TTLS, 1.0));
        assert_eq!(s.due(), secs(10.0), "jitter 1 = at the TTL");
        assert!(!s.apply(secs(10.0), &resolved(&["10.0.0.1:80"], 10), TTLS, 0.0));
        assert_eq!(s.due(), secs(18.0), "jitter 0 = a fifth early");
        // Above max_ttl: clamped to 30 s; TTL 0: no sooner than min_ttl.
        s.apply(secs(0.0), &resolved(&["10.0.0.1:80"], 3600), TTLS, 1.0);
        assert_eq!(s.due(), secs(30.0));
        s.apply(secs(0.0), &resolved(&["10.0.0.1:80"], 0), TTLS, 0.0);
        assert_eq!(s.due(), secs(1.0));
        s.apply(secs(0.0), &resolved(&["10.0.0.1:80"], 0), TTLS, 1.0);
        assert_eq!(
            s.due(),
            secs(1.2),
            "short TTLs spread over the fifth after min_ttl"
        );
    }

    #[test]
    fn jitter_stays_inside_the_clamps() {
        for ttl in [0, 1, 2, 5, 29, 30, 31, 86400] {
            for j in [0.0, 0.3, 0.99, 1.0] {
                let next = TTLS.next(Duration::from_secs(ttl), j);
                assert!(next >= TTLS.min && next <= TTLS.max, "{ttl} {j}: {next:?}");
            }
        }
        let fixed = Ttls {
            min: secs(5.0),
            max: secs(5.0),
        };
        assert_eq!(fixed.next(secs(60.0), 0.7), secs(5.0));
    }

    #[test]
    fn a_changed_answer_replaces_the_set() {
        let mut s = NameState::new(Duration::ZERO);
        s.apply(
            secs(0.0),
            &resolved(&["10.0.0.2:80", "10.0.0.1:80"], 5),
            TTLS,
            0.5,
        );
        assert_eq!(set(&s), [addr("10.0.0.1:80"), addr("10.0.0.2:80")]);
        assert!(s.apply(secs(5.0), &resolved(&["10.0.0.3:80"], 5), TTLS, 0.5));
        assert_eq!(set(&s), [addr("10.0.0.3:80")]);
        // The same set in another order is no change.
        s.apply(
            secs(9.0),
            &resolved(&["10.0.0.3:80", "10.0.0.4:80"], 5),
            TTLS,
            0.5,
        );
        assert!(!s.apply(
            secs(13.0),
            &resolved(&["10.0.0.4:80", "10.0.0.3:80"], 5),
            TTLS,
            0.5
        ));
    }

    #[test]
    fn errors_keep_the_last_good_set_forever_and_back_off() {
        let mut s = NameState::new(Duration::ZERO);
        s.apply(secs(0.0), &resolved(&["10.0.0.1:80"], 5), TTLS, 1.0);
        let mut now = s.due();
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert!(!s.apply(now, &Outcome::Error("timed out".into()), TTLS, 1.0));
            waits.push((s.due() - now).as_secs());
            now = s.due();
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(set(&s), [addr("10.0.0.1:80")]);
        assert!(!s.gone());
        // A good answer ends the backoff.
        s.apply(now, &resolved(&["10.0.0.1:80"], 5), TTLS, 1.0);
        assert_eq!(s.due() - now, secs(5.0));
    }

    #[test]
    fn only_three_empty_answers_in_a_row_let_the_addresses_go() {
        let mut s = NameState::new(Duration::ZERO);
        s.apply(secs(0.0), &resolved(&["10.0.0.1:80"], 5), TTLS, 1.0);
        assert!(!s.apply(secs(5.0), &Outcome::Empty, TTLS, 1.0));
        assert!(!s.apply(secs(6.0), &Outcome::Empty, TTLS, 1.0));
        assert!(!s.gone(), "two empty answers are not enough");
        assert_eq!(
            s.due(),
            secs(8.0),
            "asked again 1 s, then 2 s after an empty answer"
        );
        assert!(s.apply(secs(8.0), &Outcome::Empty, TTLS, 1.0));
        assert!(s.gone());
        // The last good set is remembered for the version's never-empty rule.
        assert_eq!(set(&s), [addr("10.0.0.1:80")]);
        // A good answer brings the name back.
        assert!(s.apply(secs(12.0), &resolved(&["10.0.0.9:80"], 5), TTLS, 1.0));
        assert!(!s.gone());
        assert_eq!(set(&s), [addr("10.0.0.9:80")]);
    }

    #[test]
    fn a_good_answer_between_empty_ones_starts_the_count_again_and_errors_do_not() {
        let mut s = NameState::new(Duration::ZERO);
        s.apply(secs(0.0), &resolved(&["10.0.0.1:80"], 5), TTLS, 1.0);
        s.apply(secs(1.0), &Outcome::Empty, TTLS, 1.0);
        s.apply(secs(2.0), &Outcome::Empty, TTLS, 1.0);
        s.apply(secs(3.0), &resolved(&["10.0.0.1:80"], 5), TTLS, 1.0);
        s.apply(secs(4.0), &Outcome::Empty, TTLS, 1.0);
        s.apply(secs(5.0), &Outcome::Empty, TTLS, 1.0);
        assert!(!s.gone());
        s.apply(secs(6.0), &Outcome::Error("SERVFAIL".into()), TTLS, 1.0);
        assert!(!s.gone(), "an error is not an empty answer");
        s.apply(secs(7.0), &Outcome::Empty, TTLS, 1.0);
        assert!(s.gone(), "the third empty answer since the last good one");
    }
}
