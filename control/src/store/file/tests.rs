use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::time::Duration;

use super::*;
use crate::store::Revision;
use crate::store::{LiveWeight, Source, HISTORY_KEPT};

fn revision(id: u64, blue: u32, green: u32) -> Revision {
    Revision {
        id,
        service: "api".into(),
        at: "2026-11-28T12:00:00.000Z".into(),
        source: Source::Api,
        reason: "test".into(),
        weights: [("blue".to_string(), blue), ("green".to_string(), green)].into(),
    }
}

fn state(revision: u64, blue: u32, green: u32) -> ServiceState {
    let live = |weight| LiveWeight {
        weight,
        release: "v1".into(),
    };
    ServiceState {
        revision,
        weights: [("blue".into(), live(blue)), ("green".into(), live(green))].into(),
        ..ServiceState::default()
    }
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

async fn open(dir: &Path) -> (FileStore, Loaded) {
    let store = FileStore::new(dir);
    let loaded = store.load(later()).await.expect("load");
    (store, loaded)
}

/// Commits revision `id` of `api` on top of version `expected`.
async fn put(store: &FileStore, expected: u64, id: u64, green: u32) -> Result<u64, CommitError> {
    let batch = vec![Commit {
        service: "api".into(),
        expected,
        state: state(id, 100 - green, green),
        revisions: vec![revision(id, 100 - green, green)],
    }];
    store.commit(batch, Fence::Any, later()).await.map(|v| v[0])
}

fn ids(loaded: &Loaded) -> Vec<u64> {
    loaded
        .history
        .get("api")
        .map(|h| h.iter().map(|r| r.id).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn commits_survive_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (store, loaded) = open(dir.path()).await;
    assert!(loaded.warnings.is_empty() && loaded.history.is_empty());
    assert_eq!(put(&store, 0, 1, 0).await, Ok(1));
    assert_eq!(put(&store, 1, 2, 10).await, Ok(2));
    let (_, loaded) = open(dir.path()).await;
    assert_eq!(loaded.state.services["api"], state(2, 90, 10));
    assert_eq!(ids(&loaded), [1, 2]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[tokio::test]
async fn a_stale_version_is_a_conflict_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    put(&store, 0, 1, 0).await.unwrap();
    assert_eq!(
        put(&store, 0, 2, 50).await,
        Err(CommitError::Conflict {
            service: "api".into(),
            current: 1
        })
    );
    let (_, loaded) = open(dir.path()).await;
    assert_eq!(ids(&loaded), [1]);
}

#[tokio::test]
async fn a_refused_commit_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    put(&store, 0, 1, 0).await.unwrap();
    let log = fs::read(dir.path().join(REVISIONS)).unwrap();
    // state.json cannot be replaced: its temp file's name is taken by a directory.
    fs::create_dir(dir.path().join("state.json.tmp")).unwrap();
    let refused = put(&store, 1, 2, 50).await;
    assert!(
        matches!(&refused, Err(CommitError::Unavailable(why)) if why.contains("state.json")),
        "{refused:?}"
    );
    assert_eq!(
        fs::read(dir.path().join(REVISIONS)).unwrap(),
        log,
        "no line left"
    );
    // The same store takes the next commit once the disk is fine, with the same id.
    fs::remove_dir(dir.path().join("state.json.tmp")).unwrap();
    assert_eq!(put(&store, 1, 2, 20).await, Ok(2));
    let (_, loaded) = open(dir.path()).await;
    assert_eq!(ids(&loaded), [1, 2]);
    assert_eq!(loaded.state.services["api"].weight("green"), 20);
}

#[tokio::test]
async fn bytes_past_the_commit_point_are_dropped_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    put(&store, 0, 1, 0).await.unwrap();
    // A crash after a revision was appended, before state.json took it.
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.path().join(REVISIONS))
        .unwrap();
    f.write_all(&serde_json::to_vec(&revision(2, 50, 50)).unwrap())
        .unwrap();
    f.write_all(b"\n").unwrap();
    let (store, loaded) = open(dir.path()).await;
    assert_eq!(ids(&loaded), [1], "never acknowledged: not history");
    assert_eq!(loaded.state.services["api"].weight("green"), 0);
    assert!(
        loaded.warnings.is_empty(),
        "a crash is not damage: {:?}",
        loaded.warnings
    );
    // Id 2 is free again and appears once.
    put(&store, 0, 2, 10).await.unwrap();
    let (_, loaded) = open(dir.path()).await;
    assert_eq!(ids(&loaded), [1, 2]);
}

#[tokio::test]
async fn a_corrupt_line_in_the_middle_drops_only_that_line() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    for (i, green) in [0, 10, 50].into_iter().enumerate() {
        put(&store, i as u64, i as u64 + 1, green).await.unwrap();
    }
    let path = dir.path().join(REVISIONS);
    let text = fs::read_to_string(&path).unwrap();
    let damaged = text.replacen("\"id\":2", "\"id\":#", 1);
    assert_eq!(damaged.len(), text.len());
    fs::write(&path, damaged).unwrap();
    let (_, loaded) = open(dir.path()).await;
    assert_eq!(ids(&loaded), [1, 3]);
    assert!(
        loaded.warnings[0].contains("1 unreadable line(s) skipped")
            && loaded.warnings[0].contains("line 2"),
        "{:?}",
        loaded.warnings
    );
    assert_eq!(loaded.state.services["api"].weight("green"), 50);
}

