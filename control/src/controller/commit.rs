//! Committing a plan: the one place where DESIGN §7's two asymmetries live (SPEC §16).
//!
//! - **Toward stable is never blocked.** A rollback, an abort, a pause, bookkeeping and the
//!   config's own changes are applied to the live table at once, then handed to the store;
//!   what the store does not take stays [`Pending`] and is retried until it is taken. The
//!   failure is logged, counted (`switchyard_state_write_errors_total{store}`) and shown in
//!   `/api/v1/status` (`persistence`).
//! - **Away from stable needs the store.** Weights up, steps, promotion, starting or
//!   resuming a rollout are committed first (together with anything pending); a commit the
//!   store refuses answers 503 and leaves nothing behind: not applied, no revision in the
//!   log, no revision id used.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::Controller;
use crate::clock::{self, Millis};
use crate::plan::{Change, Direction, Effect, Plan};
use crate::refusal::Refusal;
use crate::status::Persistence;
use crate::store::{push_bounded_arc, Commit, CommitError, Fence, Revision, ServiceState};

/// Longest the loop waits for the store on one commit.
pub const STORE_DEADLINE: Duration = Duration::from_secs(5);
/// Pauses between retries of pending changes while the store refuses them.
const RETRY_MIN_MS: Millis = 500;
const RETRY_MAX_MS: Millis = 10_000;

/// Changes applied to traffic but not yet persisted: per service, the newest state and the
/// revisions made since the last commit. Survives a controller restart.
#[derive(Debug, Default)]
pub struct Pending {
    services: BTreeMap<String, (ServiceState, Vec<Revision>)>,
    next_retry: Millis,
    backoff: Millis,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    fn queue(&mut self, service: &str, state: ServiceState, revision: Option<Revision>) {
        let entry = self
            .services
            .entry(service.to_string())
            .or_insert_with(|| (state.clone(), Vec::new()));
        entry.0 = state;
        entry.1.extend(revision);
    }

    /// The states to lay over what the store holds at a restart.
    pub fn overlay(&self) -> impl Iterator<Item = (&String, &ServiceState, &[Revision])> {
        self.services.iter().map(|(k, (s, r))| (k, s, r.as_slice()))
    }
}

