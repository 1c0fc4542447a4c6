//! `POST /services/{svc}/rollback`: take the canary out of traffic now (reason `manual`).

use serde_json::Value;

use super::Ctx;
use crate::engine::RollbackReason;
use crate::plan::Plan;
use crate::refusal::Refusal;
use crate::rollout::roles::Roles;
use crate::rollout::transitions;
use crate::store::Source;

pub fn plan(ctx: Ctx<'_>, reason: Option<String>) -> Result<Plan, Refusal> {
    let service = ctx.service;
    let Some(roles) = Roles::of(ctx.cfg, ctx.state) else {
        return Err(Refusal::conflict(format!(
            "service {service} has no rollout configured, so no canary to roll back; use switch"
        )));
    };
    if !roles.active && ctx.state.weight(&roles.canary) == 0 {
        return Err(Refusal::conflict(format!(
            "nothing to roll back: canary {} already has 0% and no rollout is running",
            roles.canary
        )));
    }
    let message = format!(
        "manual rollback: {}",
        reason.unwrap_or_else(|| "requested through the API".into())
    );
    transitions::rollback(
        ctx.transition(),
        RollbackReason::Manual,
        Source::Api,
        &message,
        Value::Null,
    )
}
