//! Traffic: which versions answered (tallies and splits), closed-loop load, and polling with
//! a bound (`eventually`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

use super::*;

/// How many responses each version answered.
#[derive(Debug, Default, Clone)]
pub struct Tally(pub BTreeMap<String, usize>);

impl Tally {
    pub fn of<'a>(versions: impl IntoIterator<Item = &'a String>) -> Tally {
        let mut tally = Tally::default();
        for v in versions {
            tally.add(v);
        }
        tally
    }

    pub fn add(&mut self, version: &str) {
        *self.0.entry(version.to_string()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Tally) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    pub fn count(&self, version: &str) -> usize {
        self.0.get(version).copied().unwrap_or(0)
    }

    /// The version's share of all responses, in percent.
    pub fn percent(&self, version: &str) -> f64 {
        if self.total() == 0 {
            return 0.0;
        }
        self.count(version) as f64 * 100.0 / self.total() as f64
    }

    /// `Ok` when every `(version, percent)` is within `tolerance` points.
    pub fn check_split(&self, expected: &[(&str, f64)], tolerance: f64) -> Result<(), String> {
        for (version, want) in expected {
            let got = self.percent(version);
            if (got - want).abs() > tolerance {
                return Err(format!(
                    "{version}: {got:.1}% (want {want}% ± {tolerance}) in {self}"
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{k}={v} ({:.1}%)", self.percent(k)))
            .collect();
        write!(f, "[{}] of {}", parts.join(", "), self.total())
    }
}

/// Sends `n` requests built by `make(i)` over `conns` kept-alive connections and returns, in
/// order, the version that answered each one. Any transport error, non-200 or missing
/// `x-backend` is an `Err` describing the first such request.
pub async fn try_versions_of(
    addr: SocketAddr,
    n: usize,
    conns: usize,
    make: impl Fn(usize) -> Request<Body> + Send + Sync + 'static,
) -> Result<Vec<String>, String> {
    let make = Arc::new(make);
    let mut tasks = Vec::new();
    for t in 0..conns {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::http1(addr);
            let mut out = Vec::new();
            for i in (t..n).step_by(conns) {
                let reply = client
                    .send(make(i))
                    .await
                    .map_err(|e| format!("request {i}: {e}"))?;
                if reply.status != StatusCode::OK {
                    return Err(format!(
                        "request {i}: status {} body {:?}",
                        reply.status,
                        reply.text()
                    ));
                }
                let version = reply
                    .version()
                    .ok_or_else(|| format!("request {i}: no x-backend header"))?;
                out.push((i, version));
            }
            Ok::<_, String>(out)
        }));
    }
    let mut all = vec![String::new(); n];
    for task in tasks {
        for (i, v) in task.await.map_err(|e| format!("task: {e}"))?? {
            all[i] = v;
        }
    }
    Ok(all)
}

/// [`try_versions_of`] over 4 connections, panicking on any failure.
pub async fn versions_of(
    addr: SocketAddr,
    n: usize,
    make: impl Fn(usize) -> Request<Body> + Send + Sync + 'static,
) -> Vec<String> {
    try_versions_of(addr, n, 4, make)
        .await
        .unwrap_or_else(|e| panic!("traffic through {addr} failed: {e}"))
}

/// `n` plain `GET /` requests; which versions answered.
pub async fn tally(addr: SocketAddr, n: usize) -> Tally {
    Tally::of(&versions_of(addr, n, |_| get("/")).await)
}

/// Polls `probe` until it returns `Ok`, at most `within`; panics with the last `Err` message.
pub async fn eventually<T>(
    within: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match timeout(left.max(Duration::from_millis(100)), probe()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(e)) => e,
            Err(_) => "probe did not finish in time".to_string(),
        };
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}; last: {last}");
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Closed-loop load: `clients` tasks, each on its own kept-alive connection, sending
/// `GET /` back to back until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<LoadReport>>,
}

/// What a [`Load`] saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: usize,
    /// One line per failed request: transport error, non-200, or no `x-backend`.
    pub failures: Vec<String>,
    pub tally: Tally,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize) -> Load {
        Load::spawn(addr, clients, false)
    }

    /// Like [`Load::start`], every request from a new user: `x-user-id: load-<client>-<n>`
    /// (what the canary's impact counting and sticky routing key on).
    pub fn start_users(addr: SocketAddr, clients: usize) -> Load {
        Load::spawn(addr, clients, true)
    }

    fn spawn(addr: SocketAddr, clients: usize, new_users: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|c| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut client = Client::http1(addr);
                    let mut report = LoadReport::default();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let req = if new_users {
                            get_with("/", &[("x-user-id", &format!("load-{c}-{n}"))])
                        } else {
                            get("/")
                        };
                        match client.send(req).await {
                            Ok(reply) if reply.status == StatusCode::OK => match reply.version() {
                                Some(v) => {
                                    report.ok += 1;
                                    report.tally.add(&v);
                                }
                                None => report
                                    .failures
                                    .push(format!("client {c}: 200 without x-backend")),
                            },
                            Ok(reply) => report.failures.push(format!(
                                "client {c}: status {} body {:?}",
                                reply.status,
                                reply.text()
                            )),
                            Err(e) => report.failures.push(format!("client {c}: {e}")),
                        }
                    }
                    report
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the clients and sums their reports.
    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for task in self.tasks {
            let report = timeout(REQUEST_TIMEOUT + Duration::from_secs(5), task)
                .await
                .expect("load client did not stop")
                .expect("load client panicked");
            total.ok += report.ok;
            total.failures.extend(report.failures);
            total.tally.merge(&report.tally);
        }
        total
    }
}
