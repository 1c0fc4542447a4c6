//! A store that keeps everything in memory: the store of a proxy without `state_dir`, and the
//! store of unit tests, which can make it refuse commits ([`MemoryStore::fail`]) or race with
//! another writer ([`MemoryStore::bump`]) to exercise the loop's refusal paths.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    check_expected, push_bounded, Commit, CommitError, DesiredState, Fence, Loaded, Remote,
    Revision, StateStore, StoreFuture, EVENTS_KEPT,
};
use crate::events::Event;

#[derive(Debug, Default)]
struct Inner {
    state: DesiredState,
    history: HashMap<String, VecDeque<Revision>>,
    versions: HashMap<String, u64>,
    events: VecDeque<Event>,
    /// While set, every commit is refused with this reason.
    failing: Option<String>,
    commits: u64,
}

/// See the module doc. Clones share the same memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// Kept so `subscribe`'s receiver never ends.
    remote: Arc<Mutex<Vec<mpsc::Sender<Remote>>>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Refuses every commit with `reason` until called with `None`.
    pub fn fail(&self, reason: Option<&str>) {
        self.lock().failing = reason.map(str::to_string);
    }

    /// Moves a service's version as if another replica had committed (for conflict tests).
    pub fn bump(&self, service: &str) {
        *self.lock().versions.entry(service.to_string()).or_default() += 1;
    }

    /// Commits taken so far.
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }

    /// A copy of what the store holds.
    pub fn snapshot(&self) -> Loaded {
        let inner = self.lock();
        Loaded {
            state: inner.state.clone(),
            history: inner.history.clone(),
            versions: inner.versions.clone(),
            events: inner.events.iter().cloned().collect(),
            warnings: Vec::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking test thread must not poison the store for the next assertion.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn load(&self, _deadline: Instant) -> StoreFuture<'_, Result<Loaded, String>> {
        let loaded = self.snapshot();
        Box::pin(async move { Ok(loaded) })
    }

    fn commit(
        &self,
        batch: Vec<Commit>,
        _fence: Fence,
        _deadline: Instant,
    ) -> StoreFuture<'_, Result<Vec<u64>, CommitError>> {
        let result = (|| {
            let mut inner = self.lock();
            if let Some(why) = &inner.failing {
                return Err(CommitError::Unavailable(why.clone()));
            }
            check_expected(&batch, &inner.versions)?;
            let mut versions = Vec::with_capacity(batch.len());
            for c in batch {
                let v = inner.versions.entry(c.service.clone()).or_default();
                *v += 1;
                versions.push(*v);
                let history = inner.history.entry(c.service.clone()).or_default();
                for r in c.revisions {
                    push_bounded(history, r);
                }
                inner.state.services.insert(c.service, c.state);
            }
            inner.commits += 1;
            Ok(versions)
        })();
        Box::pin(async move { result })
    }

    fn record_event(&self, event: &Event) {
        let mut inner = self.lock();
        if inner.events.len() == EVENTS_KEPT {
            inner.events.pop_front();
        }
        inner.events.push_back(event.clone());
    }

    fn subscribe(&self) -> mpsc::Receiver<Remote> {
        let (tx, rx) = mpsc::channel(1);
        self.remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }
}
