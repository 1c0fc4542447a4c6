//! Durable state: what the controller decided, written before anything is acknowledged.
//!
//! Two files in `state_dir` (DESIGN §6):
//! - `state.json` — the current desired state (live weights with the release they were set
//!   for, rolled-back releases, rollout progress, settled releases). Rewritten whole with
//!   write-temp → fsync → rename → fsync-dir, so it is always either the old or the new file.
//! - `revisions.jsonl` — the append-only history of weight changes, one JSON object a line,
//!   fsync'd on every append. It is written *before* `state.json`, so after a crash between
//!   the two the newest revision is in the log and [`Store::open`] replays it into the state.
//! - `events.jsonl` — recent rollout events (not fsync'd: events explain, they don't decide).
//!
//! Anything unreadable is renamed aside (`.corrupt-<unix time>`), reported, and the proxy
//! starts from the config: a bad file never stops the proxy and is never deleted.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::events::Event;
use crate::rollout::RolloutRecord;

/// Who made a revision (SPEC §7 history `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The config file (start-up or reload).
    Config,
    /// The control API.
    Api,
    /// A rollback decided by canary analysis (thresholds or fast-fail).
    Analysis,
    /// A rollback because every canary backend failed its health checks.
    Health,
    /// A scheduled rollout step or the promotion at its end.
    Rollout,
}

/// One entry of a service's history: the weights from then on, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub id: u64,
    pub service: String,
    /// RFC 3339, UTC.
    pub at: String,
    pub source: Source,
    pub reason: String,
    pub weights: BTreeMap<String, u32>,
}

/// A version's live weight and the release it was set for: a new release resets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveWeight {
    pub weight: u32,
    pub release: String,
}

/// Everything decided about one service beyond its config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    /// Id of the newest revision.
    pub revision: u64,
    pub weights: BTreeMap<String, LiveWeight>,
    /// Version → the release that was rolled back (stays at 0% while the release matches).
    pub rolled_back: BTreeMap<String, String>,
    /// The current or last rollout.
    pub rollout: Option<RolloutRecord>,
    /// Version → release when the last rollout finished; a canary whose release differs
    /// starts a new rollout.
    pub settled: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    pub services: BTreeMap<String, ServiceState>,
}

/// What [`Store::open`] found on disk.
#[derive(Debug, Default)]
pub struct Loaded {
    pub state: DesiredState,
    pub revisions: Vec<Revision>,
    pub events: Vec<Event>,
    /// Problems found and handled (files kept aside, torn lines dropped), for the log.
    pub warnings: Vec<String>,
}

/// The state directory; `None` keeps everything in memory (no `state_dir` configured).
#[derive(Debug, Clone)]
pub struct Store {
    dir: Option<PathBuf>,
}

const STATE: &str = "state.json";
const REVISIONS: &str = "revisions.jsonl";
const EVENTS: &str = "events.jsonl";
/// Events kept in memory and read back at start.
pub const EVENTS_KEPT: usize = 1000;

impl Store {
    pub fn in_memory() -> Store {
        Store { dir: None }
    }

    /// Opens (creating) the state directory and reads what it holds.
    pub fn open(dir: Option<&Path>) -> Result<(Store, Loaded), String> {
        let Some(dir) = dir else {
            return Ok((Store::in_memory(), Loaded::default()));
        };
        fs::create_dir_all(dir)
            .map_err(|e| format!("state_dir {}: cannot create it: {e}", dir.display()))?;
        let store = Store {
            dir: Some(dir.to_path_buf()),
        };
        let mut loaded = Loaded::default();
        store.read_state(dir, &mut loaded);
        store.read_revisions(dir, &mut loaded);
        loaded.events = read_jsonl::<Event>(&dir.join(EVENTS), &mut loaded.warnings);
        let skip = loaded.events.len().saturating_sub(EVENTS_KEPT);
        loaded.events.drain(..skip);
        // A revision appended just before a crash, but not yet in state.json: replay it.
        for r in &loaded.revisions {
            let svc = loaded.state.services.entry(r.service.clone()).or_default();
            if r.id > svc.revision {
                svc.revision = r.id;
                for (version, weight) in &r.weights {
                    if let Some(live) = svc.weights.get_mut(version) {
                        live.weight = *weight;
                    }
                }
            }
        }
        Ok((store, loaded))
    }

