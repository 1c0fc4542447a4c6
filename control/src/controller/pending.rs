//! What waits for the store: changes toward the stable version applied to traffic at once
//! (DESIGN §7), per service, until the store takes them — with how to decide them again if
//! another replica changed the service first (`race.rs`), and, for a shared store, the
//! effects that belong to whichever replica's commit is taken.

use std::collections::BTreeMap;

use super::race::Redo;
use crate::clock::Millis;
use crate::plan::Effect;
use crate::store::{Fence, Revision, ServiceState};

/// Changes applied to traffic but not yet persisted: per service, the newest state, the
/// revisions made since the last commit, how to decide them again after a lost race, and —
/// for a shared store — their effects, which belong to whichever replica's commit the store
/// takes. Survives a controller restart.
#[derive(Debug, Default)]
pub struct Pending {
    pub(super) services: BTreeMap<String, Waiting>,
    pub(super) next_retry: Millis,
    pub(super) backoff: Millis,
}

/// One service's changes waiting for the store.
#[derive(Debug)]
pub(super) struct Waiting {
    pub(super) state: ServiceState,
    pub(super) revisions: Vec<Revision>,
    pub(super) fence: Fence,
    pub(super) redos: Vec<Redo>,
    /// (revision id, effects) to run once the store took the change (shared stores only).
    pub(super) effects: Vec<(u64, Vec<Effect>)>,
}

impl Waiting {
    pub(super) fn first_revision(&self) -> Option<u64> {
        self.revisions.first().map(|r| r.id)
    }
}

impl Pending {
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub(super) fn queue(
        &mut self,
        service: &str,
        state: ServiceState,
        revision: Option<Revision>,
        fence: Fence,
        redo: Redo,
    ) -> &mut Waiting {
        let entry = self
            .services
            .entry(service.to_string())
            .or_insert_with(|| Waiting {
                state: state.clone(),
                revisions: Vec::new(),
                fence: Fence::Any,
                redos: Vec::new(),
                effects: Vec::new(),
            });
        entry.state = state;
        entry.revisions.extend(revision);
        // Leader-only bookkeeping waits with the fence; anything else any replica may commit.
        entry.fence = if entry.redos.is_empty() || entry.fence == Fence::Leader {
            fence
        } else {
            Fence::Any
        };
        entry.redos.push(redo);
        entry
    }

    pub(super) fn take(&mut self, service: &str) -> Option<Waiting> {
        self.services.remove(service)
    }

    /// Puts back what [`Pending::take`] took (a re-read that failed).
    pub(super) fn put_back(&mut self, service: &str, waiting: Waiting) {
        self.services.insert(service.to_string(), waiting);
    }

    /// The id of the oldest revision of `service` waiting for the store.
    pub(super) fn first_revision(&self, service: &str) -> Option<u64> {
        self.services.get(service)?.first_revision()
    }

    /// The states to lay over what the store holds at a restart.
    pub fn overlay(&self) -> impl Iterator<Item = (&String, &ServiceState, &[Revision])> {
        self.services
            .iter()
            .map(|(k, w)| (k, &w.state, w.revisions.as_slice()))
    }
}
