//! The etcd store: one routing state and one rollout decision for a fleet (SPEC §11).
//!
//! No consensus of our own: etcd's transactions, leases, watches and election API do it.
//! - [`StateStore::commit`] is one transaction per batch, conditional on every service's
//!   `mod_revision` being the version the change was computed from (and, for leader-only
//!   decisions, on this replica's election key still existing with the create revision it
//!   won with: fencing). The loser gets [`CommitError::Conflict`] and re-reads
//!   ([`StateStore::read`]).
//! - What others commit arrives through a watch from the last revision this replica saw
//!   (`watch.rs`); a watch whose start was compacted away re-reads everything instead.
//! - A session (`session.rs`) holds the replica's lease, keeps it alive, campaigns for the
//!   leadership with it, and once a second publishes the replica's heartbeat and telemetry
//!   windows under it and reads everyone else's: the [`FleetView`].
//!
//! Every call has a deadline. A stopped etcd that still accepts connections (SIGSTOP) must
//! not hang the API, and a refused change must change nothing, so a commit is sent only
//! while the store is known to answer: after any failure the store is *unhealthy* and
//! refuses at once until the session hears from etcd again, and a healthy store first
//! probes etcd with a short read before it sends the transaction. The one case left — etcd
//! stops between the probe's answer and the transaction's arrival, well under a
//! millisecond on loopback — is an honest 503 whose change may still land when etcd
//! resumes; every replica then applies it like any other commit (docs/FLEET.md).

mod cache;
mod keys;
mod read;
mod session;
mod watch;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse,
};
use serde::{Deserialize, Serialize};
use switchyard_config::Cluster;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::fleet::{FleetView, Report};
use super::{
    Commit, CommitError, Fence, Loaded, Remote, ServiceState, StateStore, StoreFuture, EVENTS_KEPT,
};
use crate::clock::{self, Millis};
use crate::events::Event;
pub use keys::Keys;

/// Longest a commit waits for the probe read that precedes it.
const PROBE: Duration = Duration::from_millis(1000);
/// Longest the load at start may take against an etcd that does not answer.
const LOAD_MAX: Duration = Duration::from_secs(5);

/// A service's value under `state/<svc>`.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    /// Unix ms when committed, by the committer's clock.
    at: Millis,
    /// The replica that committed it.
    by: String,
    state: ServiceState,
}

/// An event's value under `events/<replica>/<seq>`.
#[derive(Debug, Serialize, Deserialize)]
struct StoredEvent {
    replica: String,
    event: Event,
}

/// The fleet's store; clones share one connection, session and view.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    client: Client,
    keys: Keys,
    me: String,
    admin: String,
    lease: Duration,
    dial_timeout: Duration,
    endpoints: Vec<String>,
    /// Differs per process start, so the leader knows a replica's counters started over.
    boot: String,
    healthy: AtomicBool,
    error: Mutex<Option<String>>,
    /// The election key this replica won with (key, create revision), while it leads.
    leader_key: Mutex<Option<(Vec<u8>, i64)>>,
    leading: AtomicBool,
    /// The session's lease, while it has one.
    lease_id: Mutex<Option<i64>>,
    /// The newest revision handed to the loop (load, resync or watch): the watch's start.
    seen: AtomicI64,
    report: Mutex<Report>,
    view: ArcSwap<FleetView>,
    events: mpsc::Sender<Event>,
    /// Sequence of this replica's event keys.
    event_seq: AtomicU64,
    /// Where events of other replicas go (the loop's receiver of `subscribe_events`).
    remote_events: Mutex<Option<mpsc::Sender<Event>>>,
    /// The watch feeding the current incarnation of the loop.
    watch: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// `state_dir`'s copy of what this replica last knew from etcd (`cache.rs`).
    cache: Option<Arc<cache::Cache>>,
}

