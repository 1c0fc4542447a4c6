//! The routing table: an immutable, precompiled view of what traffic should do right now.
//!
//! The control plane compiles a new [`RoutingTable`] whenever the config or the live weights
//! change and swaps it in with one `ArcSwap::store` (DESIGN §1–2). The data path loads it once
//! per request and only walks plain data: matchers are pre-sorted, weights are cumulative
//! arrays, error bodies are pre-rendered, and every backend is an `Arc` to its pool, health
//! flag and counters.
//!
//! Things that must outlive one table — connection pools, health state, counters, each
//! version's round-robin position — are looked up in the previous table by a stable identity
//! (service, version, release, address) and carried over, so a swap never resets a counter
//! or drops a warm connection. A backend the new table no longer has (a name re-resolved
//! elsewhere, a reload) drains: [`RoutingTable::drain_removed`].
//!
//! A version's backends are its literal addresses, or, when it has backend names (SPEC §12),
//! the endpoints the control plane resolved ([`Resolved`]): each address a backend of its
//! own, taking turns by weight ([`BackendTurns`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use switchyard_config::{
    Config, HealthCheck, OverrideMatch, Sticky, Timeouts, Upstream, UpstreamProtocol,
};

use crate::budget::RetryBudget;
use crate::canary::{CanaryCounters, Impact, LiveRollout};
use crate::endpoints::{Endpoint, NoNames, Resolved, UNIT_WEIGHT};
use crate::pick::{BackendTurns, WeightedPick};
use crate::route::{MatchRule, ServiceMatcher};
use crate::stats::{BackendStats, VersionStats};
use crate::upstream::{SendTimeouts, UpstreamPool};

/// What the control plane decided about one service's traffic, on top of the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceTraffic {
    /// Live weights by version name; a version not listed keeps its config weight.
    pub weights: BTreeMap<String, u32>,
    /// Versions taken out of traffic entirely (weight 0, overrides ignored; SPEC §4.5).
    pub rolled_back: BTreeSet<String>,
    /// The version whose sticky buckets come first (the rollout's canary).
    pub canary: Option<String>,
    /// The service's current (or latest) rollout, for the safety net, mirror copies and
    /// impact counting (SPEC §13).
    pub rollout: Option<RolloutTraffic>,
}

/// What the data path needs to know of a rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutTraffic {
    /// Which rollout of the service (1, 2, …): its impact counters start with it.
    pub number: u64,
    pub stable: String,
    pub canary: String,
    /// Progressing or paused.
    pub active: bool,
    /// A mirror step's share of copies, in percent; 0 on a traffic step.
    pub mirror: u32,
}

/// Traffic decisions for all services, by service name.
pub type TrafficState = BTreeMap<String, ServiceTraffic>;

/// One backend: its address, pooled connections and health. Survives table swaps.
#[derive(Debug)]
pub struct Backend {
    pub address: SocketAddr,
    pub pool: Arc<UpstreamPool>,
    /// Set by active health checks; a new backend starts healthy, except an address a name
    /// resolved to while health checks are configured: it waits for its first check.
    pub healthy: AtomicBool,
    /// Has never passed a health check: down until its first good probe brings it up.
    pub unchecked: AtomicBool,
}

impl Backend {
    fn new(address: SocketAddr, upstream: &Upstream, wait_for_check: bool) -> Backend {
        Backend {
            address,
            pool: Arc::new(UpstreamPool::new(address, upstream.clone())),
            healthy: AtomicBool::new(!wait_for_check),
            unchecked: AtomicBool::new(wait_for_check),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }
}

#[derive(Debug)]
pub struct VersionRoute {
    pub name: Arc<str>,
    pub release: Arc<str>,
    pub weight: u32,
    pub rolled_back: bool,
    pub backends: Box<[Arc<Backend>]>,
    /// `backend_stats[i]` counts requests sent to `backends[i]` under this release.
    pub backend_stats: Box<[Arc<BackendStats>]>,
    /// `names[i]`: the configured name `backends[i]` was resolved from (`None`: a literal).
    pub names: Box<[Option<Arc<str>>]>,
    /// Configured names of this version that have never resolved (SPEC §12, for the API).
    pub unresolved: Box<[Arc<str>]>,
    pub stats: Arc<VersionStats>,
    /// Whose turn it is, by weight (plain rotation when all weigh the same).
    turns: BackendTurns,
    next_backend: AtomicUsize,
    /// Pre-rendered 503 body, so the error path formats nothing either.
    pub no_healthy_body: Bytes,
}

impl VersionRoute {
    /// Round-robin (by weight) over healthy backends, skipping `exclude` (the one that just
    /// failed).
    pub fn pick_backend(&self, exclude: Option<usize>) -> Option<usize> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = if n == 1 {
            0
        } else {
            self.turns.first(self.next_backend.fetch_add(1, Relaxed), n)
        };
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| Some(i) != exclude && self.backends[i].is_healthy())
    }
}