impl Controller<'_> {
    /// Carries out `plan` in the order its direction asks for; `Ok` is the service's revision.
    pub(super) async fn carry_out(&mut self, plan: Plan) -> Result<u64, Refusal> {
        if plan.change.direction == Direction::TowardStable {
            // Traffic first: on the live table now, whatever the store says; the store after.
            let id = self.apply_toward(plan, true);
            self.flush().await;
            return Ok(id);
        }
        let (change, revision, effects) = self.stamp(plan);
        let service = change.service.clone();
        // The store first, with whatever is pending (its order is the loop's order).
        let mut batch = self.pending_batch();
        let expected = self.versions.get(&service).copied().unwrap_or(0);
        let mut revisions = match batch.iter().position(|c| c.service == service) {
            Some(i) => batch.remove(i).revisions,
            None => Vec::new(),
        };
        revisions.extend(revision.clone());
        batch.push(Commit {
            service: service.clone(),
            expected,
            state: change.next.clone(),
            revisions,
        });
        if let Err(e) = self.store_commit(batch, change.fence).await {
            return Err(match e {
                CommitError::Conflict { .. } => {
                    Refusal::conflict(format!("{e}; read it again and retry"))
                }
                e => Refusal::Unavailable(format!(
                    "the change was not applied: it could not be persisted ({e}). Changes \
                     that move traffic away from the stable version need the state written; \
                     rollbacks and moves back to the stable still apply"
                )),
            });
        }
        self.core.pending = Pending::default();
        self.publish_persistence(None);
        let id = self.apply(change, revision);
        self.publish();
        self.run_effects(&service, id, effects);
        Ok(id)
    }

    /// Applies a toward-stable plan without waiting for the store, queueing it for the next
    /// flush; `publish`: swap the table before the effects run (a reconciliation of many
    /// services publishes once, at the end).
    pub(super) fn apply_toward(&mut self, plan: Plan, publish: bool) -> u64 {
        debug_assert_eq!(plan.change.direction, Direction::TowardStable);
        let (change, revision, effects) = self.stamp(plan);
        let service = change.service.clone();
        self.core
            .pending
            .queue(&service, change.next.clone(), revision.clone());
        let id = self.apply(change, revision);
        if publish {
            self.publish();
        }
        self.run_effects(&service, id, effects);
        id
    }

    /// Gives a change that moves the weights its revision: the next id and the time.
    fn stamp(&self, plan: Plan) -> (Change, Option<Revision>, Vec<Effect>) {
        let Plan {
            mut change,
            effects,
        } = plan;
        let revision = self.revision_of(&mut change);
        (change, revision, effects)
    }

    fn revision_of(&self, change: &mut Change) -> Option<Revision> {
        let current = self.state.get(&change.service).map_or(0, |s| s.revision);
        let (source, reason) = change.revision.clone()?;
        let id = current + 1;
        change.next.revision = id;
        Some(Revision {
            id,
            service: change.service.clone(),
            at: clock::rfc3339(clock::now()),
            source,
            reason,
            weights: change.next.weights(),
        })
    }

    /// Makes a change live in memory (the table follows in `publish`).
    fn apply(&mut self, change: Change, revision: Option<Revision>) -> u64 {
        if let Some(r) = revision {
            tracing::info!(service = %r.service, revision = r.id, source = ?r.source, reason = %r.reason, weights = ?r.weights, "new revision");
            let history = self.history.entry(change.service.clone()).or_default();
            push_bounded_arc(Arc::make_mut(history), Arc::new(r));
        }
        let id = change.next.revision;
        self.set_state(&change.service, change.next);
        id
    }

    fn pending_batch(&self) -> Vec<Commit> {
        self.core
            .pending
            .services
            .iter()
            .map(|(service, (state, revisions))| Commit {
                service: service.clone(),
                expected: self.versions.get(service).copied().unwrap_or(0),
                state: state.clone(),
                revisions: revisions.clone(),
            })
            .collect()
    }

    /// Hands pending changes to the store; true when nothing is pending any more.
    pub(super) async fn flush(&mut self) -> bool {
        if self.core.pending.is_empty() {
            return true;
        }
        let batch = self.pending_batch();
        match self.store_commit(batch, Fence::Any).await {
            Ok(()) => {
                self.core.pending = Pending::default();
                self.publish_persistence(None);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the store refused recently and its pause is not over: the rollout clock then
    /// holds its steps instead of asking again every tick.
    pub(super) fn store_resting(&self, now: Millis) -> bool {
        now < self.core.pending.next_retry
    }

    /// Retries pending changes when their pause is over (every tick calls this).
    pub(super) async fn retry_pending(&mut self, now: Millis) {
        if !self.core.pending.is_empty() && now >= self.core.pending.next_retry {
            self.flush().await;
        }
    }

    /// One store call with its deadline; records the outcome in the persistence status.
    async fn store_commit(&mut self, batch: Vec<Commit>, fence: Fence) -> Result<(), CommitError> {
        let services: Vec<String> = batch.iter().map(|c| c.service.clone()).collect();
        let deadline = tokio::time::Instant::now() + STORE_DEADLINE;
        let store = Arc::clone(&self.core.store);
        match store.commit(batch, fence, deadline).await {
            Ok(versions) => {
                for (service, version) in services.into_iter().zip(versions) {
                    self.versions.insert(service, version);
                }
                Ok(())
            }
            Err(e) => {
                metrics::counter!("switchyard_state_write_errors_total", "store" => store.kind())
                    .increment(1);
                let p = &mut self.core.pending;
                p.backoff = (p.backoff * 2).clamp(RETRY_MIN_MS, RETRY_MAX_MS);
                p.next_retry = clock::now() + p.backoff;
                self.publish_persistence(Some(e.to_string()));
                Err(e)
            }
        }
    }

    /// Updates `/api/v1/status`'s `persistence`; logs when health changes.
    pub(super) fn publish_persistence(&self, error: Option<String>) {
        let pending = self.core.pending.len();
        let kind = self.core.store.kind();
        let was = self.core.status.load().persistence.clone();
        match (&error, was.healthy) {
            (Some(e), true) => tracing::error!(
                store = kind,
                pending,
                "cannot persist: {e}; changes toward the stable version are applied and retried \
                 until the store takes them, changes away from it are refused"
            ),
            (Some(e), false) => tracing::debug!(store = kind, pending, "still cannot persist: {e}"),
            (None, false) => tracing::info!(store = kind, "persisting again; nothing is pending"),
            (None, true) => {}
        }
        self.core.status.rcu(|s| {
            let mut next = crate::status::Status::clone(s);
            next.persistence = Persistence {
                store: kind,
                healthy: error.is_none(),
                error: error.clone(),
                since: match (&error, s.persistence.since) {
                    (Some(_), Some(since)) => Some(since),
                    (Some(_), None) => Some(clock::now()),
                    (None, _) => None,
                },
                pending,
                warnings: s.persistence.warnings.clone(),
            };
            next
        });
    }
}
