//! The file store: `state_dir` on one replica (DESIGN §6, SPEC §8 and §16).
//!
//! - `revisions.jsonl` — the append-only history, one JSON revision a line, fsync'd.
//! - `state.json` — every service's current state plus `log_bytes`, the length of the log it
//!   goes with; replaced atomically (temp file, fsync, rename, fsync dir). **Writing it is the
//!   commit point.** A commit appends its lines, then writes `state.json`; if either fails,
//!   the log is cut back to its committed length, so a refused change leaves no line behind.
//!   Bytes past `log_bytes` found at start (a crash between the two writes, or a cut that
//!   failed) were never acknowledged: they are dropped (a copy is kept aside), so they never
//!   become live and their revision ids are never used twice.
//! - `events.jsonl` — recent events, appended by a writer thread (not fsync'd).
//!
//! Damage is never fatal and never deleted: a `state.json` that does not parse, or is a
//! directory, or cannot be read, is renamed aside (`.corrupt-<unix time>`); a revision line
//! that does not parse is skipped (the lines after it are kept) and reported. Every problem
//! is in [`Loaded::warnings`], which `GET /api/v1/status` shows.
//!
//! Blocking file I/O runs on the blocking pool under one lock, and every call is bounded by its
//! deadline: a write that finishes after the caller gave up is undone, because the caller
//! has already reported it as refused.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    check_expected, Commit, CommitError, DesiredState, Fence, Loaded, Remote, ServiceState,
    StateStore, StoreFuture,
};
use crate::events::Event;

const STATE: &str = "state.json";
const REVISIONS: &str = "revisions.jsonl";
const EVENTS: &str = "events.jsonl";

/// `state.json` on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    #[serde(flatten)]
    state: DesiredState,
    /// Bytes of `revisions.jsonl` this state was committed with; `None` in files written
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_bytes: Option<u64>,
}

/// What the store believes is on disk.
#[derive(Debug, Default)]
struct Disk {
    dir: PathBuf,
    state: DesiredState,
    /// Committed length of the revision log.
    log_len: u64,
    versions: HashMap<String, u64>,
}

/// The state directory. Clones share one writer.
#[derive(Debug, Clone)]
pub struct FileStore {
    disk: Arc<Mutex<Disk>>,
    events: mpsc::Sender<Event>,
    remote: Arc<Mutex<Option<mpsc::Sender<Remote>>>>,
}

/// What a commit changed, to undo it when its caller gave up waiting.
struct Undo {
    log_len: u64,
    services: Vec<(String, Option<ServiceState>, u64)>,
}

/// The hand-over between a blocking job and the future waiting for it.
struct Slot<T> {
    done: Option<T>,
    abandoned: bool,
}

impl FileStore {
    /// A store on `dir`. Nothing is read or written until [`StateStore::load`].
    pub fn new(dir: &Path) -> FileStore {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Event>(1024);
        let (events, mut async_rx) = mpsc::channel::<Event>(1024);
        let path = dir.join(EVENTS);
        // One writer thread keeps events in order and off the loop's thread; a bridge moves
        // them from the async channel (never blocks the sender).
        std::thread::Builder::new()
            .name("switchyard-events".into())
            .spawn(move || {
                while let Ok(event) = rx.recv() {
                    if let Err(e) = append_line(&path, &event, false) {
                        tracing::warn!(error = %e, "cannot append to {}", path.display());
                    }
                }
            })
            .ok();
        std::thread::Builder::new()
            .name("switchyard-events-bridge".into())
            .spawn(move || {
                while let Some(event) = async_rx.blocking_recv() {
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            })
            .ok();
        FileStore {
            disk: Arc::new(Mutex::new(Disk {
                dir: dir.to_path_buf(),
                ..Disk::default()
            })),
            events,
            remote: Arc::default(),
        }
    }

    /// Runs `job` on the blocking pool under the disk lock, waiting until `deadline`. A job
    /// that finishes after the deadline calls `undo` with its own result instead of handing
    /// it over.
    async fn blocking<T: Send + 'static>(
        &self,
        deadline: Instant,
        job: impl FnOnce(&mut Disk) -> T + Send + 'static,
        undo: impl FnOnce(&mut Disk, T) + Send + 'static,
    ) -> Option<T> {
        let slot = Arc::new(Mutex::new(Slot {
            done: None,
            abandoned: false,
        }));
        let (disk, job_slot) = (Arc::clone(&self.disk), Arc::clone(&slot));
        let handle = tokio::task::spawn_blocking(move || {
            let mut disk = disk.lock().unwrap_or_else(|e| e.into_inner());
            let result = job(&mut disk);
            let mut slot = job_slot.lock().unwrap_or_else(|e| e.into_inner());
            if slot.abandoned {
                undo(&mut disk, result);
            } else {
                slot.done = Some(result);
            }
        });
        let _ = tokio::time::timeout_at(deadline, handle).await;
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.done.is_none() {
            slot.abandoned = true;
        }
        slot.done.take()
    }
}

