//! The state loader never panics and never refuses to start, whatever is on disk: the input
//! is split into a `state.json` and a `revisions.jsonl`; anything unreadable must be set
//! aside with a warning, and the store must take a commit afterwards and read it back.
#![no_main]

use std::path::PathBuf;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use switchyard_control::store::file::FileStore;
use switchyard_control::store::{Commit, Fence, ServiceState, StateStore};

fn dir() -> PathBuf {
    std::env::temp_dir().join(format!("switchyard-fuzz-state-{}", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let (state, revisions) = data.split_at(split);
    let dir = dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("state.json"), state).expect("write state");
    std::fs::write(dir.join("revisions.jsonl"), revisions).expect("write revisions");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let later = || tokio::time::Instant::now() + Duration::from_secs(30);
        let store = FileStore::new(&dir);
        let loaded = store.load(later()).await.expect("a bad file must never stop the start");
        let svc = loaded.state.services.get("api").cloned().unwrap_or_default();
        let next = ServiceState {
            revision: svc.revision + 1,
            ..svc
        };
        let commit = Commit {
            service: "api".into(),
            expected: 0,
            state: next.clone(),
            revisions: Vec::new(),
        };
        store.commit(vec![commit], Fence::Any, later()).await.expect("commit");
        let again = FileStore::new(&dir).load(later()).await.expect("reload");
        assert_eq!(again.state.services["api"], next);
    });
});
