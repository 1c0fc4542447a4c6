//! `POST /services/{svc}/switch`: blue/green — 100% to one version, atomically.

use std::collections::BTreeMap;

use serde_json::json;

use super::{operator_weights, Ctx};
use crate::plan::Plan;
use crate::refusal::Refusal;

pub fn plan(ctx: Ctx<'_>, to: &str) -> Result<Plan, Refusal> {
    if ctx.cfg.version(to).is_none() {
        return Err(ctx.unknown_version(to, "to"));
    }
    ctx.not_while_a_rollout_runs("switching")?;
    let weights: BTreeMap<String, u32> = ctx
        .cfg
        .versions
        .iter()
        .map(|v| (v.name.clone(), if v.name == to { 100 } else { 0 }))
        .collect();
    let reason = format!("switched 100% to {to}");
    operator_weights(ctx, &weights, "switched", reason, json!({ "to": to }))
}
