//! Where decisions are kept: the `StateStore` seam of DESIGN §7.
//!
//! The run loop never writes files or talks to a database itself; it hands a batch of
//! [`Commit`]s to a [`StateStore`] and gets back, per service, the store's new version — or a
//! [`CommitError`]. Three stores fit behind the trait:
//! - [`file::FileStore`] — `state_dir` on one replica (DESIGN §6 and SPEC §16's rules);
//! - [`memory::MemoryStore`] — no `state_dir` (everything in memory), and unit tests, where it
//!   can be told to fail;
//! - an etcd store for a fleet (SPEC §11): `commit` is one transaction conditional on each
//!   service's version (and, for [`Fence::Leader`], on still holding the leadership key),
//!   [`StateStore::subscribe`] feeds commits made by other replicas back into the loop as
//!   intents, and [`StateStore::is_leader`] tells the loop whether to run the rollout clock.
//!
//! Every operation is async and bounded by a deadline the caller passes: a store that does
//! not answer in time answers [`CommitError::Unavailable`] and the change it was asked to make
//! leaves no trace (the file store undoes a write that finishes after its deadline).

pub mod etcd;
pub mod file;
pub mod fleet;
pub mod memory;
pub mod model;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::events::Event;
pub use model::{describe, DesiredState, LiveWeight, Revision, ServiceState, Source};

/// Revisions of one service kept in memory (and shown by the API); older ones stay on disk.
pub const HISTORY_KEPT: usize = 1000;
/// Events kept in memory and read back at start.
pub const EVENTS_KEPT: usize = 1000;

/// A boxed future, so `dyn StateStore` works (an etcd client is async).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One service's next state, conditional on the version of it the change was computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    pub service: String,
    /// The store's version of this service that `state` was computed from (see
    /// [`Loaded::versions`]); the store refuses the commit if it moved.
    pub expected: u64,
    pub state: ServiceState,
    /// New history entries, oldest first (several when queued changes are committed at once).
    pub revisions: Vec<Revision>,
}

/// Who may make a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// Any replica (operator commands, rollbacks, config reconciliation).
    Any,
    /// Only the replica holding the leadership (the rollout clock's steps, promotions and
    /// interval analysis). A no-op for a single replica's store.
    Leader,
}

/// Why a store did not take a batch. A refused batch changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitError {
    /// Someone else changed `service` since it was read; `current` is its version now.
    Conflict { service: String, current: u64 },
    /// The store cannot be written (disk full or read-only, etcd unreachable, no answer
    /// within the deadline); the reason is for operators.
    Unavailable(String),
    /// A leader-only commit from a replica that no longer leads.
    NotLeader,
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::Conflict { service, current } => write!(
                f,
                "service {service} was changed elsewhere (now at version {current})"
            ),
            CommitError::Unavailable(why) => f.write_str(why),
            CommitError::NotLeader => f.write_str("this replica is not the leader"),
        }
    }
}

/// A commit another replica made, to apply here (an etcd watch event), or a service as the
/// store holds it now ([`StateStore::read`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    pub service: String,
    pub version: u64,
    pub state: ServiceState,
    /// Revisions the receiver may not have, oldest first (it skips ids it holds).
    pub revisions: Vec<Revision>,
    /// When the commit was made (unix ms, the committer's clock), for
    /// `switchyard_fleet_apply_seconds`.
    pub committed_at: Option<crate::clock::Millis>,
}

/// What a store holds, as read at start (or at a controller restart).
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    pub state: DesiredState,
    /// The newest [`HISTORY_KEPT`] revisions of each service, oldest first.
    pub history: HashMap<String, VecDeque<Revision>>,
    /// The store's version of each service it holds (absent = 0).
    pub versions: HashMap<String, u64>,
    /// Recent events, oldest first.
    pub events: Vec<Event>,
    /// Damage found and handled (files kept aside, unreadable lines skipped), for the log and
    /// `GET /api/v1/status`.
    pub warnings: Vec<String>,
}

/// The seam between the run loop and wherever its decisions are kept.
pub trait StateStore: Send + Sync + 'static {
    /// The `store` label of `switchyard_state_write_errors_total`: `file`, `etcd`, `memory`.
    fn kind(&self) -> &'static str;

    /// Reads what the store holds. Damage is reported in [`Loaded::warnings`], never fatal;
    /// `Err` only when the store cannot be read at all (then the proxy starts from the config).
    fn load(&self, deadline: Instant) -> StoreFuture<'_, Result<Loaded, String>>;

    /// Commits every entry of `batch`, or none. `Ok` holds each service's new version, in
    /// batch order.
    fn commit(
        &self,
        batch: Vec<Commit>,
        fence: Fence,
        deadline: Instant,
    ) -> StoreFuture<'_, Result<Vec<u64>, CommitError>>;

    /// Keeps an event (best effort, never waits: events explain, they do not decide).
    fn record_event(&self, event: &Event);

    /// Commits made elsewhere, to feed into the loop as intents. A single replica's store
    /// never yields one.
    fn subscribe(&self) -> mpsc::Receiver<Remote>;

    /// Whether this replica runs the rollout clock (always, for a single replica).
    fn is_leader(&self) -> bool {
        true
    }

    /// Whether other replicas share this store (etcd). Then a commit can lose a race
    /// ([`CommitError::Conflict`]), what others commit arrives through [`Self::subscribe`], and
    /// a decision's effects (events, webhooks, counters) belong to the replica whose commit
    /// the store took: once per fleet.
    fn shared(&self) -> bool {
        false
    }

    /// One service as the store holds it now, with its revisions whose id is above `after`:
    /// what a replica that lost a race re-reads before it decides again. Only shared stores
    /// can lose races.
    fn read(
        &self,
        service: &str,
        after: u64,
        deadline: Instant,
    ) -> StoreFuture<'_, Result<Remote, CommitError>> {
        let _ = (service, after, deadline);
        Box::pin(async {
            Err(CommitError::Unavailable(
                "this store is not shared, so there is nothing to re-read".into(),
            ))
        })
    }

    /// Events other replicas recorded, to show here too (a shared store only).
    fn subscribe_events(&self) -> Option<mpsc::Receiver<Event>> {
        None
    }

    /// What this replica tells the fleet (see [`fleet::Report`]); the store publishes the
    /// newest one in the background. Never waits.
    fn report(&self, report: fleet::Report) {
        let _ = report;
    }

    /// The fleet as last read from the store; `None` for a single replica.
    fn fleet(&self) -> Option<Arc<fleet::FleetView>> {
        None
    }
}

/// `Conflict` for the first commit of `batch` whose service moved past its expected version.
pub fn check_expected(
    batch: &[Commit],
    versions: &HashMap<String, u64>,
) -> Result<(), CommitError> {
    for c in batch {
        let current = versions.get(&c.service).copied().unwrap_or(0);
        if current != c.expected {
            return Err(CommitError::Conflict {
                service: c.service.clone(),
                current,
            });
        }
    }
    Ok(())
}

/// Appends `revision` to a bounded, shared history (the loop's, which readers see).
pub fn push_bounded_arc(
    history: &mut VecDeque<std::sync::Arc<Revision>>,
    revision: std::sync::Arc<Revision>,
) {
    if history.len() == HISTORY_KEPT {
        history.pop_front();
    }
    history.push_back(revision);
}

/// Appends `revision` to a bounded history.
pub fn push_bounded(history: &mut VecDeque<Revision>, revision: Revision) {
    if history.len() == HISTORY_KEPT {
        history.pop_front();
    }
    history.push_back(revision);
}