    fn read_state(&self, dir: &Path, loaded: &mut Loaded) {
        let path = dir.join(STATE);
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<DesiredState>(&bytes) {
                Ok(state) => loaded.state = state,
                Err(e) => {
                    let aside = keep_aside(&path);
                    loaded.warnings.push(format!(
                        "{}: corrupt ({e}); kept aside as {}; starting from the config",
                        path.display(),
                        aside
                    ));
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => loaded.warnings.push(format!(
                "{}: unreadable ({e}); starting from the config",
                path.display()
            )),
        }
    }

    fn read_revisions(&self, dir: &Path, loaded: &mut Loaded) {
        let path = dir.join(REVISIONS);
        let Ok(file) = File::open(&path) else {
            return;
        };
        let mut good_bytes = 0u64;
        let mut torn = false;
        for line in BufReader::new(file).split(b'\n') {
            let Ok(line) = line else {
                torn = true;
                break;
            };
            match serde_json::from_slice::<Revision>(&line) {
                Ok(r) => {
                    good_bytes += line.len() as u64 + 1;
                    loaded.revisions.push(r);
                }
                Err(_) => {
                    torn = true;
                    break;
                }
            }
        }
        if torn {
            // A line cut by a crash mid-append was never acknowledged: drop it (the original
            // is kept aside), so the next append starts on a clean line.
            let aside = keep_aside_copy(&path);
            let truncated = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(good_bytes).and_then(|_| f.sync_all()));
            loaded.warnings.push(format!(
                "{}: unreadable data after revision {} dropped (copy kept as {aside}){}",
                path.display(),
                loaded.revisions.last().map_or(0, |r| r.id),
                truncated
                    .err()
                    .map(|e| format!("; truncate failed: {e}"))
                    .unwrap_or_default()
            ));
        }
    }

    /// Appends a revision and fsyncs it (before `state.json` is written).
    pub fn append_revision(&self, revision: &Revision) -> io::Result<()> {
        self.append(REVISIONS, revision, true)
    }

    /// Appends an event (no fsync).
    pub fn append_event(&self, event: &Event) -> io::Result<()> {
        self.append(EVENTS, event, false)
    }

