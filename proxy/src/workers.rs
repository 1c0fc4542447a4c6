//! Thread-per-core data path: `--workers N` (N > 1) runs N worker threads, each with a
//! single-threaded tokio runtime of its own, like N nginx worker processes or HAProxy's
//! `nbthread N`.
//!
//! Every listener accepts on every worker (one listening socket, its file descriptor
//! duplicated into each worker's reactor), and a connection is served start to finish on the
//! worker that accepted it: no work stealing, no cross-thread wake-ups on the request path.
//! Whatever a request writes often is per worker ([`slot`] indexes it): the upstream idle
//! pools (`upstream::http1`) and the per-worker connection counts shown in
//! `GET /api/v1/status`. One socket rather than `SO_REUSEPORT` sockets: a taken port is
//! still refused at start (with `SO_REUSEPORT` a second process of the same user would
//! silently share it), a port-0 listener has one address, and one accept queue hands a new
//! connection to whichever worker is free first instead of a hash tied to a busy one.
//!
//! `--workers 1` uses none of this: everything (the control plane included) runs on one
//! current-thread runtime, and [`Workers::inline`] serves the listeners there.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

thread_local! {
    /// This thread's [`slot`]: 0 off the worker threads.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// How many slots per-worker state has: 1 with one runtime, N + 1 with N workers (slot 0 for
/// the control plane's threads). Set once, before any pool is built.
static SLOTS: AtomicUsize = AtomicUsize::new(1);

/// The calling thread's index into per-worker state: `1..=N` on worker N's thread, 0 on any
/// other thread (the control plane; everything with `--workers 1`).
pub fn slot() -> usize {
    SLOT.with(Cell::get)
}

/// How many slots per-worker state needs (see [`SLOTS`]).
pub fn slots() -> usize {
    SLOTS.load(Relaxed)
}

/// One worker's connection counts, on a cache line of its own: only its worker writes it.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerStats {
    pub accepted: AtomicU64,
    pub active: AtomicI64,
}

/// Indexed by [`slot`]; sized by [`Workers::start`] (one entry until then).
static STATS: OnceLock<Box<[WorkerStats]>> = OnceLock::new();

/// The calling thread's connection counts (see [`slot`]).
pub fn this_worker() -> &'static WorkerStats {
    let all = all_stats();
    &all[slot().min(all.len() - 1)]
}

fn all_stats() -> &'static [WorkerStats] {
    STATS.get_or_init(|| Box::new([WorkerStats::default()]))
}

/// Connections accepted and open per worker, worker 1 first (one entry with `--workers 1`).
pub fn connections() -> Vec<(u64, i64)> {
    let all = all_stats();
    let workers = if all.len() > 1 { &all[1..] } else { all };
    workers
        .iter()
        .map(|w| (w.accepted.load(Relaxed), w.active.load(Relaxed)))
        .collect()
}

/// Where the listeners' accept loops run.
#[derive(Debug, Clone)]
pub struct Workers {
    /// The worker runtimes; empty: the caller's runtime ([`Workers::inline`]).
    handles: Vec<Handle>,
}

impl Workers {
    /// Listeners served on the runtime that calls [`Workers::spawn`] (`--workers 1`, tests).
    pub fn inline() -> Workers {
        Workers {
            handles: Vec::new(),
        }
    }

    /// Starts `n` worker threads (`switchyard-worker-1`…), each driving a current-thread
    /// runtime until the process exits. Call once, before building any upstream pool.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let n = n.max(1);
        SLOTS.store(n + 1, Relaxed);
        let _ = STATS.set((0..=n).map(|_| WorkerStats::default()).collect());
        let mut handles = Vec::with_capacity(n);
        for i in 1..=n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("switchyard-worker-{i}"))
                .spawn(move || {
                    SLOT.with(|s| s.set(i));
                    runtime.block_on(std::future::pending::<()>());
                })?;
        }
        Ok(Workers { handles })
    }

    /// How many workers serve connections (1 for [`Workers::inline`]).
    pub fn count(&self) -> usize {
        self.handles.len().max(1)
    }

    /// Runs `make(worker)` on every worker (worker is 0-based), or once on the caller's
    /// runtime when inline.
    pub fn spawn<F, Fut>(&self, make: F) -> Vec<JoinHandle<()>>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if self.handles.is_empty() {
            return vec![tokio::spawn(make(0))];
        }
        self.handles
            .iter()
            .enumerate()
            .map(|(i, h)| h.spawn(make(i)))
            .collect()
    }
}

/// One `T` per [`slot`], each on cache lines of its own: what the request path writes often
/// (upstream idle pools, request counters) is written by one core only, and readers add up
/// the slots.
#[derive(Debug)]
pub(crate) struct PerWorker<T>(Box<[Padded<T>]>);

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> PerWorker<T> {
    pub(crate) fn new(make: impl FnMut() -> T) -> PerWorker<T> {
        let mut make = make;
        PerWorker((0..slots()).map(|_| Padded(make())).collect())
    }

    /// The calling thread's.
    #[inline]
    pub(crate) fn local(&self) -> &T {
        &self.0[slot().min(self.0.len() - 1)].0
    }

    /// Every slot's, the calling thread's included.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|p| &p.0)
    }

    /// The other slots', the next one first.
    pub(crate) fn others(&self) -> impl Iterator<Item = &T> {
        let (n, me) = (self.0.len(), slot());
        (1..n).map(move |i| &self.0[(me + i) % n].0)
    }
}

impl<T: Default> Default for PerWorker<T> {
    fn default() -> Self {
        PerWorker::new(T::default)
    }
}