impl StateStore for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn load(&self, deadline: Instant) -> StoreFuture<'_, Result<Loaded, String>> {
        Box::pin(async move {
            self.blocking(deadline, load::load, |_, _| {})
                .await
                .unwrap_or_else(|| Err("the state directory did not answer in time".into()))
        })
    }

    fn commit(
        &self,
        batch: Vec<Commit>,
        _fence: Fence,
        deadline: Instant,
    ) -> StoreFuture<'_, Result<Vec<u64>, CommitError>> {
        Box::pin(async move {
            let outcome = self
                .blocking(
                    deadline,
                    move |disk| commit(disk, batch),
                    |disk, result| {
                        if let Ok((_, undo)) = result {
                            if let Err(e) = revert(disk, undo) {
                                tracing::error!(error = %e, "cannot undo a late state write");
                            }
                        }
                    },
                )
                .await;
            match outcome {
                Some(Ok((versions, _))) => Ok(versions),
                Some(Err(e)) => Err(e),
                None => Err(CommitError::Unavailable(
                    "the state directory did not answer in time".into(),
                )),
            }
        })
    }

    fn record_event(&self, event: &Event) {
        if self.events.try_send(event.clone()).is_err() {
            tracing::warn!("event writer behind; event not written to disk");
        }
    }

    fn subscribe(&self) -> mpsc::Receiver<Remote> {
        let (tx, rx) = mpsc::channel(1);
        *self.remote.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }
}

fn unavailable(dir: &Path, what: &str, e: io::Error) -> CommitError {
    CommitError::Unavailable(format!(
        "cannot write state_dir {}: {what}: {e}",
        dir.display()
    ))
}

/// Appends the batch's revisions, then writes `state.json` (the commit point).
fn commit(disk: &mut Disk, batch: Vec<Commit>) -> Result<(Vec<u64>, Undo), CommitError> {
    check_expected(&batch, &disk.versions)?;
    let mut lines = Vec::new();
    for r in batch.iter().flat_map(|c| &c.revisions) {
        serde_json::to_writer(&mut lines, r)
            .map_err(|e| CommitError::Unavailable(e.to_string()))?;
        lines.push(b'\n');
    }
    let dir = disk.dir.clone();
    let old_len = disk.log_len;
    if !lines.is_empty() {
        append_revisions(&dir, old_len, &lines).map_err(|e| {
            cut_log(&dir, old_len);
            unavailable(&dir, REVISIONS, e)
        })?;
    }
    let new_len = old_len + lines.len() as u64;
    let mut undo = Undo {
        log_len: old_len,
        services: Vec::with_capacity(batch.len()),
    };
    let mut versions = Vec::with_capacity(batch.len());
    for c in batch {
        let version = disk.versions.get(&c.service).copied().unwrap_or(0);
        let old = disk.state.services.insert(c.service.clone(), c.state);
        disk.versions.insert(c.service.clone(), version + 1);
        versions.push(version + 1);
        undo.services.push((c.service, old, version));
    }
    if let Err(e) = save_state(&dir, &disk.state, new_len) {
        let _ = restore(disk, undo);
        cut_log(&dir, old_len);
        return Err(unavailable(&dir, STATE, e));
    }
    disk.log_len = new_len;
    Ok((versions, undo))
}

/// Puts services back as they were before a commit (in memory).
fn restore(disk: &mut Disk, undo: Undo) -> u64 {
    for (service, old, version) in undo.services {
        match old {
            Some(s) => disk.state.services.insert(service.clone(), s),
            None => disk.state.services.remove(&service),
        };
        disk.versions.insert(service, version);
    }
    undo.log_len
}

/// Undoes a commit on disk too.
fn revert(disk: &mut Disk, undo: Undo) -> io::Result<()> {
    let log_len = restore(disk, undo);
    let dir = disk.dir.clone();
    save_state(&dir, &disk.state, log_len)?;
    cut_log(&dir, log_len);
    disk.log_len = log_len;
    Ok(())
}

/// Appends `lines` at `at` (cutting anything a failed commit left past it), then fsyncs.
fn append_revisions(dir: &Path, at: u64, lines: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(REVISIONS))?;
    if file.metadata()?.len() != at {
        file.set_len(at)?;
    }
    file.write_all(lines)?;
    file.sync_data()
}

/// Cuts the log back to its committed length (best effort: the next commit cuts again, and
/// the next start drops anything past `log_bytes`).
fn cut_log(dir: &Path, len: u64) {
    let path = dir.join(REVISIONS);
    if let Ok(file) = OpenOptions::new().write(true).open(&path) {
        if file.metadata().is_ok_and(|m| m.len() > len) {
            let _ = file.set_len(len).and_then(|_| file.sync_data());
        }
    }
}

/// Replaces `state.json` atomically: temp file, fsync, rename, fsync the directory.
fn save_state(dir: &Path, state: &DesiredState, log_bytes: u64) -> io::Result<()> {
    #[derive(Serialize)]
    struct Out<'a> {
        #[serde(flatten)]
        state: &'a DesiredState,
        log_bytes: u64,
    }
    let bytes = serde_json::to_vec(&Out { state, log_bytes }).map_err(io::Error::other)?;
    let tmp = dir.join(format!("{STATE}.tmp"));
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(STATE))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

fn append_line(path: &Path, value: &impl Serialize, sync: bool) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(&line)?;
    if sync {
        file.sync_data()?;
    }
    Ok(())
}

mod load;

#[cfg(test)]
mod tests;
