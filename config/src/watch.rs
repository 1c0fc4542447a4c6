//! Watching the config file for hot reload.
//!
//! Why the parent directory and not the file: editors save by writing a temp file and
//! renaming it over the original, and Kubernetes updates a mounted ConfigMap by swapping a
//! `..data` symlink. Both replace what the path points at, so a watch on the file itself goes
//! silent after the first save. Watching the directory (non-recursively) and keeping only
//! events that name the file, or that changed where the path resolves to, survives both.
//!
//! Why debounce: one save is a burst of events (create, write, close, rename), and reloading
//! on the first could read a half-written file. A background thread waits until the burst has
//! been quiet for the debounce period and then calls back once. What the callback does (re-read,
//! validate, swap) is the caller's business; this module only says "it changed".

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

/// A running watch. Dropping it stops the watch and the debounce thread; a change still
/// waiting out its debounce period is then not reported.
pub struct ConfigWatcher {
    stop: Sender<Signal>,
    thread: Option<JoinHandle<()>>,
    // Held only to keep the OS watch alive; dropped after the thread has stopped.
    _watcher: RecommendedWatcher,
}

enum Signal {
    Changed,
    Stop,
}

/// Calls `on_change` (on a background thread) once per burst of changes to the file at
/// `path`, after `debounce` has passed with no further change.
pub fn watch(
    path: &Path,
    debounce: Duration,
    on_change: impl Fn() + Send + 'static,
) -> Result<ConfigWatcher, String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("cannot watch {}: it does not name a file", path.display()))?
        .to_owned();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };

    let (tx, rx) = mpsc::channel();
    let events = tx.clone();
    let mut filter = Filter::new(path.to_path_buf(), name);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        // A watcher error (e.g. the kernel queue overflowed) may have swallowed the change
        // itself, so it counts as one: a needless reload is cheap, a missed one is not.
        if event.map_or(true, |e| filter.is_relevant(&e)) {
            let _ = events.send(Signal::Changed);
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;

    let thread = thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || debounce_loop(rx, debounce, on_change))
        .map_err(|e| format!("cannot start the config watch thread: {e}"))?;

    Ok(ConfigWatcher {
        stop: tx,
        thread: Some(thread),
        _watcher: watcher,
    })
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        let _ = self.stop.send(Signal::Stop);
        if let Some(thread) = self.thread.take() {
            // A callback may drop its own watcher (e.g. when a reload moves the config);
            // joining itself would deadlock, and the thread is about to see Stop anyway.
            if thread.thread().id() != thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

fn debounce_loop(rx: Receiver<Signal>, debounce: Duration, on_change: impl Fn()) {
    loop {
        // Sleep until the first event of a burst.
        match rx.recv() {
            Ok(Signal::Changed) => {}
            Ok(Signal::Stop) | Err(_) => return,
        }
        // Then until the burst has been quiet for `debounce`.
        loop {
            match rx.recv_timeout(debounce) {
                Ok(Signal::Changed) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        on_change();
    }
}

/// Decides which directory events concern the config file.
struct Filter {
    path: PathBuf,
    name: OsString,
    /// Where `path` resolved to last time: a change means a symlink in the path was swapped.
    target: Option<PathBuf>,
}

impl Filter {
    fn new(path: PathBuf, name: OsString) -> Filter {
        let target = std::fs::canonicalize(&path).ok();
        Filter { path, name, target }
    }

    fn is_relevant(&mut self, event: &Event) -> bool {
        // Opening and reading the file (as every reload does) must not trigger a reload.
        if let EventKind::Access(kind) = event.kind {
            if kind != AccessKind::Close(AccessMode::Write) {
                return false;
            }
        }
        let names_file = event
            .paths
            .iter()
            .any(|p| p.file_name() == Some(self.name.as_os_str()));
        // Kubernetes-style updates touch only `..data` in this directory; the file's name
        // never appears, but the path now resolves somewhere else.
        let target = std::fs::canonicalize(&self.path).ok();
        let moved = target != self.target;
        self.target = target;
        names_file || moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    const DEBOUNCE: Duration = Duration::from_millis(150);
    /// Generous, because CI machines stall; the waits return as soon as the condition holds.
    const PATIENCE: Duration = Duration::from_secs(10);

    fn counting_watch(path: &Path) -> (ConfigWatcher, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let watcher = watch(path, DEBOUNCE, move || {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .expect("watch starts");
        (watcher, count)
    }

    fn wait_for(count: &AtomicUsize, at_least: usize) -> usize {
        let deadline = Instant::now() + PATIENCE;
        while count.load(Ordering::SeqCst) < at_least && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        count.load(Ordering::SeqCst)
    }

    /// Long enough for any stray event to have passed its debounce and been reported.
    fn settle() {
        thread::sleep(DEBOUNCE * 4);
    }

    #[test]
    fn reports_a_write_in_place_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.yaml");
        fs::write(&path, "a: 1\n").unwrap();
        let (_watcher, count) = counting_watch(&path);

        // A burst of writes within the debounce period is one change.
        for i in 0..5 {
            fs::write(&path, format!("a: {i}\n")).unwrap();
        }
        assert_eq!(wait_for(&count, 1), 1);
        settle();
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn survives_an_editor_style_rename_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.yaml");
        fs::write(&path, "a: 1\n").unwrap();
        let (_watcher, count) = counting_watch(&path);

        for round in 1..=2 {
            let temp = dir.path().join(".switchyard.yaml.tmp");
            fs::write(&temp, format!("a: {round}\n")).unwrap();
            fs::rename(&temp, &path).unwrap();
            assert_eq!(wait_for(&count, round), round, "rename #{round}");
            settle();
        }
    }

    #[test]
    fn ignores_other_files_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.yaml");
        fs::write(&path, "a: 1\n").unwrap();
        let (_watcher, count) = counting_watch(&path);

        fs::write(dir.path().join("other.yaml"), "b: 2\n").unwrap();
        let _ = fs::read_to_string(&path).unwrap();
        settle();
        assert_eq!(count.load(Ordering::SeqCst), 0);

        // And still sees the real thing afterwards.
        fs::write(&path, "a: 2\n").unwrap();
        assert_eq!(wait_for(&count, 1), 1);
    }

    #[cfg(unix)]
    #[test]
    fn follows_a_kubernetes_style_symlink_swap() {
        use std::os::unix::fs::symlink;

        // config.yaml -> ..data/config.yaml, ..data -> ..v1; an update points ..data at ..v2.
        let dir = tempfile::tempdir().unwrap();
        for (version, body) in [("..v1", "a: 1\n"), ("..v2", "a: 2\n")] {
            fs::create_dir(dir.path().join(version)).unwrap();
            fs::write(dir.path().join(version).join("config.yaml"), body).unwrap();
        }
        symlink("..v1", dir.path().join("..data")).unwrap();
        symlink("..data/config.yaml", dir.path().join("config.yaml")).unwrap();
        let path = dir.path().join("config.yaml");
        let (_watcher, count) = counting_watch(&path);

        symlink("..v2", dir.path().join("..data_tmp")).unwrap();
        fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert_eq!(wait_for(&count, 1), 1);
        assert_eq!(fs::read_to_string(&path).unwrap(), "a: 2\n");
    }

    #[test]
    fn dropping_the_watcher_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.yaml");
        fs::write(&path, "a: 1\n").unwrap();
        let (watcher, count) = counting_watch(&path);
        drop(watcher);

        fs::write(&path, "a: 2\n").unwrap();
        settle();
        assert_eq!(count.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        assert!(watch(Path::new("/"), DEBOUNCE, || {}).is_err());
    }
}
