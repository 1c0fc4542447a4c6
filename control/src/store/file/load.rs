//! Reading `state_dir` at start: every file checked, damage set aside and reported, never
//! fatal (see the parent module for the file formats and the commit point).

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::{Disk, StateFile, EVENTS, REVISIONS, STATE};
use crate::events::Event;
use crate::store::{push_bounded, Loaded, Revision, EVENTS_KEPT};

pub(super) fn load(disk: &mut Disk) -> Result<Loaded, String> {
    let dir = disk.dir.clone();
    let mut loaded = Loaded::default();
    if let Err(e) = fs::create_dir_all(&dir) {
        loaded.warnings.push(format!(
            "state_dir {}: cannot create it ({e}); serving from the config, and changes that \
             need the state written are refused until it can be",
            dir.display()
        ));
    }
    let file = read_state(&dir, &mut loaded.warnings);
    let log_len = read_revisions(&dir, file.log_bytes, &mut loaded);
    loaded.state = file.state;
    loaded.events = read_events(&dir.join(EVENTS), &mut loaded.warnings);
    // A history line past a service's committed revision is from a change that was never
    // acknowledged (files written before `log_bytes` existed): not history.
    for (service, history) in loaded.history.iter_mut() {
        let committed = loaded.state.services.get(service).map_or(0, |s| s.revision);
        if loaded.state.services.contains_key(service) {
            history.retain(|r| r.id <= committed);
        }
    }
    // Without a state file, the history still says which ids were used: never reuse one.
    for (service, history) in &loaded.history {
        let newest = history.back().map_or(0, |r| r.id);
        let svc = loaded.state.services.entry(service.clone()).or_default();
        svc.revision = svc.revision.max(newest);
    }
    disk.state = loaded.state.clone();
    disk.log_len = log_len;
    disk.versions = loaded
        .state
        .services
        .keys()
        .map(|k| (k.clone(), 0))
        .collect();
    loaded.versions = disk.versions.clone();
    Ok(loaded)
}

fn read_state(dir: &Path, warnings: &mut Vec<String>) -> StateFile {
    let path = dir.join(STATE);
    let problem = match fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
            Ok(file) => return file,
            Err(e) => format!("corrupt ({e})"),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => return StateFile::default(),
        Err(e) => format!("unreadable ({e})"),
    };
    warnings.push(format!(
        "{}: {problem}; {}; starting from the config",
        path.display(),
        keep_aside(&path, false)
    ));
    StateFile::default()
}

/// Reads the log into `loaded.history`; returns its committed length.
fn read_revisions(dir: &Path, log_bytes: Option<u64>, loaded: &mut Loaded) -> u64 {
    let path = dir.join(REVISIONS);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return 0,
        Err(e) => {
            loaded.warnings.push(format!(
                "{}: unreadable ({e}); history starts empty",
                path.display()
            ));
            return 0;
        }
    };
    let len = bytes.len() as u64;
    // What counts: up to the committed length, or (older files) up to the last full line.
    let good = match log_bytes {
        Some(n) if n <= len => n,
        Some(n) => {
            loaded.warnings.push(format!(
                "{}: shorter ({len} bytes) than state.json recorded ({n}); history may be \
                 incomplete",
                path.display()
            ));
            len
        }
        None => bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i as u64 + 1),
    };
    if good < len {
        let cut = OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(good).and_then(|_| f.sync_data()));
        let cut = cut
            .err()
            .map(|e| format!("; cutting them off failed: {e}"))
            .unwrap_or_default();
        if log_bytes.is_some() {
            // Normal after a crash between the log append and the state write, or a refused
            // commit whose cut failed: those changes were never acknowledged.
            tracing::info!(
                "{}: dropped {} byte(s) of revisions that were never acknowledged{cut}",
                path.display(),
                len - good
            );
        } else {
            let aside = keep_aside(&path, true);
            loaded.warnings.push(format!(
                "{}: a torn last line ({} byte(s)) was dropped; {aside}{cut}",
                path.display(),
                len - good
            ));
        }
    }
    let mut bad = Vec::new();
    for (i, line) in bytes[..good as usize].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Revision>(line) {
            Ok(r) => {
                let history = loaded.history.entry(r.service.clone()).or_default();
                push_bounded(history, r);
            }
            Err(e) => bad.push(format!("line {}: {e}", i + 1)),
        }
    }
    if !bad.is_empty() {
        let shown: Vec<&str> = bad.iter().take(3).map(String::as_str).collect();
        loaded.warnings.push(format!(
            "{}: {} unreadable line(s) skipped, the revisions around them kept ({}{})",
            path.display(),
            bad.len(),
            shown.join("; "),
            if bad.len() > 3 { "; …" } else { "" }
        ));
    }
    good
}

fn read_events(path: &Path, warnings: &mut Vec<String>) -> Vec<Event> {
    let Ok(bytes) = fs::read(path) else {
        return Vec::new();
    };
    let mut events = VecDeque::new();
    let mut bad = 0;
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Event>(line) {
            Ok(e) => {
                if events.len() == EVENTS_KEPT {
                    events.pop_front();
                }
                events.push_back(e);
            }
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        warnings.push(format!(
            "{}: {bad} unreadable line(s) skipped",
            path.display()
        ));
    }
    events.into()
}

/// Keeps a damaged file aside (`copy`: a copy, for a file that is repaired in place; else a
/// rename, which also works for a directory); says where, or why not.
fn keep_aside(path: &Path, copy: bool) -> String {
    let aside = PathBuf::from(format!(
        "{}.corrupt-{}",
        path.display(),
        crate::clock::now() / 1000
    ));
    let kept = if copy {
        fs::copy(path, &aside).map(|_| ())
    } else {
        fs::rename(path, &aside)
    };
    match kept {
        Ok(()) => format!("kept aside as {}", aside.display()),
        Err(e) => format!("could not keep it aside ({e})"),
    }
}