impl EtcdStore {
    /// Connects (lazily: an etcd that is down now is retried in the background) and starts
    /// the session; with `state_dir`, keeps a cache there for starts without etcd. Must run
    /// on the process's main runtime: the session outlives the loop.
    pub async fn connect(
        cluster: &Cluster,
        replica: &str,
        admin: &str,
        state_dir: Option<&std::path::Path>,
    ) -> Result<EtcdStore, String> {
        let etcd = &cluster.etcd;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(etcd.dial_timeout)
            .with_keep_alive(Duration::from_secs(1), etcd.dial_timeout)
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &etcd.tls {
            let mut t = etcd_client::TlsOptions::new();
            if let Some(ca) = &tls.ca {
                let pem = std::fs::read(ca)
                    .map_err(|e| format!("cluster.etcd.tls.ca {}: {e}", ca.display()))?;
                t = t.ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = &tls.identity {
                let read = |p: &std::path::Path, what: &str| {
                    std::fs::read(p)
                        .map_err(|e| format!("cluster.etcd.tls.{what} {}: {e}", p.display()))
                };
                t = t.identity(etcd_client::Identity::from_pem(
                    read(cert, "cert")?,
                    read(key, "key")?,
                ));
            }
            options = options.with_tls(t);
        }
        if let Some(auth) = &etcd.auth {
            let password = std::fs::read_to_string(&auth.password_file).map_err(|e| {
                format!(
                    "cluster.etcd.auth.password_file {}: {e}",
                    auth.password_file.display()
                )
            })?;
            options = options.with_user(auth.username.clone(), password.trim_end().to_string());
        }
        let endpoints: Vec<String> = etcd
            .endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else if etcd.tls.is_some() {
                    format!("https://{e}")
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let client = tokio::time::timeout(
            etcd.dial_timeout + Duration::from_secs(1),
            Client::connect(&endpoints, Some(options)),
        )
        .await
        .map_err(|_| "cannot reach etcd to log in (cluster.etcd.auth) in time".to_string())?
        .map_err(|e| format!("cannot set up the etcd client for {endpoints:?}: {e}"))?;
        let (events, events_rx) = mpsc::channel(1024);
        let boot = format!("{:x}", clock::now() ^ u64::from(std::process::id()) << 40);
        let inner = Arc::new(Inner {
            client,
            keys: Keys::new(&etcd.prefix),
            me: replica.to_string(),
            admin: admin.to_string(),
            lease: cluster.lease,
            dial_timeout: etcd.dial_timeout,
            endpoints: etcd.endpoints.clone(),
            boot,
            healthy: AtomicBool::new(true),
            error: Mutex::new(None),
            leader_key: Mutex::new(None),
            leading: AtomicBool::new(false),
            lease_id: Mutex::new(None),
            seen: AtomicI64::new(0),
            report: Mutex::new(Report::default()),
            view: ArcSwap::from_pointee(FleetView {
                me: replica.to_string(),
                endpoints: etcd.endpoints.clone(),
                healthy: true,
                ..FleetView::default()
            }),
            events,
            event_seq: AtomicU64::new(0),
            remote_events: Mutex::new(None),
            watch: Mutex::new(None),
            cache: state_dir.map(|dir| cache::Cache::new(dir, &etcd.prefix)),
        });
        if let Some(cache) = &inner.cache {
            tokio::spawn(Arc::clone(cache).run());
        }
        for op in ["commit", "watch", "publish", "campaign"] {
            metrics::counter!("switchyard_fleet_store_errors_total", "op" => op).absolute(0);
        }
        metrics::gauge!("switchyard_fleet_leader").set(0.0);
        tokio::spawn(session::run(Arc::clone(&inner)));
        tokio::spawn(write_events(Arc::clone(&inner), events_rx));
        Ok(EtcdStore { inner })
    }

    /// The fleet as last read, for the admin API (a snapshot: never waits).
    pub fn view(&self) -> Arc<FleetView> {
        self.inner.view.load_full()
    }

    /// Gives up the lease (and with it the leadership) at shutdown, so another replica
    /// takes over at once instead of after the lease.
    pub async fn close(&self) {
        session::close(&self.inner).await;
    }
}

impl Inner {
    /// Everything up to etcd `revision` has been handed to the loop.
    fn saw(&self, revision: i64) {
        self.seen.fetch_max(revision, Ordering::SeqCst);
        if let Some(cache) = &self.cache {
            cache.seen(revision);
        }
    }

    /// Hands a commit from etcd to the loop (and to the cache); `false` once the loop is gone.
    async fn deliver(&self, tx: &mpsc::Sender<Remote>, remote: Remote) -> bool {
        if let Some(cache) = &self.cache {
            cache.put(&remote.service, remote.version, &remote.state);
        }
        tx.send(remote).await.is_ok()
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failed etcd call: counted by `op`, and the store is unhealthy until the
    /// session hears from etcd again.
    fn failed(&self, op: &'static str, error: &str) -> CommitError {
        metrics::counter!("switchyard_fleet_store_errors_total", "op" => op).increment(1);
        self.set_health(Some(error.to_string()));
        CommitError::Unavailable(format!("fleet state store unavailable: {error}"))
    }

    fn set_health(&self, error: Option<String>) {
        let healthy = error.is_none();
        let was = self.healthy.swap(healthy, Ordering::SeqCst);
        if was != healthy {
            match &error {
                Some(e) => tracing::error!(replica = %self.me, "etcd unavailable: {e}"),
                None => tracing::info!(replica = %self.me, "etcd answers again"),
            }
        }
        *Self::lock(&self.error) = error.clone();
        if was != healthy {
            self.view.rcu(|v| FleetView {
                healthy,
                error: error.clone(),
                ..FleetView::clone(v)
            });
        }
    }

    fn unavailable(&self) -> Option<CommitError> {
        if self.healthy.load(Ordering::SeqCst) {
            return None;
        }
        let why = Self::lock(&self.error)
            .clone()
            .unwrap_or_else(|| "etcd did not answer".into());
        Some(CommitError::Unavailable(format!(
            "fleet state store unavailable: {why}"
        )))
    }

    pub(crate) fn set_leading(&self, key: Option<(Vec<u8>, i64)>) {
        let leading = key.is_some();
        *Self::lock(&self.leader_key) = key;
        if self.leading.swap(leading, Ordering::SeqCst) != leading {
            tracing::info!(replica = %self.me, leading, "fleet leadership changed");
            metrics::gauge!("switchyard_fleet_leader").set(if leading { 1.0 } else { 0.0 });
        }
    }

    async fn commit(
        &self,
        batch: Vec<Commit>,
        fence: Fence,
        deadline: Instant,
    ) -> Result<Vec<u64>, CommitError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(e) = self.unavailable() {
            return Err(e);
        }
        let leader = match fence {
            Fence::Any => None,
            Fence::Leader => Some(
                Self::lock(&self.leader_key)
                    .clone()
                    .ok_or(CommitError::NotLeader)?,
            ),
        };
        let mut kv = self.client.kv_client();
        // Only send the transaction to an etcd that answers right now (see the module doc).
        let probe = kv.get(
            self.keys.state(&batch[0].service),
            Some(GetOptions::new().with_keys_only()),
        );
        within(deadline.min(Instant::now() + PROBE), probe)
            .await
            .map_err(|e| self.failed("commit", &e))?;
        let now = clock::now();
        let mut when = Vec::with_capacity(batch.len() + 1);
        let mut then = Vec::new();
        let mut otherwise = Vec::with_capacity(batch.len() + 1);
        for c in &batch {
            let key = self.keys.state(&c.service);
            when.push(Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                i64::try_from(c.expected).unwrap_or(i64::MAX),
            ));
            for r in &c.revisions {
                then.push(TxnOp::put(
                    self.keys.history(&c.service, r.id),
                    json(r),
                    None,
                ));
            }
            let stored = Stored {
                at: now,
                by: self.me.clone(),
                state: c.state.clone(),
            };
            then.push(TxnOp::put(key.clone(), json(&stored), None));
            otherwise.push(TxnOp::get(key, None));
        }
        if let Some((key, rev)) = &leader {
            when.push(Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                *rev,
            ));
            otherwise.push(TxnOp::get(key.clone(), None));
        }
        let txn = Txn::new().when(when).and_then(then).or_else(otherwise);
        let resp = within(deadline, kv.txn(txn))
            .await
            .map_err(|e| self.failed("commit", &e))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            let version = u64::try_from(revision).unwrap_or(0);
            if let Some(cache) = &self.cache {
                for c in &batch {
                    cache.put(&c.service, version, &c.state);
                }
            }
            return Ok(vec![version; batch.len()]);
        }
        let responses = resp.op_responses();
        for (c, r) in batch.iter().zip(&responses) {
            let current = match r {
                TxnOpResponse::Get(g) => g.kvs().first().map_or(0, |kv| kv.mod_revision()),
                _ => 0,
            };
            let current = u64::try_from(current).unwrap_or(0);
            if current != c.expected {
                return Err(CommitError::Conflict {
                    service: c.service.clone(),
                    current,
                });
            }
        }
        // Every version matched, so the fence did not: the leadership is gone.
        self.set_leading(None);
        Err(CommitError::NotLeader)
    }
}

