//! The state loader never panics and never refuses to start, whatever is on disk: the input
//! is split into a `state.json` and a `revisions.jsonl`; anything unreadable must be set
//! aside with a warning, and what is loaded must be usable.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use switchyard_control::state::Store;

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
    let (store, loaded) = Store::open(Some(&dir)).expect("a bad file must never stop the start");
    // Whatever was loaded can be written back and read again identically.
    store.save_state(&loaded.state).expect("save");
    let (_, again) = Store::open(Some(&dir)).expect("reopen");
    assert_eq!(again.state, loaded.state);
});
