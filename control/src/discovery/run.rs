//! The background task: every configured name on one timer queue, lookups run concurrently
//! (at most [`MAX_IN_FLIGHT`] at once), answers applied to each name's state, and a new
//! [`Snapshot`] published whenever a version's addresses change.
//!
//! The task owns all of discovery's state, so nothing in it is shared or locked except the
//! lookup counts, which a scrape reads. A reload hands it the new config: names that stay keep
//! their state (and their last good set), new ones are resolved at once, removed ones are
//! dropped and their answers still in flight ignored.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_config::{Backend, Config};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::hickory::HickoryResolver;
use super::lookup::{resolve_name, resolve_srv, TargetCache};
use super::name::{NameState, Outcome, Ttls};
use super::resolve::{LookupResult, Resolve};
use super::version::{self, Endpoint, NameView};

/// Lookups under way at once. Plenty for thousands of names against a server that answers
/// in milliseconds; against one that has stopped answering, it keeps the task from opening a
/// socket per name while every lookup waits for its timeout.
pub const MAX_IN_FLIGHT: usize = 64;

/// What discovery knows, published on every change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Every version with at least one backend name, sorted by (service, version).
    pub versions: Vec<VersionEndpoints>,
}

impl Snapshot {
    pub fn version(&self, service: &str, version: &str) -> Option<&VersionEndpoints> {
        self.versions
            .binary_search_by(|v| (&*v.service, &*v.version).cmp(&(service, version)))
            .ok()
            .map(|i| &self.versions[i])
    }
}

impl switchyard_proxy::endpoints::Resolved for Snapshot {
    fn version(
        &self,
        service: &str,
        version: &str,
    ) -> Option<switchyard_proxy::endpoints::VersionEndpoints<'_>> {
        let v = Snapshot::version(self, service, version)?;
        Some(switchyard_proxy::endpoints::VersionEndpoints {
            endpoints: &v.endpoints,
            unresolved: &v.unresolved,
        })
    }
}

/// The addresses one version sends traffic to.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionEndpoints {
    pub service: Arc<str>,
    pub version: Arc<str>,
    /// Literal addresses and every name's current set, sorted by address, one per address.
    /// Empty only while none of the version's names has ever resolved and it has no literal
    /// address: then it answers 503.
    pub endpoints: Vec<Endpoint>,
    /// Configured names that have never resolved, in file order.
    pub unresolved: Vec<Arc<str>>,
}

/// One series of `switchyard_dns_lookups_total{service,version,result}`: one count per
/// resolution of a configured name (an SRV name's target lookups are part of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupCount {
    pub service: Arc<str>,
    pub version: Arc<str>,
    pub result: LookupResult,
    pub count: u64,
}

type Counts = BTreeMap<(Arc<str>, Arc<str>, LookupResult), u64>;

/// The running discovery task. Dropping it stops the task.
pub struct Discovery {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    reconfigure: mpsc::UnboundedSender<Config>,
    counts: Arc<Mutex<Counts>>,
    task: JoinHandle<()>,
}

impl Discovery {
    /// Starts resolving `config`'s backend names with `resolver`, on the current tokio runtime.
    /// The first snapshot is published at once: literal addresses only, every name unresolved.
    pub fn start<R: Resolve>(resolver: R, config: &Config) -> Discovery {
        let counts = Arc::new(Mutex::new(Counts::new()));
        let (snapshot_tx, snapshot) = watch::channel(Arc::new(Snapshot::default()));
        let (reconfigure, commands) = mpsc::unbounded_channel();
        let mut task = Task {
            resolver: Arc::new(resolver),
            start: Instant::now(),
            ttls: Ttls::from(&config.resolver),
            entries: HashMap::new(),
            versions: Vec::new(),
            queue: BTreeSet::new(),
            next_id: 0,
            lookups: JoinSet::new(),
            in_flight: HashMap::new(),
            snapshot: snapshot_tx,
            counts: Arc::clone(&counts),
            rng: RandomState::new().hash_one(0x5eed_u64) | 1,
        };
        task.reconfigure(config);
        Discovery {
            snapshot,
            reconfigure,
            counts,
            task: tokio::spawn(task.run(commands)),
        }
    }

    /// [`Discovery::start`] with the real resolver for `config.resolver`.
    pub fn with_hickory(config: &Config) -> Result<Discovery, String> {
        let resolver = HickoryResolver::new(&config.resolver)?;
        tracing::info!(nameservers = ?resolver.nameservers(), "resolving backend names");
        Ok(Discovery::start(resolver, config))
    }

