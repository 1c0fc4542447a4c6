//! `PUT /services/{svc}/weights`: set some versions' weights (the others keep theirs).

use std::collections::BTreeMap;

use serde_json::json;

use super::{operator_weights, Ctx};
use crate::plan::Plan;
use crate::refusal::Refusal;
use crate::store::describe;

pub fn plan(ctx: Ctx<'_>, weights: BTreeMap<String, u32>) -> Result<Plan, Refusal> {
    if let Some(v) = weights.keys().find(|v| ctx.cfg.version(v).is_none()) {
        return Err(ctx.unknown_version(v, v));
    }
    ctx.not_while_a_rollout_runs("setting weights")?;
    let reason = format!("weights set: {}", describe(&weights));
    operator_weights(
        ctx,
        &weights,
        "weights",
        reason,
        json!({ "weights": weights }),
    )
}
