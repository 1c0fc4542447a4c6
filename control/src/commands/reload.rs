//! The config file's command: load it (off the loop's thread) and reconcile every service's
//! state with it (SPEC §8).
//!
//! Topology comes from the config; live weights, rollout state and rolled-back releases from
//! the state while the release names still match. A config weight that differs from the one
//! the state was last reconciled with was edited in the file — while the proxy ran or while
//! it was stopped — and the edit wins (a running rollout owns the weights either way). A
//! running rollout whose `rollout:` block the config removed ends (`aborted`, "rollout
//! removed from config") and the config's weights apply. All of this moves traffic the way
//! the file says, so it is applied first and persisted after.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use switchyard_config::{Config, Service};

use crate::clock::Millis;
use crate::plan::{Change, Direction, Plan};
use crate::rollout::roles::Roles;
use crate::rollout::{transitions, Phase};
use crate::store::{Fence, LiveWeight, ServiceState, Source};

/// Reads and parses the config file on the blocking pool, never on an async worker.
pub async fn load(path: &Path) -> Result<Config, String> {
    let path: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || switchyard_config::load(&path))
        .await
        .map_err(|e| format!("config loader failed: {e}"))?
        .map_err(|errors| errors.to_string())
}

/// One plan per service whose state the config changes.
pub fn reconcile(
    config: &Config,
    state: &BTreeMap<String, ServiceState>,
    now: Millis,
) -> Vec<Plan> {
    config
        .services
        .iter()
        .filter_map(|svc| {
            let prev = state.get(&svc.name).cloned().unwrap_or_default();
            reconcile_service(svc, prev, now)
        })
        .collect()
}

/// The plan that reconciles one service's state with its config, if anything changes.
pub fn reconcile_service(svc: &Service, prev: ServiceState, now: Millis) -> Option<Plan> {
    let mut base = prev.clone();
    let mut revision = None;
    let mut effects = Vec::new();
    if let Some(r) = prev.rollout.as_ref().filter(|r| r.phase.is_active()) {
        let why = if svc.rollout.is_none() {
            Some("rollout removed from config")
        } else if svc.version(&r.stable).is_none() || svc.version(&r.canary).is_none() {
            Some("its versions are no longer in the config")
        } else {
            None
        };
        let ctx = transitions::Ctx {
            service: &svc.name,
            cfg: svc,
            state: &prev,
            now,
        };
        if let Some(plan) = why.and_then(|why| transitions::abort(ctx, Source::Config, why).ok()) {
            base = plan.change.next;
            revision = plan.change.revision;
            effects = plan.effects;
        }
    }
    // A step whose start a state file from an older binary did not record starts now.
    if let Some(r) = base.rollout.as_mut() {
        if r.phase == Phase::Progressing && r.step_started_at == 0 && !r.awaiting_gate {
            r.step_started_at = now.saturating_sub(r.step_elapsed_ms);
        }
    }
    let rollout_active = base.rollout.as_ref().is_some_and(|r| r.phase.is_active());
    let before = base.weights();
    let mut weights = BTreeMap::new();
    for v in &svc.versions {
        let live = base.weights.get(&v.name).filter(|l| l.release == v.release);
        let edited = base
            .config_weights
            .get(&v.name)
            .is_some_and(|&w| w != v.weight);
        let weight = match live {
            Some(l) if !edited || rollout_active => l.weight,
            _ => v.weight,
        };
        weights.insert(
            v.name.clone(),
            LiveWeight {
                weight,
                release: v.release.clone(),
            },
        );
    }
    let mut next = base;
    next.weights = weights;
    next.config_weights = svc
        .versions
        .iter()
        .map(|v| (v.name.clone(), v.weight))
        .collect();
    // A rolled-back release stays out until the config names a new one.
    next.rolled_back
        .retain(|v, release| svc.version(v).is_some_and(|cv| &cv.release == release));
    if revision.is_none() {
        revision = if prev.revision == 0 {
            Some((Source::Config, "initial config".to_string()))
        } else if next.weights() != before {
            Some((Source::Config, "config reloaded".to_string()))
        } else {
            None
        };
    }
    if revision.is_none() && next == prev {
        return None;
    }
    Some(Plan {
        change: Change {
            service: svc.name.clone(),
            next,
            revision,
            direction: Direction::TowardStable,
            fence: Fence::Any,
        },
        effects,
    })
}

/// Services whose config names a canary release no rollout settled: a rollout starts (a new
/// release named while a rollout runs supersedes it). Returns `(service, why)`.
pub fn rollouts_to_start(
    config: &Config,
    state: &BTreeMap<String, ServiceState>,
) -> Vec<(String, String)> {
    config
        .services
        .iter()
        .filter_map(|svc| {
            let why = wants_start(svc, state.get(&svc.name)?)?;
            Some((svc.name.clone(), why))
        })
        .collect()
}

/// Why a rollout of `svc` should start now, if it should.
pub fn wants_start(svc: &Service, state: &ServiceState) -> Option<String> {
    let roles = Roles::of(svc, state)?;
    let release = &svc.version(&roles.canary)?.release;
    let start = match state.rollout.as_ref() {
        Some(r) if r.phase.is_active() => &r.canary_release != release,
        _ => state.settled.get(&roles.canary) != Some(release),
    };
    start.then(|| format!("release {release} of {} named by the config", roles.canary))
}