#[derive(Debug)]
pub enum StickyKey {
    Header(HeaderName),
    Cookie(Box<str>),
}

#[derive(Debug)]
pub enum OverrideRule {
    Header {
        name: HeaderName,
        value: HeaderValue,
        version: usize,
    },
    Cookie {
        name: Box<str>,
        value: Box<str>,
        version: usize,
    },
}

#[derive(Debug)]
pub struct ServiceRoute {
    pub name: Arc<str>,
    pub versions: Box<[VersionRoute]>,
    pub pick: WeightedPick,
    pub sticky: Option<StickyKey>,
    pub overrides: Box<[OverrideRule]>,
    pub timeouts: SendTimeouts,
    /// Whether backends speak HTTP/1.1 (only then can an `Upgrade` be passed through).
    pub upstream_is_http1: bool,
    /// Active health checking, read by the control plane's checker.
    pub health_check: Option<HealthCheck>,
    /// The current (or latest) rollout (SPEC §13); `None` before the first.
    pub rollout: Option<LiveRollout>,
    /// The safety net's and mirror copies' counters; outlive rollouts and swaps.
    pub canary_counters: Arc<CanaryCounters>,
}

impl ServiceRoute {
    /// The live share of version `i` in percent (0 when nothing has weight).
    pub fn share_percent(&self, i: usize) -> f64 {
        let total: u64 = self.versions.iter().map(|v| u64::from(v.weight)).sum();
        if total == 0 {
            0.0
        } else {
            f64::from(self.versions[i].weight) * 100.0 / total as f64
        }
    }
}

/// The compiled, immutable routing table.
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// Increases with every compiled table; lets readers tell tables apart.
    pub generation: u64,
    pub matcher: ServiceMatcher,
    pub services: Box<[ServiceRoute]>,
}

