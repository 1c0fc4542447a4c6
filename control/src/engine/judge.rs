//! Judges: the values the engine consults to decide whether a canary must go.
//!
//! Each judge looks at one tick's [`Observations`] and says what it found: a check it ran (to
//! show and count), a new failed-check count, a rollback, or memory to keep in the rollout
//! record. Health and fast-fail run on every replica; the interval judges run on the leader.
//! The threshold judge (SPEC §6) lives in `threshold.rs`; the sequential judge (SPEC §14) in
//! `sequential.rs` is fed by the same observations — per-second canary and stable windows
//! (`VersionObs::closed_second`) and the stable's latency over the previous minutes
//! (`VersionObs::recent`) — and keeps its evidence in [`JudgeInput::memory`].

use serde_json::{json, Value};
use switchyard_config::FastFail;

use super::threshold::CheckResult;
use super::{Observations, RollbackReason, Spec};
use crate::clock::Millis;
use crate::rollout::RolloutRecord;
use crate::store::Source;
use crate::telemetry::window::Window;

/// Why a judge wants the canary out.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollback {
    pub reason: RollbackReason,
    /// `analysis` or `health` (the revision's source).
    pub source: Source,
    /// Human-readable: history reason, event message, rollout reason.
    pub message: String,
    /// The numbers that decided it (event webhook `details.evidence`).
    pub evidence: Value,
}

/// What a judge found in one tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// An analysis check ran: shown in the API, counted, told as an event.
    pub checked: Option<CheckResult>,
    /// The rollout's failed-check count after this check.
    pub failed_checks: Option<u32>,
    pub rollback: Option<Rollback>,
    /// The judge's memory to keep in the record (`RolloutRecord::judges[name]`).
    pub memory: Option<Value>,
    /// Whether the judge's evidence leans against the canary after this tick (`None`: no
    /// new evidence). A rollback's detection time runs from when it began to lean.
    pub suspects: Option<bool>,
}

impl Verdict {
    /// A verdict that only asks for a rollback.
    pub fn rollback(rollback: Rollback) -> Verdict {
        Verdict {
            rollback: Some(rollback),
            ..Verdict::default()
        }
    }
}

/// What every judge reads.
pub struct JudgeInput<'a> {
    pub spec: &'a Spec<'a>,
    pub record: &'a RolloutRecord,
    pub obs: &'a Observations,
    pub now: Millis,
    /// An analysis interval ended at this tick.
    pub check_due: bool,
    /// This judge's memory from the record, if it kept any.
    pub memory: Option<&'a Value>,
}

pub trait Judge: Send + Sync {
    /// Its key in the record's `judges` memory and in logs.
    fn name(&self) -> &'static str;
    /// Whether every replica runs it (a fast local signal), not only the leader.
    fn any_replica(&self) -> bool {
        false
    }
    fn judge(&self, input: &JudgeInput<'_>) -> Verdict;
}

/// Every canary backend failing its active health checks (a release that fails at start).
pub struct HealthJudge;

impl Judge for HealthJudge {
    fn name(&self) -> &'static str {
        "health"
    }

    fn any_replica(&self) -> bool {
        true
    }

    fn judge(&self, input: &JudgeInput<'_>) -> Verdict {
        let Some(health) = &input.obs.canary_health else {
            return Verdict::default();
        };
        if health.is_empty() || health.iter().any(|(_, up)| *up) {
            return Verdict::default();
        }
        Verdict::rollback(Rollback {
            reason: RollbackReason::Health,
            source: Source::Health,
            message: format!(
                "every backend of {} failed its health checks",
                input.record.canary
            ),
            evidence: json!({
                "backends": health.iter().map(|(a, _)| a).collect::<Vec<_>>()
            }),
        })
    }
}

/// The fast-fail line (SPEC §6): at least `min_requests` requests in `last_second` with an
/// error rate at or above the line. Returns the error rate that tripped it.
pub fn fast_fail(rule: &FastFail, last_second: &Window) -> Option<f64> {
    let rate = last_second.error_rate()?;
    (last_second.requests >= rule.min_requests && rate >= rule.error_rate).then_some(rate)
}

/// Fast-fail: within the last second, at least `min_requests` canary requests at or above the
/// error-rate line roll back at once (SPEC §6).
pub struct FastFailJudge;

impl Judge for FastFailJudge {
    fn name(&self) -> &'static str {
        "fast-fail"
    }

    fn any_replica(&self) -> bool {
        true
    }

    fn judge(&self, input: &JudgeInput<'_>) -> Verdict {
        let Some(rule) = input.spec.rollout.analysis.fast_fail else {
            return Verdict::default();
        };
        let last = &input.obs.canary.last_second;
        let Some(rate) = fast_fail(&rule, last) else {
            return Verdict::default();
        };
        Verdict::rollback(Rollback {
            reason: RollbackReason::FastFail,
            source: Source::Analysis,
            message: format!(
                "fast-fail: error rate {rate:.1}% over {} requests within the last second \
                     (line: {}% over {})",
                last.requests, rule.error_rate, rule.min_requests
            ),
            evidence: json!({
                "metric": "error-rate", "value": rate, "threshold": rule.error_rate,
                "requests": last.requests, "window_s": 1,
            }),
        })
    }
}
