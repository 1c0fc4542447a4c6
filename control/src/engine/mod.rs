//! The rollout engine (DESIGN §8): `(rollout record, telemetry windows, now) → decisions`.
//!
//! A pure function. It reads no clock, does no I/O and sends nothing: the run loop gives it a
//! running rollout's record, its ephemeral [`Clock`], this tick's [`Observations`] and `now`,
//! and gets back [`Decision`]s to carry out (through `rollout::transitions`). So every SPEC §6
//! transition is a unit test with virtual time (`tests.rs`), and in a fleet the leader runs
//! exactly this code on pooled windows.
//!
//! Order within a tick: the judges in turn (health, fast-fail, then the leader's judges — the
//! threshold judge, and with `judge: sequential` the sequential judge); the first rollback
//! wins and ends the tick. Without one, a step
//! whose time is up advances (after asking the gates, when the rollout has any).

pub mod judge;
pub mod metric;
pub mod sequential;
pub mod threshold;

#[cfg(test)]
mod sequential_tests;
#[cfg(test)]
mod tests;

use serde_json::Value;
use switchyard_config::{JudgeKind, Rollout, WebhookKind};

use crate::clock::{ms, Millis};
use crate::rollout::{RolloutRecord, StepSpec};
use crate::telemetry::window::Window;
pub use judge::{Judge, JudgeInput, Rollback, Verdict};
pub use metric::{Metric, RollbackReason};
pub use threshold::CheckResult;

/// What the engine knows about a rollout besides its record: the config.
pub struct Spec<'a> {
    pub rollout: &'a Rollout,
    pub steps: Vec<StepSpec>,
}

impl<'a> Spec<'a> {
    pub fn new(rollout: &'a Rollout) -> Spec<'a> {
        Spec {
            rollout,
            steps: crate::rollout::steps(rollout),
        }
    }

    fn gated(&self) -> bool {
        self.rollout
            .webhooks
            .iter()
            .any(|w| w.kind == WebhookKind::Gate)
    }
}

/// One version's windows at this tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionObs {
    /// The last second, sliding (fast-fail).
    pub last_second: Window,
    /// The whole second that just closed, given once per second (`None` on other ticks).
    pub closed_second: Option<Window>,
    /// Since the current analysis interval began.
    pub interval: Window,
    /// The previous minutes, up to the current second.
    pub recent: Window,
}

/// This tick's telemetry of a running rollout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    pub canary: VersionObs,
    pub stable: VersionObs,
    /// Length of the interval windows, seconds.
    pub interval_s: f64,
    /// The canary's backends and whether each passes its health checks; `None` when the
    /// service has no health checks.
    pub canary_health: Option<Vec<(String, bool)>>,
}

/// Per-rollout bookkeeping that need not survive a restart (the record holds what must).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// When the current analysis interval began.
    pub window_started: Millis,
    pub next_check: Millis,
    /// The first failed check (or fast signal) of this rollout: detection time starts here.
    pub first_failure: Option<Millis>,
    /// Since when a judge's evidence has leaned against the canary without a break (the
    /// sequential judge's evidence above 1): a judge that decides from evidence, not from
    /// checks, has no failed check, so its detection time starts here.
    pub suspected_since: Option<Millis>,
}

impl Clock {
    /// A fresh analysis window from `now`.
    pub fn start(spec: &Spec<'_>, now: Millis) -> Clock {
        Clock {
            window_started: now,
            next_check: now + ms(spec.rollout.analysis.interval).max(1),
            first_failure: None,
            suspected_since: None,
        }
    }
}

/// What the run loop should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// An analysis check ran (to show, count and tell).
    Checked(CheckResult),
    /// Keep the rollout's new failed-check count.
    FailedChecks(u32),
    /// Keep a judge's memory in the record: in memory at once, and committed to the store
    /// when `persist` (at the end of every analysis interval; any other commit of the record
    /// takes it along too).
    Remember {
        judge: &'static str,
        memory: Value,
        persist: bool,
    },
    /// Take the canary out.
    Rollback(Rollback),
    /// The step's time is up; ask the gates about step `step` (0-based).
    AwaitGates { step: usize },
    /// Apply step `step` (the last one promotes).
    Advance { step: usize },
}

/// The engine's answer for one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub decisions: Vec<Decision>,
    pub clock: Clock,
    /// The analysis interval ended: the loop starts new interval windows from now.
    pub new_window: bool,
}

/// The judges a rollout's config asks for, in the order they are consulted.
pub fn judges(rollout: &Rollout) -> Vec<&'static dyn Judge> {
    let mut judges: Vec<&'static dyn Judge> = vec![
        &judge::HealthJudge,
        &judge::FastFailJudge,
        &threshold::ThresholdJudge,
    ];
    if rollout.analysis.judge == JudgeKind::Sequential {
        judges.push(&sequential::SequentialJudge);
    }
    judges
}

/// One tick of one progressing rollout. `leader`: whether this replica runs the rollout
/// clock (steps and interval judges); every replica runs the fast judges.
pub fn evaluate(
    spec: &Spec<'_>,
    record: &RolloutRecord,
    clock: Clock,
    obs: &Observations,
    now: Millis,
    leader: bool,
) -> Outcome {
    let mut clock = clock;
    let check_due = leader && now >= clock.next_check;
    let mut decisions = Vec::new();
    for judge in judges(spec.rollout) {
        if !leader && !judge.any_replica() {
            continue;
        }
        let input = JudgeInput {
            spec,
            record,
            obs,
            now,
            check_due,
            memory: record.judges.get(judge.name()),
        };
        let verdict = judge.judge(&input);
        if let Some(memory) = verdict.memory {
            decisions.push(Decision::Remember {
                judge: judge.name(),
                memory,
                // A rollback commits the record anyway.
                persist: check_due && verdict.rollback.is_none(),
            });
        }
        if let Some(check) = verdict.checked {
            decisions.push(Decision::Checked(check));
        }
        match verdict.suspects {
            Some(true) => _ = clock.suspected_since.get_or_insert(now),
            Some(false) => clock.suspected_since = None,
            None => {}
        }
        if let Some(n) = verdict.failed_checks {
            clock.first_failure.get_or_insert(now);
            decisions.push(Decision::FailedChecks(n));
        }
        if let Some(rollback) = verdict.rollback {
            // The earliest sign: a failed check, the evidence's first lean, else this tick.
            let sign = clock.suspected_since.unwrap_or(now);
            clock.first_failure = Some(clock.first_failure.map_or(sign, |f| f.min(sign)));
            decisions.push(Decision::Rollback(rollback));
            return Outcome {
                decisions,
                clock,
                new_window: false,
            };
        }
    }
    let new_window = check_due;
    if new_window {
        clock.window_started = now;
        clock.next_check = now + ms(spec.rollout.analysis.interval).max(1);
    }
    if leader && !record.awaiting_gate {
        let step = spec
            .steps
            .get(record.step.min(spec.steps.len().saturating_sub(1)));
        let due = step
            .and_then(|s| s.duration)
            .is_some_and(|d| record.step_elapsed(now) >= ms(d));
        if due {
            let next = record.step + 1;
            decisions.push(if spec.gated() {
                Decision::AwaitGates { step: next }
            } else {
                Decision::Advance { step: next }
            });
        }
    }
    Outcome {
        decisions,
        clock,
        new_window,
    }
}