/// Objects carried from the previous table into the next one.
#[derive(Default)]
struct CarryOver<'a> {
    backends: HashMap<(&'a str, &'a str, SocketAddr), &'a Arc<Backend>>,
    backend_stats: HashMap<(&'a str, &'a str, &'a str, SocketAddr), &'a Arc<BackendStats>>,
    versions: HashMap<(&'a str, &'a str, &'a str), &'a Arc<VersionStats>>,
    /// Each version's round-robin position: a swap does not send every version's next
    /// request to its first backend.
    cursors: HashMap<(&'a str, &'a str), usize>,
    /// By service and rollout number.
    rollouts: HashMap<(&'a str, u64), &'a LiveRollout>,
    canary: HashMap<&'a str, &'a Arc<CanaryCounters>>,
}

impl<'a> CarryOver<'a> {
    fn from(previous: Option<&'a RoutingTable>) -> CarryOver<'a> {
        let mut c = CarryOver::default();
        for s in previous.iter().flat_map(|t| t.services.iter()) {
            c.canary.insert(&s.name, &s.canary_counters);
            if let Some(r) = &s.rollout {
                c.rollouts.insert((&s.name, r.number), r);
            }
            for v in s.versions.iter() {
                c.versions.insert((&s.name, &v.name, &v.release), &v.stats);
                c.cursors
                    .insert((&s.name, &v.name), v.next_backend.load(Relaxed));
                for (b, st) in v.backends.iter().zip(v.backend_stats.iter()) {
                    c.backends.insert((&s.name, &v.name, b.address), b);
                    c.backend_stats
                        .insert((&s.name, &v.name, &v.release, b.address), st);
                }
            }
        }
        c
    }
}

impl RoutingTable {
    /// Compiles a table from the config's topology and the control plane's traffic state,
    /// carrying long-lived objects over from `previous`; backend names give no backends.
    pub fn compile(
        config: &Config,
        traffic: &TrafficState,
        previous: Option<&RoutingTable>,
    ) -> RoutingTable {
        RoutingTable::compile_resolved(config, traffic, &NoNames, previous)
    }

    /// [`RoutingTable::compile`], with the addresses backend names resolved to.
    pub fn compile_resolved(
        config: &Config,
        traffic: &TrafficState,
        resolved: &dyn Resolved,
        previous: Option<&RoutingTable>,
    ) -> RoutingTable {
        let carry = CarryOver::from(previous);
        let no_traffic = ServiceTraffic::default();
        let services: Vec<ServiceRoute> = config
            .services
            .iter()
            .map(|svc| {
                let t = traffic.get(&svc.name).unwrap_or(&no_traffic);
                compile_service(svc, t, resolved, &carry)
            })
            .collect();
        let matcher = ServiceMatcher::new(config.services.iter().map(|s| {
            s.matcher.as_ref().map(|m| MatchRule {
                hosts: &m.hosts,
                path_prefix: &m.path_prefix,
            })
        }));
        RoutingTable {
            generation: previous.map_or(1, |p| p.generation + 1),
            matcher,
            services: services.into(),
        }
    }

    pub fn service(&self, name: &str) -> Option<&ServiceRoute> {
        self.services.iter().find(|s| &*s.name == name)
    }

    /// Drains every backend of `previous` that this table no longer has: it gets no new
    /// requests (it is not in this table), requests in flight on it finish, and its idle
    /// pooled connections close now, as do its busy ones when their exchange ends. Call it
    /// once this table is the current one. Returns how many backends were drained.
    pub fn drain_removed(&self, previous: &RoutingTable) -> usize {
        let kept: HashSet<*const Backend> = self
            .services
            .iter()
            .flat_map(|s| s.versions.iter())
            .flat_map(|v| v.backends.iter())
            .map(Arc::as_ptr)
            .collect();
        let mut drained = 0;
        for b in previous
            .services
            .iter()
            .flat_map(|s| s.versions.iter())
            .flat_map(|v| v.backends.iter())
            .filter(|b| !kept.contains(&Arc::as_ptr(b)))
        {
            b.pool.drain();
            drained += 1;
        }
        drained
    }
}

/// A version's endpoints: what its names resolved to, else its literal addresses.
fn endpoints_of<'r>(
    svc: &str,
    v: &switchyard_config::Version,
    resolved: &'r dyn Resolved,
) -> (std::borrow::Cow<'r, [Endpoint]>, &'r [Arc<str>]) {
    if let Some(known) = v
        .has_names()
        .then(|| resolved.version(svc, &v.name))
        .flatten()
    {
        return (known.endpoints.into(), known.unresolved);
    }
    let literals = v.addresses().map(|address| Endpoint {
        address,
        name: None,
        weight: UNIT_WEIGHT,
    });
    (literals.collect::<Vec<_>>().into(), &[])
}

fn compile_service(
    svc: &switchyard_config::Service,
    traffic: &ServiceTraffic,
    resolved: &dyn Resolved,
    carry: &CarryOver<'_>,
) -> ServiceRoute {
    let name: Arc<str> = svc.name.as_str().into();
    let versions: Vec<VersionRoute> = svc
        .versions
        .iter()
        .map(|v| {
            let rolled_back = traffic.rolled_back.contains(&v.name);
            let weight = if rolled_back {
                0
            } else {
                traffic.weights.get(&v.name).copied().unwrap_or(v.weight)
            };
            let (endpoints, unresolved) = endpoints_of(&svc.name, v, resolved);
            let backends: Vec<Arc<Backend>> = endpoints
                .iter()
                .map(
                    |e| match carry.backends.get(&(&*svc.name, &*v.name, e.address)) {
                        // A changed upstream protocol or CA needs new connections (health starts over).
                        Some(b) if b.pool.upstream().same_connections(&svc.upstream) => {
                            if svc.health_check.is_none() && !b.is_healthy() {
                                // Checks were turned off: nothing would ever bring it back up.
                                b.unchecked.store(false, Relaxed);
                                b.healthy.store(true, Relaxed);
                            }
                            Arc::clone(b)
                        }
                        // A resolved address joins after its first health check (SPEC §12).
                        _ => Arc::new(Backend::new(
                            e.address,
                            &svc.upstream,
                            e.name.is_some() && svc.health_check.is_some(),
                        )),
                    },
                )
                .collect();
            let backend_stats = endpoints
                .iter()
                .map(|e| {
                    let key = (&*svc.name, &*v.name, &*v.release, e.address);
                    carry
                        .backend_stats
                        .get(&key)
                        .map_or_else(Default::default, |s| Arc::clone(s))
                })
                .collect();
            let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
            let cursor = carry.cursors.get(&(&*svc.name, &*v.name)).copied();
            let stats = carry
                .versions
                .get(&(&*svc.name, &*v.name, &*v.release))
                .map_or_else(Default::default, |s| Arc::clone(s));
            VersionRoute {
                name: v.name.as_str().into(),
                release: v.release.as_str().into(),
                weight,
                rolled_back,
                backends: backends.into(),
                backend_stats,
                names: endpoints.iter().map(|e| e.name.clone()).collect(),
                unresolved: unresolved.into(),
                stats,
                turns: BackendTurns::new(&weights),
                next_backend: AtomicUsize::new(cursor.unwrap_or(0)),
                no_healthy_body: Bytes::from(format!(
                    "no healthy backend for service {} version {}\n",
                    svc.name, v.name
                )),
            }
        })
        .collect();

    let index_of = |name: &str| versions.iter().position(|v| &*v.name == name);
    // Sticky buckets: the canary first (so its range only grows from the same start), then
    // the others in config order.
    let canary = traffic
        .canary
        .as_deref()
        .or(svc.rollout.as_ref().map(|r| r.canary.as_str()))
        .and_then(index_of);
    let order: Vec<usize> = canary
        .into_iter()
        .chain((0..versions.len()).filter(|&i| Some(i) != canary))
        .collect();
    let weights: Vec<u32> = versions.iter().map(|v| v.weight).collect();

    let overrides = svc
        .overrides
        .iter()
        .filter_map(|o| {
            let version = index_of(&o.version)?;
            if versions[version].rolled_back {
                // SPEC §4.5: a rolled-back version gets no traffic, overrides included.
                return None;
            }
            Some(match &o.when {
                OverrideMatch::Header { name, value } => OverrideRule::Header {
                    name: HeaderName::from_bytes(name.as_bytes()).ok()?,
                    value: HeaderValue::from_str(value).ok()?,
                    version,
                },
                OverrideMatch::Cookie { name, value } => OverrideRule::Cookie {
                    name: name.as_str().into(),
                    value: value.as_str().into(),
                    version,
                },
            })
        })
        .collect();
    let sticky = svc.sticky.as_ref().and_then(|s| match s {
        Sticky::Header(h) => HeaderName::from_bytes(h.as_bytes())
            .ok()
            .map(StickyKey::Header),
        Sticky::Cookie(c) => Some(StickyKey::Cookie(c.as_str().into())),
    });
    let Timeouts {
        connect,
        request,
        idle,
    } = svc.timeouts;
    let rollout = live_rollout(svc, traffic, &index_of, carry);
    let canary_counters = carry
        .canary
        .get(&*svc.name)
        .map_or_else(Default::default, |c| Arc::clone(c));

    ServiceRoute {
        name,
        pick: WeightedPick::new(&weights, &order),
        versions: versions.into(),
        sticky,
        overrides,
        timeouts: SendTimeouts {
            connect,
            request,
            idle,
            max_connections: svc.upstream.max_connections,
            max_connecting: svc.upstream.max_connecting,
            queue: svc.upstream.queue,
            queue_timeout: svc.upstream.queue_timeout,
        },
        upstream_is_http1: svc.upstream.protocol == UpstreamProtocol::Http1,
        health_check: svc.health_check.clone(),
        rollout,
        canary_counters,
    }
}

/// The service's rollout as the data path needs it; its budget and impact carried over
/// while it is the same rollout.
fn live_rollout(
    svc: &switchyard_config::Service,
    traffic: &ServiceTraffic,
    index_of: &impl Fn(&str) -> Option<usize>,
    carry: &CarryOver<'_>,
) -> Option<LiveRollout> {
    let t = traffic.rollout.as_ref()?;
    let cfg = svc.rollout.as_ref()?;
    let previous = carry.rollouts.get(&(&*svc.name, t.number));
    let safety_net = cfg.safety_net;
    Some(LiveRollout {
        number: t.number,
        stable: index_of(&t.stable)?,
        canary: index_of(&t.canary)?,
        active: t.active,
        safety_net,
        mirror_pct: if t.active { t.mirror.min(100) } else { 0 },
        mirror_max_body: cfg.mirror.max_body,
        budget: match previous {
            Some(p) if p.safety_net == safety_net => Arc::clone(&p.budget),
            _ => Arc::new(RetryBudget::new(safety_net.map_or(0, |n| n.budget))),
        },
        impact: match previous.and_then(|p| p.impact.as_ref()) {
            Some(impact) => Some(Arc::clone(impact)),
            None => t.active.then(|| Arc::new(Impact::default())),
        },
    })
}

#[cfg(test)]
mod tests;