    /// A receiver that sees every new snapshot (`changed().await`, then `borrow_and_update()`).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.borrow())
    }

    /// Follows a reloaded config: new names are resolved at once, names that stay keep what
    /// they know, versions and names that left are forgotten (their counts too). The
    /// nameservers stay those the resolver was made with.
    pub fn reconfigure(&self, config: &Config) {
        // A send fails only when the task has ended, and then nothing is left to configure.
        let _ = self.reconfigure.send(config.clone());
    }

    /// Every version's lookup counts by result, each version with all three results (0 until
    /// one happens), sorted.
    pub fn lookups(&self) -> Vec<LookupCount> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .iter()
            .map(|((service, version, result), &count)| LookupCount {
                service: Arc::clone(service),
                version: Arc::clone(version),
                result: *result,
                count,
            })
            .collect()
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// (service, version, backend): what identifies a name's state across reloads.
type Key = (Arc<str>, Arc<str>, Backend);

struct Entry {
    key: Key,
    /// The backend as written, for the snapshot and the log.
    label: Arc<str>,
    state: NameState,
    /// SRV names only: what each target last resolved to.
    targets: TargetCache,
    /// Whether the last answer was a failure, so a failing name is logged once per streak.
    failing: bool,
}

/// One version with names: its literal addresses and its names' entries, in file order.
struct Plan {
    service: Arc<str>,
    version: Arc<str>,
    literals: Vec<SocketAddr>,
    entries: Vec<u64>,
}

struct Task<R> {
    resolver: Arc<R>,
    start: Instant,
    ttls: Ttls,
    entries: HashMap<u64, Entry>,
    /// Sorted by (service, version).
    versions: Vec<Plan>,
    /// (due, entry id) of every entry not being looked up right now.
    queue: BTreeSet<(Duration, u64)>,
    next_id: u64,
    lookups: JoinSet<(u64, Outcome, TargetCache)>,
    in_flight: HashMap<tokio::task::Id, u64>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    counts: Arc<Mutex<Counts>>,
    rng: u64,
}