impl StateStore for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn load(&self, deadline: Instant) -> StoreFuture<'_, Result<Loaded, String>> {
        Box::pin(async move {
            let error = match self.inner.load(deadline).await {
                Ok(loaded) => return Ok(loaded),
                Err(e) => e,
            };
            // etcd cannot be read: serve what this replica last knew of the fleet, if kept.
            let Some((mut loaded, revision)) = self.inner.cache.as_ref().and_then(|c| c.read())
            else {
                return Err(error);
            };
            self.inner.seen.fetch_max(revision, Ordering::SeqCst);
            loaded.warnings.push(format!(
                "{error}; serving the fleet's state as this replica last knew it (etcd \
                 revision {revision}, cached in state_dir/{}) until etcd answers",
                cache::FILE
            ));
            Ok(loaded)
        })
    }

    fn commit(
        &self,
        batch: Vec<Commit>,
        fence: Fence,
        deadline: Instant,
    ) -> StoreFuture<'_, Result<Vec<u64>, CommitError>> {
        Box::pin(self.inner.commit(batch, fence, deadline))
    }

    fn record_event(&self, event: &Event) {
        if self.inner.events.try_send(event.clone()).is_err() {
            tracing::warn!("fleet event writer behind; event not written to etcd");
        }
    }

    fn subscribe(&self) -> mpsc::Receiver<Remote> {
        let (tx, rx) = mpsc::channel(1024);
        let from = self.inner.seen.load(Ordering::SeqCst) + 1;
        let task = tokio::spawn(watch::run(Arc::clone(&self.inner), tx, from));
        if let Some(old) = Inner::lock(&self.inner.watch).replace(task) {
            old.abort();
        }
        rx
    }

    fn is_leader(&self) -> bool {
        self.inner.leading.load(Ordering::SeqCst)
    }

    fn shared(&self) -> bool {
        true
    }

    fn read(
        &self,
        service: &str,
        after: u64,
        deadline: Instant,
    ) -> StoreFuture<'_, Result<Remote, CommitError>> {
        let service = service.to_string();
        Box::pin(async move { self.inner.read(&service, after, deadline).await })
    }

    fn subscribe_events(&self) -> Option<mpsc::Receiver<Event>> {
        let (tx, rx) = mpsc::channel(1024);
        *Inner::lock(&self.inner.remote_events) = Some(tx);
        Some(rx)
    }

    fn report(&self, report: Report) {
        *Inner::lock(&self.inner.report) = report;
    }

    fn fleet(&self) -> Option<Arc<FleetView>> {
        Some(self.inner.view.load_full())
    }
}

