//! Losing a race to another replica (SPEC §11): the store refused a commit because someone
//! else changed the service first, or a commit from elsewhere arrived while a change of
//! ours waited for the store. Either way: take the service as the store holds it, and
//! decide again on it — never overwrite what another replica committed.
//!
//! What "decide again" means is the [`Redo`] each change carries: an operator's command is
//! planned again on the new state (its refusal is then the answer), a rollback the engine
//! decided is only needed if the new state has not rolled that canary back already (so the
//! fleet ends with exactly one rollback revision, however many replicas saw the failures),
//! the config's reconciliation runs again, and the rollout clock's own decisions are
//! dropped: its next tick decides from the new state.

use std::sync::Arc;

use super::Controller;
use crate::clock;
use crate::commands::{self, Command};
use crate::engine::Rollback;
use crate::plan::{Direction, Plan};
use crate::refusal::Refusal;
use crate::rollout::transitions;
use crate::store::{push_bounded_arc, CommitError, Remote};

/// How many times one change is decided again after lost races before it answers 409.
pub(super) const MAX_RACES: usize = 32;

/// How to decide a change again on a state another replica changed.
#[derive(Debug, Clone)]
pub enum Redo {
    /// An operator's command: planned again.
    Command(Command),
    /// A rollback the engine decided in rollout number `rollout`: still needed only if that
    /// rollout is still running.
    Rollback { rollout: u64, rollback: Rollback },
    /// The config's reconciliation of the service.
    Reconcile,
    /// The rollout clock's steps, checks and gates: its next tick decides again.
    Drop,
}

impl Controller<'_> {
    /// The plan `redo` makes on the service's current state; `None` when nothing is left
    /// to do.
    pub(super) fn replan(&self, service: &str, redo: &Redo) -> Result<Option<Plan>, Refusal> {
        let config = Arc::clone(&self.core.config);
        let cfg = config
            .service(service)
            .ok_or_else(|| Refusal::unknown_service(service))?;
        let state = self.state.get(service).cloned().unwrap_or_default();
        let now = clock::now();
        match redo {
            Redo::Command(command) => {
                let history = self.history.get(service).cloned().unwrap_or_default();
                let ctx = commands::Ctx {
                    service,
                    cfg,
                    state: &state,
                    history: &history,
                    now,
                };
                commands::plan(ctx, command.clone()).map(Some)
            }
            Redo::Rollback { rollout, rollback } => {
                let running = state
                    .rollout
                    .as_ref()
                    .is_some_and(|r| r.number == *rollout && r.phase.is_active());
                if !running {
                    return Ok(None);
                }
                let ctx = transitions::Ctx {
                    service,
                    cfg,
                    state: &state,
                    now,
                };
                transitions::rollback(
                    ctx,
                    rollback.reason,
                    rollback.source,
                    &rollback.message,
                    rollback.evidence.clone(),
                )
                .map(Some)
            }
            Redo::Reconcile => Ok(commands::reload::reconcile_service(cfg, state, now)),
            Redo::Drop => Ok(None),
        }
    }

    /// Reads the service as the store holds it now and makes it the loop's.
    pub(super) async fn reread(&mut self, service: &str) -> Result<(), CommitError> {
        let first = self.core.pending.first_revision(service);
        self.reread_after(service, first).await
    }

    /// [`Self::reread`], where `first_waiting` is the oldest revision of ours the store has
    /// not taken (the read starts before it).
    pub(super) async fn reread_after(
        &mut self,
        service: &str,
        first_waiting: Option<u64>,
    ) -> Result<(), CommitError> {
        let after = self
            .history
            .get(service)
            .and_then(|h| h.back())
            .map_or(0, |r| r.id)
            .min(first_waiting.map_or(u64::MAX, |id| id.saturating_sub(1)));
        let deadline = tokio::time::Instant::now() + super::commit::STORE_DEADLINE;
        let store = Arc::clone(&self.core.store);
        let fresh = store.read(service, after, deadline).await?;
        self.take_remote(fresh, first_waiting);
        Ok(())
    }

    /// A commit from elsewhere. Applied as it is, unless a change of ours waits for the store
    /// on that service: then ours is decided again on top of it (and still applied first,
    /// when it moves toward the stable version).
    pub(super) fn apply_remote(&mut self, remote: Remote) {
        let known = self.versions.get(&remote.service).copied().unwrap_or(0);
        if remote.version <= known || self.core.config.service(&remote.service).is_none() {
            return; // our own commit coming back, or one we already re-read
        }
        let service = remote.service.clone();
        let waiting = self.core.pending.take(&service);
        let first_waiting = waiting.as_ref().and_then(|w| w.first_revision());
        self.take_remote(remote, first_waiting);
        if let Some(entry) = waiting {
            self.redo_pending(&service, entry.redos);
        }
    }

    /// Decides the given changes again on the service's current state, applying what is
    /// still needed (toward the stable: at once; the store follows).
    pub(super) fn redo_pending(&mut self, service: &str, redos: Vec<Redo>) {
        for redo in redos {
            match self.replan(service, &redo) {
                Ok(Some(plan)) if plan.change.direction == Direction::TowardStable => {
                    self.apply_toward(plan, redo, false);
                }
                Ok(Some(_)) => tracing::warn!(
                    service,
                    "a change that waited for the store would now move traffic away from the \
                     stable version on the state another replica committed; dropped"
                ),
                Ok(None) => {}
                Err(e) => tracing::info!(service, "a change that waited for the store: {e}"),
            }
        }
    }

    /// Makes a commit from the store the loop's state (no questions asked). Revisions from
    /// `uncommitted` on were ours and never committed (a race lost): they go.
    pub(super) fn take_remote(&mut self, remote: Remote, uncommitted: Option<u64>) {
        if let Some(at) = remote.committed_at {
            let lag = clock::now().saturating_sub(at) as f64 / 1000.0;
            metrics::histogram!("switchyard_fleet_apply_seconds").record(lag);
        }
        self.versions.insert(remote.service.clone(), remote.version);
        let history = self.history.entry(remote.service.clone()).or_default();
        // The store's history is the truth: revisions above its newest id, or ours that it
        // never took, go.
        let committed = remote.state.revision;
        let keep_below = uncommitted.unwrap_or(u64::MAX).min(committed + 1);
        if history.back().is_some_and(|r| r.id >= keep_below) {
            Arc::make_mut(history).retain(|r| r.id < keep_below);
        }
        let newest = history.back().map_or(0, |r| r.id);
        let fresh: Vec<_> = remote
            .revisions
            .into_iter()
            .filter(|r| r.id > newest && r.id <= committed)
            .collect();
        if !fresh.is_empty() {
            let history = Arc::make_mut(history);
            for r in fresh {
                push_bounded_arc(history, Arc::new(r));
            }
        }
        let running = remote
            .state
            .rollout
            .as_ref()
            .is_some_and(|r| r.phase == crate::rollout::Phase::Progressing);
        self.set_state(&remote.service, remote.state);
        match (running, self.clocks.contains_key(&remote.service)) {
            (true, false) => self.start_clock(&remote.service),
            (false, true) => {
                self.clocks.remove(&remote.service);
            }
            _ => {}
        }
    }
}
