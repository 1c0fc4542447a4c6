//! An operator's commands (SPEC §7 mutations), one module each, in the shape of mini-redis's
//! `cmd/`: each turns the current state into a [`Plan`] or a [`Refusal`], and nothing else.
//! They never commit, publish or send: the run loop does that, in the order DESIGN §7 asks
//! for. [`reload`] is the config file's command (loading it, off the loop's thread, and
//! reconciling every service with it).
//!
//! Checks come in a fixed order: unknown version or revision (404) before what the rollout
//! state forbids (409), so bad input is named first.

pub mod reload;
mod rollback;
mod rollout;
mod switch;
mod undo;
mod weights;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use switchyard_config::Service;

use crate::clock::Millis;
use crate::plan::{Change, Direction, Effect, Plan};
use crate::refusal::Refusal;
use crate::rollout::roles::Roles;
use crate::rollout::transitions;
use crate::rollout::RolloutAction;
use crate::store::{Fence, Revision, ServiceState, Source};

/// A mutation of one service, as the API parsed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    SetWeights(BTreeMap<String, u32>),
    Switch { to: String },
    Rollout(RolloutAction),
    Rollback { reason: Option<String> },
    Undo { to_revision: Option<u64> },
}

/// What a command reads.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub service: &'a str,
    pub cfg: &'a Service,
    pub state: &'a ServiceState,
    /// The revisions kept in memory, oldest first.
    pub history: &'a VecDeque<Arc<Revision>>,
    pub now: Millis,
}

impl<'a> Ctx<'a> {
    fn transition(&self) -> transitions::Ctx<'a> {
        transitions::Ctx {
            service: self.service,
            cfg: self.cfg,
            state: self.state,
            now: self.now,
        }
    }

    fn unknown_version(&self, version: &str, field: &str) -> Refusal {
        Refusal::not_found(
            format!(
                "service {} has no version {version:?} (versions: {})",
                self.service,
                self.cfg
                    .versions
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(field),
        )
    }

    /// 409 while a rollout owns the weights.
    fn not_while_a_rollout_runs(&self, what: &str) -> Result<(), Refusal> {
        match self.state.rollout.as_ref().filter(|r| r.phase.is_active()) {
            Some(r) => Err(Refusal::conflict(format!(
                "a rollout of {} is {}; promote, abort or roll it back before {what}",
                r.canary,
                r.phase.as_str()
            ))),
            None => Ok(()),
        }
    }
}

/// The plan for `command` on `ctx.service`.
pub fn plan(ctx: Ctx<'_>, command: Command) -> Result<Plan, Refusal> {
    match command {
        Command::SetWeights(w) => weights::plan(ctx, w),
        Command::Switch { to } => switch::plan(ctx, &to),
        Command::Undo { to_revision } => undo::plan(ctx, to_revision),
        Command::Rollback { reason } => rollback::plan(ctx, reason),
        Command::Rollout(action) => rollout::plan(ctx, action),
    }
}

/// Weights an operator chose (weights, switch, undo): one API revision and one event.
///
/// Never to a rolled-back release (SPEC §6: it stays at 0% until resumed or replaced). The
/// direction is toward stable when no version but the stable gains a share — so putting
/// traffic back on the stable works even while the store cannot be written.
fn operator_weights(
    ctx: Ctx<'_>,
    weights: &BTreeMap<String, u32>,
    kind: &'static str,
    reason: String,
    details: Value,
) -> Result<Plan, Refusal> {
    if let Some((v, release)) = ctx
        .state
        .rolled_back
        .iter()
        .find(|(v, _)| weights.get(*v).is_some_and(|&w| w > 0))
    {
        let why = ctx
            .state
            .rollout
            .as_ref()
            .filter(|r| &r.canary == v)
            .and_then(|r| r.reason.clone())
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        return Err(Refusal::conflict(format!(
            "version {v} runs release {release}, which was rolled back{why}; it gets no traffic \
             until the rollout is resumed (POST /api/v1/services/{svc}/rollout/resume, or \
             `switchyard ctl rollout resume {svc}`) or the config gives {v} a new release",
            svc = ctx.service
        )));
    }
    let mut next = ctx.state.clone();
    next.set_weights(weights);
    if next.weights.values().all(|l| l.weight == 0) {
        return Err(Refusal::bad(
            "weights may not all be 0: give at least one version a share",
            None,
        ));
    }
    let direction = match Roles::of(ctx.cfg, ctx.state) {
        Some(roles) if only_stable_gains(ctx.state, &next, &roles.stable) => {
            Direction::TowardStable
        }
        _ => Direction::AwayFromStable,
    };
    Ok(Plan {
        change: Change {
            service: ctx.service.to_string(),
            next,
            revision: Some((Source::Api, reason.clone())),
            direction,
            fence: Fence::Any,
        },
        effects: vec![Effect::Event {
            kind,
            message: reason,
            details,
        }],
    })
}

/// Whether no version other than `stable` has a larger share in `after` than in `before`.
fn only_stable_gains(before: &ServiceState, after: &ServiceState, stable: &str) -> bool {
    let share = |s: &ServiceState, v: &str| {
        let total: u64 = s.weights.values().map(|l| u64::from(l.weight)).sum();
        if total == 0 {
            0.0
        } else {
            f64::from(s.weight(v)) / total as f64
        }
    };
    after
        .weights
        .keys()
        .filter(|v| *v != stable)
        .all(|v| share(after, v) <= share(before, v))
}
