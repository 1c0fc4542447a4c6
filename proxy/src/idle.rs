//! Idle keep-alive connections waiting for their next request, without a timer each.
//!
//! Why: an idle plain connection is mostly its task, and the task is as large as what it
//! waits on. A `tokio::time::Sleep` for the idle deadline and a `watch` waiter for shutdown
//! were ~230 of its future's bytes — enough to round its task up a 128-byte allocation step
//! (docs/PERFORMANCE.md, "Idle keep-alive connections"). Here an idle connection is one
//! entry (its waker and deadline, 32 bytes) in its listener's [`IdleSet`]; one sweeper per
//! listener wakes the entries whose deadline passed once a second and all of them at
//! shutdown. So the idle keep-alive timeout fires up to a second late, which nothing needs
//! finer. The set's lock is taken when a connection goes idle and when it wakes (at most
//! once per request, and only after a second without one: a busy connection never comes
//! here), never on a request's path.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How often the sweeper looks for idle connections past their deadline.
const SWEEP: Duration = Duration::from_secs(1);

/// One listener's idle connections (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct IdleSet {
    entries: Mutex<Entries>,
    /// Set (under the lock) when the listener shuts down: no connection waits any more.
    stopping: AtomicBool,
}

#[derive(Debug, Default)]
struct Entries {
    slots: Vec<Option<(Waker, Instant)>>,
    free: Vec<usize>,
}

impl IdleSet {
    /// Waits until `readable` (the socket's readiness) resolves: `true` when it did so
    /// before `until`, `false` at the deadline (give or take [`SWEEP`]), at shutdown, or on
    /// a socket error.
    pub(crate) async fn wait<F>(&self, readable: F, until: Instant) -> bool
    where
        F: Future<Output = std::io::Result<()>>,
    {
        let mut readable = pin!(readable);
        let mut entry = Entry {
            set: self,
            key: None,
        };
        std::future::poll_fn(|cx| {
            if let Poll::Ready(ready) = readable.as_mut().poll(cx) {
                return Poll::Ready(ready.is_ok());
            }
            if Instant::now() >= until {
                return Poll::Ready(false);
            }
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            // Checked under the lock the sweeper sets it under: no shutdown is missed.
            if self.stopping.load(Ordering::Relaxed) {
                return Poll::Ready(false);
            }
            match entry.key {
                Some(key) => match &mut entries.slots[key] {
                    Some((waker, _)) if waker.will_wake(cx.waker()) => {}
                    slot => *slot = Some((cx.waker().clone(), until)),
                },
                None => {
                    let value = Some((cx.waker().clone(), until));
                    entry.key = Some(match entries.free.pop() {
                        Some(key) => {
                            entries.slots[key] = value;
                            key
                        }
                        None => {
                            entries.slots.push(value);
                            entries.slots.len() - 1
                        }
                    });
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Wakes idle connections past their deadline every [`SWEEP`], and all of them when
    /// `shutdown` turns true (or its sender is gone); then returns.
    pub(crate) async fn sweep(&self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                    for (waker, until) in entries.slots.iter().flatten() {
                        if *until <= now {
                            waker.wake_by_ref();
                        }
                    }
                }
            }
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.stopping.store(true, Ordering::Relaxed);
        for (waker, _) in entries.slots.iter().flatten() {
            waker.wake_by_ref();
        }
    }
}

/// A connection's place in the set, given back when its wait ends or is dropped.
struct Entry<'a> {
    set: &'a IdleSet,
    key: Option<usize>,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut entries = self.set.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.slots[key] = None;
            entries.free.push(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real time (the deadline is swept once a second): about 2 s.
    #[tokio::test]
    async fn a_wait_ends_when_readable_at_its_deadline_or_at_shutdown() {
        let set = std::sync::Arc::new(IdleSet::default());
        let (tx, rx) = watch::channel(false);
        let sweeper = tokio::spawn({
            let set = set.clone();
            async move { set.sweep(rx).await }
        });
        let never = std::future::pending::<std::io::Result<()>>;

        let ready = async { Ok::<(), std::io::Error>(()) };
        assert!(set.wait(ready, Instant::now() + SWEEP).await);
        let start = Instant::now();
        assert!(!set.wait(never(), start + Duration::from_millis(1200)).await);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1200) && waited < Duration::from_secs(10),
            "deadline missed: {waited:?}"
        );
        assert_eq!(
            set.entries.lock().unwrap().free.len(),
            1,
            "entry given back"
        );

        let waiting = tokio::spawn({
            let set = set.clone();
            async move {
                set.wait(never(), Instant::now() + Duration::from_secs(600))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished());
        tx.send(true).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        assert!(!ended.expect("shutdown ends the wait").unwrap());
        sweeper.await.unwrap();
    }
}
