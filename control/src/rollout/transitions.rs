//! Every rollout state change of SPEC §6, as a pure function from the current state to a
//! [`Plan`]: start, step, promote, roll back, abort, pause, resume, wait for gates.
//!
//! The commands (an operator's API call) and the rollout clock (the engine's decisions) both
//! call these, so "what a promotion means" is written once. Nothing here commits, sends or
//! reads a clock; `now` comes in.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use switchyard_config::{Service, WebhookKind};

use super::roles::Roles;
use super::{step_weights, steps, Phase, RolloutRecord};
use crate::clock::{rfc3339, Millis};
use crate::engine::RollbackReason;
use crate::plan::{Change, Direction, Effect, Plan};
use crate::refusal::Refusal;
use crate::store::{Fence, ServiceState, Source};

/// What every transition reads.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub service: &'a str,
    pub cfg: &'a Service,
    pub state: &'a ServiceState,
    pub now: Millis,
}

impl Ctx<'_> {
    fn rollout(&self) -> Result<&switchyard_config::Rollout, Refusal> {
        self.cfg.rollout.as_ref().ok_or_else(|| {
            Refusal::conflict(format!(
                "service {} has no rollout configured; use switch or weights",
                self.service
            ))
        })
    }

    fn roles(&self) -> Result<Roles, Refusal> {
        Roles::of(self.cfg, self.state).ok_or_else(|| {
            Refusal::conflict(format!(
                "service {} has no rollout configured, so no canary; use switch",
                self.service
            ))
        })
    }

    fn release(&self, version: &str) -> String {
        self.cfg
            .version(version)
            .map(|v| v.release.clone())
            .unwrap_or_default()
    }

    fn gated(&self) -> bool {
        self.cfg
            .rollout
            .as_ref()
            .is_some_and(|r| r.webhooks.iter().any(|w| w.kind == WebhookKind::Gate))
    }

    fn weights(&self, stable: &str, canary: &str, traffic: u32) -> BTreeMap<String, u32> {
        step_weights(
            self.cfg.versions.iter().map(|v| &v.name),
            stable,
            canary,
            traffic,
        )
    }

    /// A move forward (a step, the promotion): needs the store; the rollout clock's own
    /// moves are the leader's to make.
    fn forward(&self, next: ServiceState, source: Source, reason: &str) -> Change {
        let fence = if source == Source::Rollout {
            Fence::Leader
        } else {
            Fence::Any
        };
        self.change(
            next,
            Some((source, reason.to_string())),
            Direction::AwayFromStable,
            fence,
        )
    }

    pub(super) fn change(
        &self,
        next: ServiceState,
        revision: Option<(Source, String)>,
        direction: Direction,
        fence: Fence,
    ) -> Change {
        Change {
            service: self.service.to_string(),
            next,
            revision,
            direction,
            fence,
        }
    }
}

/// Version → release of every configured version (what a finished rollout settled).
fn releases(cfg: &Service) -> BTreeMap<String, String> {
    cfg.versions
        .iter()
        .map(|v| (v.name.clone(), v.release.clone()))
        .collect()
}

fn record_mut(next: &mut ServiceState) -> Result<&mut RolloutRecord, Refusal> {
    next.rollout
        .as_mut()
        .ok_or_else(|| Refusal::conflict("no rollout to act on"))
}

