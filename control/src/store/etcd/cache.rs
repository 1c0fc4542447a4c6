//! `state_dir` in fleet mode (SPEC §11): a cache of what this replica last knew from etcd, so
//! a replica that (re)starts while etcd is unreachable serves the fleet's last weights and
//! rollback decisions instead of its config file's.
//!
//! etcd stays the truth. The cache holds, per service, the newest state this replica saw in
//! etcd (loaded, committed by itself, or delivered by the watch) with its etcd version, and
//! the revision the watch had reached. It is only read when etcd cannot be loaded at start;
//! the watch then starts from that revision, so whatever was committed meanwhile arrives and
//! wins as usual (a replica never commits on top of the cache without etcd checking the
//! version). History and events are not cached: they come back with etcd.
//!
//! Written off the loop and the data path: at most once a second, only when something
//! changed, on the blocking pool, to a temp file renamed over `fleet-cache.json`. A cache
//! that cannot be written or read is logged and otherwise ignored — it never decides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{Loaded, ServiceState};

/// The cache's file in `state_dir`.
pub const FILE: &str = "fleet-cache.json";
/// How often a changed cache is written.
const EVERY: Duration = Duration::from_secs(1);

/// What the file holds.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Doc {
    /// The fleet's prefix: a cache of another fleet is not used.
    prefix: String,
    /// The newest etcd revision this replica had applied everything up to.
    revision: i64,
    services: BTreeMap<String, Cached>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    /// etcd's version (`mod_revision`) of the service's key.
    version: u64,
    state: ServiceState,
}

pub(super) struct Cache {
    path: PathBuf,
    doc: Mutex<Doc>,
    dirty: AtomicBool,
}

impl Cache {
    pub(super) fn new(state_dir: &Path, prefix: &str) -> Arc<Cache> {
        Arc::new(Cache {
            path: state_dir.join(FILE),
            doc: Mutex::new(Doc {
                prefix: prefix.to_string(),
                ..Doc::default()
            }),
            dirty: AtomicBool::new(false),
        })
    }

    fn doc(&self) -> std::sync::MutexGuard<'_, Doc> {
        self.doc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything as loaded from etcd at `revision`.
    pub(super) fn loaded(&self, loaded: &Loaded, revision: i64) {
        let mut doc = self.doc();
        doc.revision = revision;
        doc.services = loaded
            .state
            .services
            .iter()
            .map(|(svc, state)| {
                let version = loaded.versions.get(svc).copied().unwrap_or(0);
                let state = state.clone();
                (svc.clone(), Cached { version, state })
            })
            .collect();
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// One service's state at etcd version `version` (kept if newer than what is cached).
    pub(super) fn put(&self, service: &str, version: u64, state: &ServiceState) {
        let mut doc = self.doc();
        if doc
            .services
            .get(service)
            .is_some_and(|c| c.version >= version)
        {
            return;
        }
        let state = state.clone();
        doc.services
            .insert(service.to_string(), Cached { version, state });
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// The watch has delivered everything up to `revision`.
    pub(super) fn seen(&self, revision: i64) {
        let mut doc = self.doc();
        if revision > doc.revision {
            doc.revision = revision;
            self.dirty.store(true, Ordering::SeqCst);
        }
    }

    /// What the file holds, as a [`Loaded`] and the revision to watch from; `None` without a
    /// usable file (none yet, unreadable, or another fleet's).
    pub(super) fn read(&self) -> Option<(Loaded, i64)> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "fleet cache unreadable: {e}");
                return None;
            }
        };
        let doc: Doc = match serde_json::from_slice(&text) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "fleet cache is not valid: {e}");
                return None;
            }
        };
        let prefix = self.doc().prefix.clone();
        if doc.prefix != prefix {
            tracing::warn!(path = %self.path.display(), cached = %doc.prefix, %prefix, "fleet cache is of another fleet; not used");
            return None;
        }
        let mut loaded = Loaded::default();
        for (svc, c) in &doc.services {
            loaded.versions.insert(svc.clone(), c.version);
            loaded.state.services.insert(svc.clone(), c.state.clone());
        }
        *self.doc() = doc.clone();
        Some((loaded, doc.revision))
    }

    /// Writes the cache whenever it changed, at most once per [`EVERY`], for as long as the
    /// process runs.
    pub(super) async fn run(self: Arc<Cache>) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            if !self.dirty.swap(false, Ordering::SeqCst) {
                continue;
            }
            let text = serde_json::to_vec(&*self.doc()).unwrap_or_default();
            let path = self.path.clone();
            let written = tokio::task::spawn_blocking(move || write(&path, &text)).await;
            match written {
                Ok(Ok(())) => {
                    if failing {
                        tracing::info!(path = %self.path.display(), "fleet cache written again");
                    }
                    failing = false;
                }
                Ok(Err(e)) => {
                    if !failing {
                        tracing::warn!(path = %self.path.display(), "cannot write the fleet cache (etcd keeps the state; a start without etcd would use the config): {e}");
                    }
                    failing = true;
                    self.dirty.store(true, Ordering::SeqCst);
                }
                Err(_) => return, // the runtime is shutting down
            }
        }
    }
}

/// Temp file, fsync, rename over: a crash leaves the old cache or the new one, never half.
fn write(path: &Path, text: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(revision: u64) -> ServiceState {
        ServiceState {
            revision,
            ..ServiceState::default()
        }
    }

    #[test]
    fn keeps_the_newest_version_and_reads_back_only_its_own_fleet() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), "/switchyard/a");
        assert!(cache.read().is_none(), "no file yet");
        cache.put("api", 7, &state(3));
        cache.put("api", 5, &state(2)); // older: ignored
        cache.seen(9);
        write(&cache.path, &serde_json::to_vec(&*cache.doc()).unwrap()).unwrap();

        let (loaded, revision) = Cache::new(dir.path(), "/switchyard/a").read().unwrap();
        assert_eq!(revision, 9);
        assert_eq!(loaded.versions["api"], 7);
        assert_eq!(loaded.state.services["api"].revision, 3);
        assert!(Cache::new(dir.path(), "/switchyard/b").read().is_none());
        std::fs::write(&cache.path, "{").unwrap();
        assert!(cache.read().is_none(), "a broken file is not used");
    }
}