#[tokio::test]
async fn a_state_file_that_is_a_directory_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join(STATE)).unwrap();
    let (store, loaded) = open(dir.path()).await;
    assert!(
        loaded.warnings[0].contains("unreadable") && loaded.warnings[0].contains("kept aside"),
        "{:?}",
        loaded.warnings
    );
    assert!(fs::read_dir(dir.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("state.json.corrupt-")));
    // And the store works.
    assert_eq!(put(&store, 0, 1, 0).await, Ok(1));
}

#[tokio::test]
async fn corrupt_state_is_kept_aside_and_ids_continue_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    put(&store, 0, 1, 0).await.unwrap();
    put(&store, 1, 2, 10).await.unwrap();
    fs::write(dir.path().join(STATE), b"{ not json").unwrap();
    let (_, loaded) = open(dir.path()).await;
    assert!(
        loaded.warnings[0].contains("corrupt"),
        "{:?}",
        loaded.warnings
    );
    assert_eq!(ids(&loaded), [1, 2]);
    // The next id is 3: an id is never used twice.
    assert_eq!(loaded.state.services["api"].revision, 2);
    assert!(loaded.state.services["api"].weights.is_empty());
}

#[tokio::test]
async fn a_torn_last_line_of_an_old_log_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut line = serde_json::to_vec(&revision(1, 100, 0)).unwrap();
    line.extend_from_slice(b"\n{\"id\":2,\"serv");
    fs::write(dir.path().join(REVISIONS), &line).unwrap();
    let (store, loaded) = open(dir.path()).await;
    assert_eq!(ids(&loaded), [1]);
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    put(&store, 0, 2, 50).await.unwrap();
    let (_, loaded) = open(dir.path()).await;
    assert_eq!(ids(&loaded), [1, 2]);
}

#[tokio::test]
#[allow(clippy::await_holding_lock)] // the point: the disk is held past the deadline
async fn a_write_that_finishes_after_its_deadline_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    put(&store, 0, 1, 0).await.unwrap();
    let batch = vec![Commit {
        service: "api".into(),
        expected: 1,
        state: state(2, 50, 50),
        revisions: vec![revision(2, 50, 50)],
    }];
    // The disk is busy (its lock held) past the deadline: the caller gives up.
    let busy = store.disk.lock().unwrap();
    let late = store
        .commit(
            batch,
            Fence::Any,
            Instant::now() + Duration::from_millis(50),
        )
        .await;
    assert!(matches!(late, Err(CommitError::Unavailable(_))), "{late:?}");
    // Then the write goes through on the blocking pool, finds itself abandoned, undoes.
    drop(busy);
    // Whatever the job got to, it is gone once the store answers again.
    assert_eq!(put(&store, 1, 2, 10).await, Ok(2));
    let (_, loaded) = open(dir.path()).await;
    assert_eq!(ids(&loaded), [1, 2]);
    assert_eq!(loaded.state.services["api"].weight("green"), 10);
}

#[tokio::test]
async fn history_in_memory_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    let n = HISTORY_KEPT as u64 + 500;
    for id in 1..=n {
        serde_json::to_writer(&mut lines, &revision(id, 100, 0)).unwrap();
        lines.push(b'\n');
    }
    fs::write(dir.path().join(REVISIONS), lines).unwrap();
    let (_, loaded) = open(dir.path()).await;
    let ids = ids(&loaded);
    assert_eq!(ids.len(), HISTORY_KEPT);
    assert_eq!(ids.last(), Some(&n));
    assert_eq!(loaded.state.services["api"].revision, n);
}

/// The fuzz target `state_load`, in miniature: mutated files never stop the start, and what
/// is loaded can be committed and read back.
#[tokio::test]
async fn mutated_state_files_are_loaded_or_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let good = serde_json::to_vec(&StateFile {
        state: DesiredState {
            services: BTreeMap::from([("api".to_string(), state(3, 70, 30))]),
        },
        log_bytes: None,
    })
    .unwrap();
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
    for _ in 0..200 {
        let _ = fs::remove_dir_all(dir.path());
        fs::create_dir_all(dir.path()).unwrap();
        fs::write(dir.path().join(STATE), m.mutate(&good)).unwrap();
        fs::write(dir.path().join(REVISIONS), m.mutate(&revisions)).unwrap();
        let (store, loaded) = open(dir.path()).await;
        let svc = loaded
            .state
            .services
            .get("api")
            .cloned()
            .unwrap_or_default();
        let next = svc.revision + 1;
        let batch = vec![Commit {
            service: "api".into(),
            expected: 0,
            state: ServiceState {
                revision: next,
                ..svc
            },
            revisions: vec![revision(next, 100, 0)],
        }];
        store
            .commit(batch, Fence::Any, later())
            .await
            .expect("commit");
        let (_, again) = open(dir.path()).await;
        assert_eq!(again.state.services["api"].revision, next);
    }
}