/// Starts a rollout of the canary's current release (`why` explains, for the event).
pub fn start(ctx: Ctx<'_>, source: Source, why: &str) -> Result<Plan, Refusal> {
    let rollout = ctx.rollout()?;
    let roles = ctx.roles()?;
    let (stable, canary) = (roles.stable, roles.canary);
    let release = ctx.release(&canary);
    let mut next = ctx.state.clone();
    next.rolled_back.remove(&canary);
    next.rollouts += 1;
    let gated = ctx.gated();
    next.rollout = Some(RolloutRecord {
        phase: Phase::Progressing,
        stable: stable.clone(),
        canary: canary.clone(),
        canary_release: release.clone(),
        number: next.rollouts,
        step: 0,
        steps: rollout.steps.len(),
        // Set when the first step applies (after the gates, when there are gates).
        step_started_at: 0,
        step_elapsed_ms: 0,
        failed_checks: 0,
        awaiting_gate: gated,
        reason: None,
        started_at: rfc3339(ctx.now),
        finished_at: None,
        judges: BTreeMap::new(),
        extra: BTreeMap::new(),
    });
    let started = (
        "rollout_started",
        format!("rollout of {canary} {release} started ({why}); stable is {stable}"),
        json!({ "canary": canary, "release": release, "stable": stable, "source": source }),
    );
    let mut plan = if gated {
        Plan {
            change: ctx.change(next, None, Direction::AwayFromStable, Fence::Any),
            effects: vec![Effect::AskGates { step: 0 }],
        }
    } else {
        enter_step(ctx, next, 0, source)
    };
    plan.effects.insert(
        0,
        Effect::Event {
            kind: started.0,
            message: started.1,
            details: started.2,
        },
    );
    Ok(plan)
}

/// Applies step `k` of the rollout in `next` (the last step promotes).
pub fn enter_step(ctx: Ctx<'_>, mut next: ServiceState, k: usize, source: Source) -> Plan {
    let steps = ctx.cfg.rollout.as_ref().map(steps).unwrap_or_default();
    if k + 1 >= steps.len() {
        return promote_in(ctx, next, Source::Rollout, "last step reached");
    }
    let (traffic, mirror) = (steps[k].traffic, steps[k].mirror);
    let Some(record) = next.rollout.as_mut() else {
        return Plan::bookkeeping(ctx.service, next);
    };
    record.step = k;
    record.step_started_at = ctx.now;
    record.step_elapsed_ms = 0;
    record.awaiting_gate = false;
    let (stable, canary) = (record.stable.clone(), record.canary.clone());
    next.set_weights(&ctx.weights(&stable, &canary, traffic));
    let reason = match mirror {
        Some(pct) => format!(
            "step {}/{}: {canary} mirrored {pct}% (users stay on {stable})",
            k + 1,
            steps.len()
        ),
        None => format!("step {}/{}: {canary} at {traffic}%", k + 1, steps.len()),
    };
    let details = match mirror {
        Some(pct) => json!({ "step": k + 1, "traffic": 0, "mode": "mirror", "mirror_pct": pct }),
        None => json!({ "step": k + 1, "traffic": traffic, "mode": "traffic" }),
    };
    Plan {
        change: ctx.forward(next, source, &reason),
        effects: vec![
            Effect::ClockStart,
            Effect::Event {
                kind: "step",
                message: reason,
                details,
            },
        ],
    }
}

/// Makes the canary the stable version (an operator's promote, or the last step).
pub fn promote(ctx: Ctx<'_>, source: Source, why: &str) -> Plan {
    promote_in(ctx, ctx.state.clone(), source, why)
}

fn promote_in(ctx: Ctx<'_>, mut next: ServiceState, source: Source, why: &str) -> Plan {
    let Some(record) = next.rollout.as_mut() else {
        return Plan::bookkeeping(ctx.service, next);
    };
    record.phase = Phase::Promoted;
    record.step = record.steps.saturating_sub(1);
    record.awaiting_gate = false;
    record.reason = Some(why.to_string());
    record.finished_at = Some(rfc3339(ctx.now));
    let (stable, canary, release) = (
        record.stable.clone(),
        record.canary.clone(),
        record.canary_release.clone(),
    );
    next.set_weights(&ctx.weights(&stable, &canary, 100));
    next.rolled_back.remove(&canary);
    next.settled = releases(ctx.cfg);
    let reason = format!("promoted {canary} {release}; it is now the stable version");
    Plan {
        change: ctx.forward(next, source, &reason),
        effects: vec![
            Effect::ClockStop,
            Effect::RolloutEnded("promoted"),
            Effect::Event {
                kind: "promoted",
                message: reason,
                details: json!({ "canary": canary, "release": release }),
            },
        ],
    }
}

