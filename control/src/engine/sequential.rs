//! The sequential judge (SPEC §14) as one of the engine's [`Judge`]s.
//!
//! Once a second — at the tick where the telemetry closed a second — it folds that second of
//! the canary and the stable into the rollout's [`Evidence`] (`crate::sequential`): failures,
//! and slow requests against the stable's p99 bucket edge over the minutes *before* that
//! second (the recent window less the second itself). When either evidence reaches
//! `2/alpha`, it rolls back with reason `sequential`.
//!
//! **Where the evidence lives.** In the rollout record, as this judge's memory
//! (`RolloutRecord::judges["sequential"]`), so the engine stays pure and a restarted process
//! — or a fleet's next leader — resumes from the persisted evidence instead of from 1. Every
//! second the new evidence replaces the record's in memory (what the API shows); it is
//! committed to the store at the end of every analysis interval, and with every state change
//! (a step, a pause, the rollback itself), since each of those commits the record that holds
//! it. A state file written every second would cost one fsync per rollout per second; a
//! restart loses at most the evidence of one interval, which only delays a rollback.
//!
//! Evidence that cannot be trusted on the way back in (another grid of θ, a value that is not
//! finite) starts again at 1: that can only delay a rollback, never cause a false one.

use serde::Deserialize;
use serde_json::{json, Value};

use super::judge::{Judge, JudgeInput, Rollback, Verdict};
use super::RollbackReason;
use crate::rollout::RolloutRecord;
use crate::sequential::{Evidence, EvidenceKind, EvidenceReport};
use crate::store::Source;

/// The judge's name: its key in the record's memory.
pub const NAME: &str = "sequential";

/// The evidence a record keeps (1 for a new rollout).
pub fn evidence_of(record: &RolloutRecord) -> Evidence {
    recall(record.judges.get(NAME))
}

fn recall(memory: Option<&Value>) -> Evidence {
    memory
        .and_then(|m| Evidence::deserialize(m).ok())
        .unwrap_or_default()
}

/// SPEC §14's anytime-valid comparison with the stable, every second.
pub struct SequentialJudge;

impl Judge for SequentialJudge {
    fn name(&self) -> &'static str {
        NAME
    }

    fn judge(&self, input: &JudgeInput<'_>) -> Verdict {
        let alpha = input.spec.rollout.analysis.alpha;
        let obs = input.obs;
        let mut evidence = recall(input.memory);
        let (Some(canary), Some(stable)) = (&obs.canary.closed_second, &obs.stable.closed_second)
        else {
            // No second closed at this tick; at an interval's end the evidence is committed
            // as it stands.
            return Verdict {
                memory: input.check_due.then(|| remember(&evidence)),
                ..Verdict::default()
            };
        };
        let before = obs.stable.recent.since(stable);
        let edge = evidence.second(canary, stable, &before.latency);
        let memory = Some(remember(&evidence));
        let suspects = Some(evidence.leans_against_the_canary());
        let Some(kind) = evidence.reached(alpha) else {
            return Verdict {
                memory,
                suspects,
                ..Verdict::default()
            };
        };
        let report = evidence.report(alpha);
        let slow_edge_ms = edge.map(|e| e.micros() as f64 / 1000.0);
        let (what, value) = match kind {
            EvidenceKind::Failures => ("fails".to_string(), report.failures),
            EvidenceKind::Slow => (
                format!(
                    "is slow (over {} ms, the stable's p99)",
                    slow_edge_ms.map_or("?".into(), |ms| format!("{ms:.1}"))
                ),
                report.slow,
            ),
        };
        Verdict {
            memory,
            rollback: Some(Rollback {
                reason: RollbackReason::Sequential,
                source: Source::Analysis,
                message: format!(
                    "sequential: the canary {what} more often than the stable in the same \
                     seconds (evidence {} ≥ limit {}, alpha {alpha})",
                    number(value),
                    number(report.limit)
                ),
                evidence: details(kind, &report, alpha, slow_edge_ms),
            }),
            suspects,
            ..Verdict::default()
        }
    }
}

fn remember(evidence: &Evidence) -> Value {
    serde_json::to_value(evidence).unwrap_or_default()
}

/// The rollback's `details.evidence`: SPEC §15's evidence object, and what decided.
fn details(kind: EvidenceKind, report: &EvidenceReport, alpha: f64, edge: Option<f64>) -> Value {
    json!({
        "kind": kind.as_str(), "failures": report.failures, "slow": report.slow,
        "limit": report.limit, "alpha": alpha, "slow_edge_ms": edge,
    })
}

/// `312.4`, or `3.1e12` when it has grown past what a person reads digit by digit.
fn number(x: f64) -> String {
    if x < 1e6 {
        format!("{x:.1}")
    } else {
        format!("{x:.1e}")
    }
}