impl<R: Resolve> Task<R> {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Config>) {
        loop {
            let now = self.now();
            while self.lookups.len() < MAX_IN_FLIGHT {
                match self.queue.first() {
                    Some(&(due, id)) if due <= now => {
                        self.queue.remove(&(due, id));
                        self.launch(id);
                    }
                    _ => break,
                }
            }
            let next_due = match self.lookups.len() < MAX_IN_FLIGHT {
                true => self.queue.first().map(|&(due, _)| self.start + due),
                false => None,
            };
            let timer = async move {
                match next_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(done) = self.lookups.join_next_with_id() => self.finished(done),
                () = timer => {}
                command = commands.recv() => match command {
                    Some(config) => self.reconfigure(&config),
                    None => return,
                },
            }
        }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// A number in 0..1 for jitter (xorshift64*; only spread matters, not quality).
    fn jitter(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn launch(&mut self, id: u64) {
        let Some(entry) = self.entries.get(&id) else {
            return;
        };
        let resolver = Arc::clone(&self.resolver);
        let handle = match &entry.key.2 {
            Backend::Name { host, port } => {
                let (host, port) = (host.clone(), *port);
                self.lookups.spawn(async move {
                    (
                        id,
                        resolve_name(resolver, host, port).await,
                        TargetCache::new(),
                    )
                })
            }
            Backend::Srv { name } => {
                let (name, targets) = (name.clone(), entry.targets.clone());
                self.lookups.spawn(async move {
                    let (outcome, targets) = resolve_srv(resolver, name, targets).await;
                    (id, outcome, targets)
                })
            }
            Backend::Address(_) => return,
        };
        self.in_flight.insert(handle.id(), id);
    }

    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, (u64, Outcome, TargetCache)), tokio::task::JoinError>,
    ) {
        let (id, outcome, targets) = match done {
            Ok((task, result)) => {
                self.in_flight.remove(&task);
                result
            }
            Err(e) => {
                // A lookup that panicked: count it as failed and ask again later.
                let Some(id) = self.in_flight.remove(&e.id()) else {
                    return;
                };
                (
                    id,
                    Outcome::Error(format!("lookup task failed: {e}")),
                    TargetCache::new(),
                )
            }
        };
        let now = self.now();
        let (ttls, jitter) = (self.ttls, self.jitter());
        // An entry a reload removed meanwhile: nothing to update.
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if matches!(entry.key.2, Backend::Srv { .. }) {
            entry.targets = targets;
        }
        let result = match &outcome {
            Outcome::Resolved { .. } => LookupResult::Ok,
            Outcome::Empty => LookupResult::Empty,
            Outcome::Error(_) => LookupResult::Error,
        };
        {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let (service, version, _) = &entry.key;
            *counts
                .entry((Arc::clone(service), Arc::clone(version), result))
                .or_default() += 1;
        }
        let changed = entry.state.apply(now, &outcome, ttls, jitter);
        log_answer(entry, &outcome, changed);
        entry.failing = !matches!(outcome, Outcome::Resolved { .. });
        self.queue.insert((entry.state.due(), id));
        if changed {
            self.publish();
        }
    }

    fn reconfigure(&mut self, config: &Config) {
        let now = self.now();
        let ttls = Ttls::from(&config.resolver);
        if ttls != self.ttls {
            self.ttls = ttls;
            // Nothing waits longer than the new max_ttl.
            let latest = now + ttls.max;
            let queue = std::mem::take(&mut self.queue);
            for (due, id) in queue {
                let due = due.min(latest);
                if let Some(e) = self.entries.get_mut(&id) {
                    e.state.reschedule(due);
                }
                self.queue.insert((due, id));
            }
        }
        let mut by_key: HashMap<Key, u64> = self
            .entries
            .iter()
            .map(|(&id, e)| (e.key.clone(), id))
            .collect();
        let mut kept: HashMap<u64, Entry> = HashMap::new();
        let mut versions = Vec::new();
        for service in &config.services {
            let service_name: Arc<str> = service.name.as_str().into();
            for v in service.versions.iter().filter(|v| v.has_names()) {
                let version_name: Arc<str> = v.name.as_str().into();
                let mut ids = Vec::new();
                for backend in v.backends.iter().filter(|b| b.address().is_none()) {
                    let key = (service_name.clone(), version_name.clone(), backend.clone());
                    let id = match by_key.remove(&key) {
                        Some(id) => id,
                        None => {
                            let id = self.next_id;
                            self.next_id += 1;
                            self.entries.insert(
                                id,
                                Entry {
                                    label: backend.to_string().into(),
                                    key,
                                    state: NameState::new(now),
                                    targets: TargetCache::new(),
                                    failing: false,
                                },
                            );
                            self.queue.insert((now, id));
                            id
                        }
                    };
                    if let Some(e) = self.entries.remove(&id) {
                        kept.insert(id, e);
                    }
                    ids.push(id);
                }
                versions.push(Plan {
                    service: service_name.clone(),
                    version: version_name,
                    literals: v.addresses().collect(),
                    entries: ids,
                });
            }
        }
        // What is left in `entries` left the config.
        for (id, e) in self.entries.drain() {
            self.queue.remove(&(e.state.due(), id));
        }
        self.entries = kept;
        versions.sort_by(|a, b| (&a.service, &a.version).cmp(&(&b.service, &b.version)));
        self.versions = versions;
        self.reset_counts();
        self.publish();
    }

    /// Counts for exactly the versions configured now, all three results present.
    fn reset_counts(&self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.retain(|(service, version, _), _| {
            self.versions
                .iter()
                .any(|p| p.service == *service && p.version == *version)
        });
        for p in &self.versions {
            for result in LookupResult::ALL {
                counts
                    .entry((p.service.clone(), p.version.clone(), result))
                    .or_default();
            }
        }
    }

    fn publish(&self) {
        let previous = Arc::clone(&self.snapshot.borrow());
        let versions = self
            .versions
            .iter()
            .map(|p| {
                let names: Vec<NameView<'_>> = p
                    .entries
                    .iter()
                    .filter_map(|id| self.entries.get(id))
                    .map(|e| NameView {
                        name: &e.label,
                        state: &e.state,
                    })
                    .collect();
                let had = previous.version(&p.service, &p.version);
                let had = had.map_or(&[][..], |v| &v.endpoints);
                VersionEndpoints {
                    service: p.service.clone(),
                    version: p.version.clone(),
                    endpoints: version::endpoints(&p.literals, &names, had),
                    unresolved: version::unresolved(&names),
                }
            })
            .collect();
        let snapshot = Snapshot { versions };
        self.snapshot.send_if_modified(|current| {
            if **current == snapshot {
                return false;
            }
            *current = Arc::new(snapshot);
            true
        });
    }
}

/// One line per change, and per failing streak rather than per failed lookup.
fn log_answer(entry: &Entry, outcome: &Outcome, changed: bool) {
    let (service, version, _) = &entry.key;
    let name = &*entry.label;
    let kept = entry.state.addresses().map_or(0, <[_]>::len);
    match outcome {
        Outcome::Resolved { .. } if changed => {
            let addresses: Vec<String> = entry
                .state
                .addresses()
                .unwrap_or_default()
                .iter()
                .map(|(a, _)| a.to_string())
                .collect();
            tracing::info!(%service, %version, %name, ?addresses, "backend name resolved");
        }
        Outcome::Resolved { .. } => {}
        Outcome::Empty if entry.state.gone() && changed => tracing::warn!(
            %service, %version, %name,
            "backend name answered with no records {} times in a row; its addresses leave the version unless nothing else would be left",
            super::name::EMPTY_ANSWERS_TO_REMOVE
        ),
        Outcome::Empty | Outcome::Error(_) if !entry.failing => {
            let (result, error) = match outcome {
                Outcome::Error(e) => ("error", e.as_str()),
                _ => ("empty", "no records"),
            };
            tracing::warn!(%service, %version, %name, result, error, kept, "backend name lookup failed; keeping its last good addresses");
        }
        Outcome::Empty | Outcome::Error(_) => {
            tracing::debug!(%service, %version, %name, ?outcome, kept, "backend name lookup failed again");
        }
    }
}
