//! The transitions that hold or resume a rollout rather than move its traffic: pause,
//! resume, waiting for gates, counting failed checks (see `transitions.rs` for the rest).

use serde_json::Value;

use super::transitions::{start, Ctx};
use super::{Phase, RolloutRecord};
use crate::plan::{Direction, Effect, Plan};
use crate::refusal::Refusal;
use crate::store::{Fence, ServiceState, Source};

fn record_mut(next: &mut ServiceState) -> Result<&mut RolloutRecord, Refusal> {
    next.rollout
        .as_mut()
        .ok_or_else(|| Refusal::conflict("no rollout to act on"))
}

/// Holds the rollout at its step (an operator's pause, or a gate that said no); `why` is
/// the rollout's reason, `message` the event's.
pub fn pause(ctx: Ctx<'_>, why: &str, message: String, details: Value) -> Result<Plan, Refusal> {
    let mut next = ctx.state.clone();
    let record = record_mut(&mut next)?;
    record.step_elapsed_ms = record.step_elapsed(ctx.now);
    record.phase = Phase::Paused;
    record.reason = Some(why.to_string());
    Ok(Plan::bookkeeping(ctx.service, next)
        .then(Effect::ClockStop)
        .event("paused", message, details))
}

/// Continues a paused rollout where it was (a rolled-back one starts over).
pub fn resume(ctx: Ctx<'_>) -> Result<Plan, Refusal> {
    if ctx.state.rollout.as_ref().map(|r| r.phase) == Some(Phase::RolledBack) {
        return start(ctx, Source::Api, "resumed after a rollback through the API");
    }
    let mut next = ctx.state.clone();
    let record = record_mut(&mut next)?;
    record.phase = Phase::Progressing;
    record.reason = None;
    record.step_started_at = ctx.now.saturating_sub(record.step_elapsed_ms);
    let gate = record.awaiting_gate.then(|| gate_step(record));
    let mut plan = Plan {
        change: ctx.change(next, None, Direction::AwayFromStable, Fence::Any),
        effects: vec![Effect::ClockStart],
    }
    .event(
        "resumed",
        "rollout resumed through the API".into(),
        Value::Null,
    );
    if let Some(step) = gate {
        plan = plan.then(Effect::AskGates { step });
    }
    Ok(plan)
}

/// The step the gates are asked about: the first one before any was applied, else the next.
pub fn gate_step(record: &RolloutRecord) -> usize {
    if record.step == 0 && record.step_started_at == 0 {
        0
    } else {
        record.step + 1
    }
}

/// The step's time is up and gates must agree first: hold, and ask.
pub fn await_gates(ctx: Ctx<'_>, step: usize) -> Plan {
    let mut next = ctx.state.clone();
    if let Some(r) = next.rollout.as_mut() {
        r.awaiting_gate = true;
    }
    Plan::bookkeeping(ctx.service, next).then(Effect::AskGates { step })
}

/// Records the failed-check count (bookkeeping: no revision, no table compile).
pub fn count_failed_checks(ctx: Ctx<'_>, failed: u32) -> Plan {
    let mut next = ctx.state.clone();
    if let Some(r) = next.rollout.as_mut() {
        r.failed_checks = failed;
    }
    Plan::bookkeeping(ctx.service, next)
}
