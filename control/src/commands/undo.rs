//! `POST /services/{svc}/undo`: restore an earlier revision's weights as a **new** revision
//! (revert, never rewrite history). Default: the revision before the current one.

use serde_json::json;

use super::{operator_weights, Ctx};
use crate::plan::Plan;
use crate::refusal::Refusal;
use crate::store::{describe, HISTORY_KEPT};

pub fn plan(ctx: Ctx<'_>, to_revision: Option<u64>) -> Result<Plan, Refusal> {
    let service = ctx.service;
    if to_revision.is_none() && ctx.state.revision <= 1 {
        return Err(Refusal::conflict(format!(
            "service {service} has no earlier revision to undo to"
        )));
    }
    let target = to_revision.unwrap_or(ctx.state.revision.saturating_sub(1));
    let Some(old) = ctx.history.iter().find(|r| r.id == target) else {
        let oldest = ctx.history.front().map_or(0, |r| r.id);
        let why = if target < oldest && target > 0 {
            format!(
                "revision {target} of service {service} is older than the {HISTORY_KEPT} \
                 revisions kept in memory (oldest: {oldest}); it is in the state directory's \
                 revisions.jsonl"
            )
        } else {
            format!("service {service} has no revision {target}")
        };
        return Err(Refusal::not_found(why, Some("to_revision")));
    };
    if let Some(v) = old.weights.keys().find(|v| ctx.cfg.version(v).is_none()) {
        return Err(Refusal::conflict(format!(
            "revision {target} names version {v}, which is no longer in the config"
        )));
    }
    ctx.not_while_a_rollout_runs("undoing")?;
    let weights = old.weights.clone();
    let reason = format!("undo to revision {target}: {}", describe(&weights));
    operator_weights(
        ctx,
        &weights,
        "undo",
        reason,
        json!({ "to_revision": target }),
    )
}
