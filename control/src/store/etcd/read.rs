//! Reading what the fleet's etcd holds: everything at start (or after a controller restart),
//! and one service after a race lost to another replica.
//!
//! Damage is never fatal: a state this binary cannot read is reported and the service starts
//! from the config (its next change replaces the key); history and events are read up to the
//! newest [`HISTORY_KEPT`] and [`EVENTS_KEPT`].

use std::sync::atomic::Ordering;

use etcd_client::{GetOptions, SortOrder, SortTarget};
use tokio::time::Instant;

use super::{keys, within, Inner, Stored, StoredEvent, LOAD_MAX};
use crate::events::Event;
use crate::store::{CommitError, Loaded, Remote, Revision, EVENTS_KEPT, HISTORY_KEPT};

impl Inner {
    pub(super) async fn load(&self, deadline: Instant) -> Result<Loaded, String> {
        let deadline = deadline.min(Instant::now() + LOAD_MAX);
        let mut kv = self.client.kv_client();
        let mut loaded = Loaded::default();
        let resp = within(
            deadline,
            kv.get(self.keys.states(), Some(GetOptions::new().with_prefix())),
        )
        .await
        .map_err(|e| self.failed("commit", &e).to_string())?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut services = Vec::new();
        for item in resp.kvs() {
            let Ok(key) = item.key_str() else { continue };
            let Some(keys::Key::State(service)) = self.keys.parse(key) else {
                continue;
            };
            let service = service.to_string();
            loaded.versions.insert(
                service.clone(),
                u64::try_from(item.mod_revision()).unwrap_or(0),
            );
            match serde_json::from_slice::<Stored>(item.value()) {
                Ok(stored) => {
                    loaded.state.services.insert(service.clone(), stored.state);
                }
                Err(e) => loaded.warnings.push(format!(
                    "etcd key {key} does not hold a service state ({e}); the service starts \
                     from the config and its next change replaces the key"
                )),
            }
            services.push(service);
        }
        for service in services {
            let history = self
                .history(&service, 0, Some(revision), deadline)
                .await
                .map_err(|e| e.to_string())?;
            loaded.history.insert(service, history.into());
        }
        loaded.events = self.load_events(revision, deadline).await?;
        self.seen.store(revision, Ordering::SeqCst);
        if let Some(cache) = &self.cache {
            cache.loaded(&loaded, revision);
        }
        self.set_health(None);
        Ok(loaded)
    }

    /// The newest [`HISTORY_KEPT`] revisions of `service` with an id above `after`, oldest
    /// first.
    pub(super) async fn history(
        &self,
        service: &str,
        after: u64,
        at: Option<i64>,
        deadline: Instant,
    ) -> Result<Vec<Revision>, CommitError> {
        let mut options = GetOptions::new()
            .with_range(keys::prefix_end(&self.keys.histories(service)))
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(HISTORY_KEPT as i64);
        if let Some(at) = at {
            options = options.with_revision(at);
        }
        let resp = within(
            deadline,
            self.client
                .kv_client()
                .get(self.keys.history(service, after + 1), Some(options)),
        )
        .await
        .map_err(|e| self.failed("commit", &e))?;
        let mut revisions: Vec<Revision> = resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        revisions.reverse();
        Ok(revisions)
    }

    /// Every replica's recent events, oldest first, numbered for this replica's log.
    async fn load_events(&self, at: i64, deadline: Instant) -> Result<Vec<Event>, String> {
        let resp = within(
            deadline,
            self.client.kv_client().get(
                self.keys.events(),
                Some(GetOptions::new().with_prefix().with_revision(at)),
            ),
        )
        .await
        .map_err(|e| self.failed("commit", &e).to_string())?;
        let mut events: Vec<Event> = Vec::new();
        for item in resp.kvs() {
            let Some(keys::Key::Event(replica, seq)) =
                item.key_str().ok().and_then(|k| self.keys.parse(k))
            else {
                continue;
            };
            if replica == self.me {
                self.event_seq.fetch_max(seq, Ordering::SeqCst);
            }
            if let Ok(stored) = serde_json::from_slice::<StoredEvent>(item.value()) {
                events.push(stored.event);
            }
        }
        events.sort_by(|a, b| a.at.cmp(&b.at));
        let skip = events.len().saturating_sub(EVENTS_KEPT);
        Ok(events
            .into_iter()
            .skip(skip)
            .enumerate()
            .map(|(i, e)| Event {
                id: i as u64 + 1,
                ..e
            })
            .collect())
    }

    pub(super) async fn read(
        &self,
        service: &str,
        after: u64,
        deadline: Instant,
    ) -> Result<Remote, CommitError> {
        if let Some(e) = self.unavailable() {
            return Err(e);
        }
        let resp = within(
            deadline,
            self.client.kv_client().get(self.keys.state(service), None),
        )
        .await
        .map_err(|e| self.failed("commit", &e))?;
        let (version, stored) = match resp.kvs().first() {
            Some(kv) => (
                u64::try_from(kv.mod_revision()).unwrap_or(0),
                serde_json::from_slice::<Stored>(kv.value()).ok(),
            ),
            None => (0, None),
        };
        let revisions = self.history(service, after, None, deadline).await?;
        Ok(Remote {
            service: service.to_string(),
            version,
            committed_at: stored.as_ref().map(|s| s.at),
            state: stored.map(|s| s.state).unwrap_or_default(),
            revisions,
        })
    }
}