/// Writes this replica's events under `events/<replica>/<seq>`, keeping its newest
/// [`EVENTS_KEPT`] (best effort: events explain, they do not decide).
async fn write_events(inner: Arc<Inner>, mut rx: mpsc::Receiver<Event>) {
    while let Some(event) = rx.recv().await {
        let seq = inner.event_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let stored = StoredEvent {
            replica: inner.me.clone(),
            event,
        };
        let mut ops = vec![TxnOp::put(
            inner.keys.event(&inner.me, seq),
            json(&stored),
            None,
        )];
        if let Some(old) = seq.checked_sub(EVENTS_KEPT as u64).filter(|s| *s > 0) {
            ops.push(TxnOp::delete(inner.keys.event(&inner.me, old), None));
        }
        let txn = Txn::new().and_then(ops);
        let deadline = Instant::now() + inner.dial_timeout;
        if let Err(e) = within(deadline, inner.client.kv_client().txn(txn)).await {
            metrics::counter!("switchyard_fleet_store_errors_total", "op" => "publish")
                .increment(1);
            tracing::debug!("event not written to etcd: {e}");
        }
    }
}

/// Runs an etcd call until `deadline`.
async fn within<T>(
    deadline: Instant,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout_at(deadline, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("etcd: {e}")),
        Err(_) => Err("etcd did not answer in time".to_string()),
    }
}

fn json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