    fn append(&self, name: &str, value: &impl Serialize, sync: bool) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))?;
        file.write_all(&line)?;
        if sync {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Replaces `state.json` atomically: temp file, fsync, rename, fsync the directory.
    pub fn save_state(&self, state: &DesiredState) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        let tmp = dir.join(format!("{STATE}.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, dir.join(STATE))?;
        File::open(dir)?.sync_all()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Renames a bad file aside; returns the new name (or why it could not).
fn keep_aside(path: &Path) -> String {
    let aside = PathBuf::from(format!("{}.corrupt-{}", path.display(), unix_now()));
    match fs::rename(path, &aside) {
        Ok(()) => aside.display().to_string(),
        Err(e) => format!("(rename failed: {e})"),
    }
}

/// Copies a file aside before it is repaired in place.
fn keep_aside_copy(path: &Path) -> String {
    let aside = PathBuf::from(format!("{}.corrupt-{}", path.display(), unix_now()));
    match fs::copy(path, &aside) {
        Ok(_) => aside.display().to_string(),
        Err(e) => format!("(copy failed: {e})"),
    }
}

/// Reads a JSON-lines file, skipping lines that do not parse (reported once).
fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path, warnings: &mut Vec<String>) -> Vec<T> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut bad = 0;
    for line in BufReader::new(file).lines() {
        match line.ok().and_then(|l| serde_json::from_str(&l).ok()) {
            Some(v) => out.push(v),
            None => bad += 1,
        }
    }
    if bad > 0 {
        warnings.push(format!(
            "{}: {bad} unreadable line(s) skipped",
            path.display()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(id: u64, blue: u32, green: u32) -> Revision {
        Revision {
            id,
            service: "api".into(),
            at: "2026-11-28T12:00:00Z".into(),
            source: Source::Api,
            reason: "test".into(),
            weights: [("blue".to_string(), blue), ("green".to_string(), green)].into(),
        }
    }

    fn state_with(revision: u64, blue: u32, green: u32) -> DesiredState {
        let live = |weight| LiveWeight {
            weight,
            release: "v1".into(),
        };
        let svc = ServiceState {
            revision,
            weights: [("blue".into(), live(blue)), ("green".into(), live(green))].into(),
            ..ServiceState::default()
        };
        DesiredState {
            services: [("api".to_string(), svc)].into(),
        }
    }

    #[test]
    fn state_and_revisions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (store, loaded) = Store::open(Some(dir.path())).unwrap();
        assert!(loaded.revisions.is_empty() && loaded.warnings.is_empty());
        store.append_revision(&revision(1, 90, 10)).unwrap();
        store.save_state(&state_with(1, 90, 10)).unwrap();
        let (_, loaded) = Store::open(Some(dir.path())).unwrap();
        assert_eq!(loaded.state, state_with(1, 90, 10));
        assert_eq!(loaded.revisions, vec![revision(1, 90, 10)]);
    }

    #[test]
    fn a_revision_logged_before_a_crash_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(Some(dir.path())).unwrap();
        store.append_revision(&revision(1, 90, 10)).unwrap();
        store.save_state(&state_with(1, 90, 10)).unwrap();
        // Crash after the log append, before state.json was rewritten.
        store.append_revision(&revision(2, 50, 50)).unwrap();
        let (_, loaded) = Store::open(Some(dir.path())).unwrap();
        let api = &loaded.state.services["api"];
        assert_eq!(api.revision, 2);
        assert_eq!(api.weights["green"].weight, 50);
    }

    #[test]
    fn corrupt_state_is_kept_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE), b"{ not json").unwrap();
        let (_, loaded) = Store::open(Some(dir.path())).unwrap();
        assert_eq!(loaded.state, DesiredState::default());
        assert!(
            loaded.warnings[0].contains("corrupt"),
            "{:?}",
            loaded.warnings
        );
        let kept: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("state.json.corrupt-")
            })
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(fs::read(kept[0].path()).unwrap(), b"{ not json");
    }

    #[test]
    fn a_torn_last_revision_line_is_dropped_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(Some(dir.path())).unwrap();
        store.append_revision(&revision(1, 90, 10)).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(REVISIONS))
            .unwrap();
        f.write_all(b"{\"id\":2,\"serv").unwrap();
        let (store, loaded) = Store::open(Some(dir.path())).unwrap();
        assert_eq!(loaded.revisions.len(), 1);
        assert_eq!(loaded.warnings.len(), 1);
        store.append_revision(&revision(2, 50, 50)).unwrap();
        let (_, loaded) = Store::open(Some(dir.path())).unwrap();
        assert_eq!(loaded.revisions.len(), 2);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    /// The fuzz target `state_load`, in miniature: mutated state files never stop the start,
    /// and whatever is loaded survives a save and a reload unchanged.
    #[test]
    fn mutated_state_files_are_loaded_or_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let state = serde_json::to_vec(&state_with(3, 70, 30)).unwrap();
        let revisions: Vec<u8> = [
            revision(1, 100, 0),
            revision(2, 90, 10),
            revision(3, 70, 30),
        ]
        .iter()
        .flat_map(|r| {
            let mut line = serde_json::to_vec(r).unwrap();
            line.push(b'\n');
            line
        })
        .collect();
        let mut m = crate::mutate::Mutator::new(0x57a7e);
        for _ in 0..300 {
            let _ = fs::remove_dir_all(dir.path());
            fs::create_dir_all(dir.path()).unwrap();
            fs::write(dir.path().join(STATE), m.mutate(&state)).unwrap();
            fs::write(dir.path().join(REVISIONS), m.mutate(&revisions)).unwrap();
            let (store, loaded) = Store::open(Some(dir.path())).expect("never refuses to start");
            store.save_state(&loaded.state).unwrap();
            let (_, again) = Store::open(Some(dir.path())).unwrap();
            assert_eq!(again.state, loaded.state);
        }
    }
}
