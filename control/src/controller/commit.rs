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
//! - **A shared store** (etcd, a fleet): one transaction per change; a race lost to another
//!   replica re-reads the service and decides again (`race.rs`); the events and counters of
//!   a change toward stable wait for its commit, so the replica whose commit the store took
//!   tells and counts it — once per fleet.

use std::sync::Arc;
use std::time::Duration;

use super::pending::{Pending, Waiting};
use super::race::{Redo, MAX_RACES};
use super::Controller;
use crate::clock::{self, Millis};
use crate::plan::{Change, Direction, Plan};
use crate::refusal::Refusal;
use crate::status::Persistence;
use crate::store::{push_bounded_arc, Commit, CommitError, Fence, Revision};

/// Why an away-from-stable commit did not happen.
enum Lost {
    /// Another replica changed the service first (or the leadership moved): decide again.
    Race(CommitError),
    Refused(Refusal),
}

/// Longest the loop waits for the store on one commit.
pub const STORE_DEADLINE: Duration = Duration::from_secs(5);
/// Pauses between retries of pending changes while the store refuses them.
const RETRY_MIN_MS: Millis = 500;
const RETRY_MAX_MS: Millis = 10_000;

impl Controller<'_> {
    /// Carries out `plan` in the order its direction asks for; `Ok` is the service's revision.
    /// `redo` says how to decide it again if another replica changed the service first.
    pub(super) async fn carry_out(&mut self, plan: Plan, redo: Redo) -> Result<u64, Refusal> {
        let service = plan.change.service.clone();
        let mut plan = plan;
        for _ in 0..MAX_RACES {
            if plan.change.direction == Direction::TowardStable {
                // Traffic first: on the live table now, whatever the store says.
                self.apply_toward(plan, redo, true);
                self.flush().await;
                return Ok(self.revision_of(&service));
            }
            match self.commit_away(plan).await {
                Ok(id) => return Ok(id),
                Err(Lost::Refused(refusal)) => return Err(refusal),
                Err(Lost::Race(e)) if !self.core.store.shared() => {
                    // A store nobody else writes to moved under us: say so, change nothing.
                    return Err(Refusal::conflict(format!("{e}; read it again and retry")));
                }
                Err(Lost::Race(e)) => {
                    // Someone else changed it first: read it again and decide again.
                    if let Err(read) = self.reread(&service).await {
                        return Err(self.not_persisted(&read));
                    }
                    match self.replan(&service, &redo)? {
                        Some(next) => plan = next,
                        None if matches!(redo, Redo::Drop) => {
                            return Err(Refusal::conflict(format!("{e}; not retried")));
                        }
                        None => return Ok(self.revision_of(&service)),
                    }
                }
            }
        }
        Err(Refusal::conflict(format!(
            "service {service} kept changing on other replicas while this change was tried \
             {MAX_RACES} times; read it again and retry"
        )))
    }

    /// Commits an away-from-stable plan, then applies it (DESIGN §7).
    async fn commit_away(&mut self, plan: Plan) -> Result<u64, Lost> {
        let Plan {
            mut change,
            effects,
        } = plan;
        let revision = self.stamp(&mut change);
        let service = change.service.clone();
        let expected = self.versions.get(&service).copied().unwrap_or(0);
        let batch = if self.core.store.shared() {
            // One transaction per change; what waits for the store goes first, on its own.
            if !self.flush().await {
                return Err(Lost::Refused(
                    self.not_persisted(&CommitError::Unavailable(
                        self.core
                            .status
                            .load()
                            .persistence
                            .error
                            .clone()
                            .unwrap_or_default(),
                    )),
                ));
            }
            vec![Commit {
                service: service.clone(),
                expected,
                state: change.next.clone(),
                revisions: revision.iter().cloned().collect(),
            }]
        } else {
            // The store first, with whatever is pending (its order is the loop's order).
            let mut batch = self.pending_batch();
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
            batch
        };
        match self.store_commit(batch, change.fence).await {
            Ok(()) => {}
            Err(e @ (CommitError::Conflict { .. } | CommitError::NotLeader)) => {
                return Err(Lost::Race(e))
            }
            Err(e) => return Err(Lost::Refused(self.not_persisted(&e))),
        }
        if !self.core.store.shared() {
            self.core.pending = Pending::default();
        }
        self.publish_persistence(None);
        let id = self.apply(change, revision);
        self.publish();
        self.run_effects(&service, id, effects);
        Ok(id)
    }

    /// The 503 for a change away from the stable version that the store did not take.
    fn not_persisted(&self, e: &CommitError) -> Refusal {
        Refusal::Unavailable(format!(
            "{e}; the change was not applied: it could not be persisted. Changes that move \
             traffic away from the stable version need the state written; rollbacks and moves \
             back to the stable still apply"
        ))
    }

    fn revision_of(&self, service: &str) -> u64 {
        self.state.get(service).map_or(0, |s| s.revision)
    }

    /// Applies a toward-stable plan without waiting for the store (the caller flushes);
    /// `publish`: swap the table before the effects run (a reconciliation of many services
    /// publishes once, at the end). With a shared store its effects wait for the commit: the
    /// replica whose commit the store takes tells and counts it, once per fleet.
    pub(super) fn apply_toward(&mut self, plan: Plan, redo: Redo, publish: bool) {
        debug_assert_eq!(plan.change.direction, Direction::TowardStable);
        let Plan {
            mut change,
            effects,
        } = plan;
        let revision = self.stamp(&mut change);
        let service = change.service.clone();
        let shared = self.core.store.shared();
        let (local, fleet): (Vec<_>, Vec<_>) =
            effects.into_iter().partition(|e| !shared || e.is_local());
        let waiting = self.core.pending.queue(
            &service,
            change.next.clone(),
            revision.clone(),
            change.fence,
            redo,
        );
        let id = change.next.revision;
        if !fleet.is_empty() {
            waiting.effects.push((id, fleet));
        }
        let id = self.apply(change, revision);
        if publish {
            self.publish();
        }
        self.run_effects(&service, id, local);
    }
    /// Gives a change that moves the weights its revision: the next id and the time.
    fn stamp(&self, change: &mut Change) -> Option<Revision> {
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

    fn commit_of(&self, service: &str, w: &Waiting) -> Commit {
        Commit {
            service: service.to_string(),
            expected: self.versions.get(service).copied().unwrap_or(0),
            state: w.state.clone(),
            revisions: w.revisions.clone(),
        }
    }

    fn pending_batch(&self) -> Vec<Commit> {
        self.core
            .pending
            .services
            .iter()
            .map(|(service, w)| self.commit_of(service, w))
            .collect()
    }

    /// Hands pending changes to the store; true when nothing is pending any more.
    pub(super) async fn flush(&mut self) -> bool {
        if self.core.pending.is_empty() {
            return true;
        }
        let done = if self.core.store.shared() {
            self.flush_each().await
        } else {
            let batch = self.pending_batch();
            let fence = Fence::Any;
            let done = self.store_commit(batch, fence).await.is_ok();
            if done {
                self.core.pending = Pending::default();
            }
            done
        };
        if done {
            self.publish_persistence(None);
        }
        done
    }

    /// A shared store: one transaction per service (SPEC §11), each race lost decided again
    /// on what the other replica committed; the effects of what the store took run here.
    async fn flush_each(&mut self) -> bool {
        let services: Vec<String> = self.core.pending.services.keys().cloned().collect();
        for service in services {
            for _ in 0..MAX_RACES {
                let Some(w) = self.core.pending.services.get(&service) else {
                    break;
                };
                let (commit, fence) = (self.commit_of(&service, w), w.fence);
                match self.store_commit(vec![commit], fence).await {
                    Ok(()) => {
                        if let Some(w) = self.core.pending.take(&service) {
                            for (id, effects) in w.effects {
                                self.run_effects(&service, id, effects);
                            }
                        }
                        break;
                    }
                    Err(CommitError::Conflict { .. } | CommitError::NotLeader) => {
                        if self.reread_pending(&service).await.is_err() {
                            return false;
                        }
                    }
                    Err(_) => return false,
                }
            }
        }
        self.publish();
        self.core.pending.is_empty()
    }

    /// Re-reads a service whose waiting changes lost a race and decides them again.
    async fn reread_pending(&mut self, service: &str) -> Result<(), CommitError> {
        let after = self.core.pending.first_revision(service);
        let Some(waiting) = self.core.pending.take(service) else {
            return Ok(());
        };
        if let Err(e) = self.reread_after(service, after).await {
            // Keep what waited, as it was: it is retried once the store answers.
            tracing::debug!(service, "cannot re-read after a lost race: {e}");
            self.core.pending.put_back(service, waiting);
            return Err(e);
        }
        self.redo_pending(service, waiting.redos);
        Ok(())
    }

    /// Whether the store refused recently and its pause is not over: the rollout clock then
    /// holds its steps instead of asking again every tick.
    pub(super) fn store_resting(&self, now: Millis) -> bool {
        now < self.core.pending.next_retry
    }

    /// Retries pending changes when their pause is over (every tick calls this).
    pub(super) async fn retry_pending(&mut self, now: Millis) {
        // A shared store refuses at once while etcd is away (no I/O), so what waits is tried
        // every tick and lands as soon as etcd answers again.
        let due = self.core.store.shared() || now >= self.core.pending.next_retry;
        if !self.core.pending.is_empty() && due {
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