/// Takes the canary out of traffic: 0% for it, 100% for the stable, its release marked
/// rolled back until resumed or replaced.
pub fn rollback(
    ctx: Ctx<'_>,
    reason: RollbackReason,
    source: Source,
    message: &str,
    evidence: Value,
) -> Result<Plan, Refusal> {
    let roles = ctx.roles()?;
    let (stable, canary) = (roles.stable, roles.canary);
    let release = ctx.release(&canary);
    let mut next = ctx.state.clone();
    let from = next.weights();
    let to = ctx.weights(&stable, &canary, 0);
    next.set_weights(&to);
    next.rolled_back.insert(canary.clone(), release.clone());
    next.settled = releases(ctx.cfg);
    let finished = rfc3339(ctx.now);
    match next.rollout.as_mut() {
        Some(r) if r.phase.is_active() => {
            r.phase = Phase::RolledBack;
            r.reason = Some(message.to_string());
            r.finished_at = Some(finished);
            r.awaiting_gate = false;
        }
        _ => {
            next.rollouts += 1;
            next.rollout = Some(RolloutRecord {
                phase: Phase::RolledBack,
                stable: stable.clone(),
                canary: canary.clone(),
                canary_release: release.clone(),
                number: next.rollouts,
                step: 0,
                steps: ctx.cfg.rollout.as_ref().map_or(0, |r| r.steps.len()),
                step_started_at: 0,
                step_elapsed_ms: 0,
                failed_checks: 0,
                awaiting_gate: false,
                reason: Some(message.to_string()),
                started_at: finished.clone(),
                finished_at: Some(finished),
                judges: BTreeMap::new(),
                extra: BTreeMap::new(),
            });
        }
    }
    let failed_checks = next.rollout.as_ref().map_or(0, |r| r.failed_checks);
    let details = json!({
        "service": ctx.service, "version": canary, "release": release,
        "reason": reason.as_str(), "message": message,
        "from_weights": from, "to_weights": to,
        "failed_checks": failed_checks, "evidence": evidence,
        "at": rfc3339(ctx.now),
    });
    Ok(Plan {
        change: ctx.change(
            next,
            Some((source, message.to_string())),
            Direction::TowardStable,
            Fence::Any,
        ),
        effects: vec![Effect::RolledBack {
            reason,
            message: format!("rolled back {canary} {release}: {message}"),
            details,
        }],
    })
}

/// Stops a running rollout and sends everything back to the stable.
pub fn abort(ctx: Ctx<'_>, source: Source, why: &str) -> Result<Plan, Refusal> {
    let mut next = ctx.state.clone();
    let record = record_mut(&mut next)?;
    record.phase = Phase::Aborted;
    record.reason = Some(why.to_string());
    record.finished_at = Some(rfc3339(ctx.now));
    record.awaiting_gate = false;
    let (stable, canary) = (record.stable.clone(), record.canary.clone());
    let weights = match ctx.cfg.rollout {
        Some(_) => ctx.weights(&stable, &canary, 0),
        // The rollout was removed from the config: the config's weights apply.
        None => ctx
            .cfg
            .versions
            .iter()
            .map(|v| (v.name.clone(), v.weight))
            .collect(),
    };
    next.set_weights(&weights);
    next.settled = releases(ctx.cfg);
    let reason = format!("rollout of {canary} aborted ({why}); {stable} back to 100%");
    let reason = if ctx.cfg.rollout.is_some() {
        reason
    } else {
        format!("rollout of {canary} aborted ({why}); the config's weights apply")
    };
    Ok(Plan {
        change: ctx.change(
            next,
            Some((source, reason.clone())),
            Direction::TowardStable,
            Fence::Any,
        ),
        effects: vec![
            Effect::ClockStop,
            Effect::RolloutEnded("aborted"),
            Effect::Event {
                kind: "aborted",
                message: reason,
                details: json!({}),
            },
        ],
    })
}

pub use super::holds::{await_gates, count_failed_checks, gate_step, pause, resume};
