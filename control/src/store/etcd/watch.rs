//! What other replicas commit, as it happens: one etcd watch over `events/`..`state/`,
//! from the revision after the last one this replica saw, turned into [`Remote`]s for the
//! run loop (and events for its log).
//!
//! A broken watch (etcd restarted, the network dropped) is opened again from the last
//! revision seen, so nothing is skipped; if etcd compacted that revision away, the watch
//! reads every service again instead (resync) and carries on from there. A stopped etcd
//! just means no events: nothing here waits on the data path or the API.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::mpsc;

use super::keys::Key;
use super::{within, Inner, Stored, StoredEvent};
use crate::store::{Remote, Revision};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub(super) async fn run(inner: Arc<Inner>, tx: mpsc::Sender<Remote>, mut from: i64) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match watch(&inner, &tx, &mut from).await {
            Ok(()) => return, // the loop is gone
            Err(e) => {
                metrics::counter!("switchyard_fleet_store_errors_total", "op" => "watch")
                    .increment(1);
                tracing::warn!(from, "etcd watch interrupted ({e}); watching again");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One watch stream; `Ok` only when the loop dropped its receiver.
async fn watch(inner: &Inner, tx: &mpsc::Sender<Remote>, from: &mut i64) -> Result<(), String> {
    let (start, end) = inner.keys.watched();
    let options = WatchOptions::new()
        .with_range(end)
        .with_start_revision(*from)
        .with_progress_notify();
    let deadline = tokio::time::Instant::now() + inner.dial_timeout;
    let mut stream = within(
        deadline,
        inner.client.watch_client().watch(start, Some(options)),
    )
    .await?;
    loop {
        let Some(resp) = stream.message().await.map_err(|e| e.to_string())? else {
            return Err("the watch stream ended".into());
        };
        if resp.compact_revision() > 0 || resp.canceled() {
            tracing::warn!(
                from = *from,
                compacted = resp.compact_revision(),
                "etcd compacted the revisions this replica had not seen; reading everything again"
            );
            *from = resync(inner, tx).await? + 1;
            return Err("resynced after compaction".into());
        }
        let mut group = Grouper::default();
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            *from = (*from).max(kv.mod_revision() + 1);
            if event.event_type() != EventType::Put {
                continue;
            }
            let Some(key) = kv.key_str().ok().and_then(|k| inner.keys.parse(k)) else {
                continue;
            };
            match key {
                Key::State(service) => group.state(service, kv.mod_revision(), kv.value()),
                Key::History(service, _) => {
                    if let Ok(r) = serde_json::from_slice(kv.value()) {
                        group.history(service, kv.mod_revision(), r);
                    }
                }
                Key::Event(replica, _) if replica != inner.me => {
                    if let Ok(stored) = serde_json::from_slice::<StoredEvent>(kv.value()) {
                        let to = Inner::lock(&inner.remote_events).clone();
                        if let Some(to) = to {
                            let _ = to.try_send(stored.event);
                        }
                    }
                }
                _ => {}
            }
        }
        for remote in group.take() {
            if !inner.deliver(tx, remote).await {
                return Ok(());
            }
        }
        inner.saw(*from - 1);
    }
}

/// Reads every service as etcd holds it now and hands each to the loop (which keeps what
/// it has already applied); returns the revision read at.
async fn resync(inner: &Inner, tx: &mpsc::Sender<Remote>) -> Result<i64, String> {
    let deadline = tokio::time::Instant::now() + inner.dial_timeout * 2;
    let resp = within(
        deadline,
        inner
            .client
            .kv_client()
            .get(inner.keys.states(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    for kv in resp.kvs() {
        let Some(Key::State(service)) = kv.key_str().ok().and_then(|k| inner.keys.parse(k)) else {
            continue;
        };
        let mut group = Grouper::default();
        for r in inner
            .history(service, 0, Some(revision), deadline)
            .await
            .map_err(|e| e.to_string())?
        {
            group.history(service, kv.mod_revision(), r);
        }
        group.state(service, kv.mod_revision(), kv.value());
        for remote in group.take() {
            if !inner.deliver(tx, remote).await {
                return Ok(revision);
            }
        }
    }
    inner.saw(revision);
    Ok(revision)
}

/// Remotes of one watch response, in revision order: state puts with the history entries
/// their transaction wrote.
#[derive(Default)]
struct Grouper {
    history: HashMap<(String, i64), Vec<Revision>>,
    ready: BTreeMap<i64, Vec<Remote>>,
}

impl Grouper {
    fn history(&mut self, service: &str, revision: i64, r: Revision) {
        self.history
            .entry((service.to_string(), revision))
            .or_default()
            .push(r);
    }

    fn state(&mut self, service: &str, revision: i64, value: &[u8]) {
        let mut revisions = self
            .history
            .remove(&(service.to_string(), revision))
            .unwrap_or_default();
        revisions.sort_by_key(|r| r.id);
        let Ok(stored) = serde_json::from_slice::<Stored>(value) else {
            tracing::warn!(
                service,
                revision,
                "etcd holds a state this replica cannot read"
            );
            return;
        };
        self.ready.entry(revision).or_default().push(Remote {
            service: service.to_string(),
            version: u64::try_from(revision).unwrap_or(0),
            state: stored.state,
            revisions,
            committed_at: Some(stored.at),
        });
    }

    fn take(&mut self) -> VecDeque<Remote> {
        // History keys whose state never came are from an older binary's partial write:
        // forget them after the response that carried them.
        self.history.clear();
        std::mem::take(&mut self.ready)
            .into_values()
            .flatten()
            .collect()
    }
}
