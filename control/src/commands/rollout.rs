//! `POST /services/{svc}/rollout/{start,pause,resume,promote,abort}`: drive the rollout.

use serde_json::Value;

use super::Ctx;
use crate::plan::Plan;
use crate::refusal::Refusal;
use crate::rollout::{transitions, RolloutAction};
use crate::store::Source;

pub fn plan(ctx: Ctx<'_>, action: RolloutAction) -> Result<Plan, Refusal> {
    action
        .allowed_in(ctx.state.rollout.as_ref().map(|r| r.phase))
        .map_err(Refusal::Conflict)?;
    if ctx.cfg.rollout.is_none() {
        return Err(Refusal::conflict(format!(
            "service {} has no rollout configured",
            ctx.service
        )));
    }
    let t = ctx.transition();
    match action {
        RolloutAction::Start => transitions::start(t, Source::Api, "started through the API"),
        RolloutAction::Resume => transitions::resume(t),
        RolloutAction::Pause => transitions::pause(
            t,
            "paused through the API",
            "rollout paused through the API".into(),
            Value::Null,
        ),
        RolloutAction::Promote => Ok(transitions::promote(
            t,
            Source::Api,
            "promoted through the API",
        )),
        RolloutAction::Abort => transitions::abort(t, Source::Api, "aborted through the API"),
    }
}
