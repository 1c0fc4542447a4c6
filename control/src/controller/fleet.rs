//! The loop's side of a fleet (SPEC §11), with a shared store only.
//!
//! - **Leadership.** Only the leader runs the rollout clock's steps and interval analysis
//!   (`engine::evaluate` is told). A replica that just became leader starts fresh analysis
//!   windows for the running rollouts — their steps keep the start time the record holds —
//!   and asks again the gates the old leader had asked.
//! - **Pooled analysis.** Every replica reports, once a second, its cumulative readings of
//!   each running rollout's canary and stable; the store publishes them under the lease.
//!   The leader adds every live replica's traffic since its interval began to its own, so
//!   `min_requests` and the thresholds apply to the fleet's traffic; a replica whose lease
//!   expired is no longer in the view and drops out of the sum. Per-second windows (for
//!   per-second judges) get what each replica published since the last second closed.
//!   Health rollbacks are the leader's too, and only when no live replica sees a healthy
//!   canary backend.
//! - **Report.** Applied revisions and topology hashes, for `GET /api/v1/fleet` and drift.

use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard_proxy::RoutingTable;

use super::Controller;
use crate::engine::Observations;
use crate::rollout::{transitions, Phase};
use crate::store::fleet::{topology_hash, FleetView, Report, ServiceWindows};
use crate::telemetry::window::Window;

/// Where the leader's interval began for one other replica: its readings then.
#[derive(Debug, Clone)]
pub(super) struct PeerBaseline {
    boot: String,
    canary: Window,
    stable: Window,
    /// Its readings when the leader's last second closed (per-second judges).
    second: (Window, Window),
}

impl Controller<'_> {
    /// Follows the store's leadership; returns whether this replica leads.
    pub(super) fn follow_leadership(&mut self) -> bool {
        let leading = self.core.store.is_leader();
        if leading && !self.leading {
            let running: Vec<String> = self.clocks.keys().cloned().collect();
            for service in running {
                self.start_clock(&service);
                let gate = self
                    .state
                    .get(&service)
                    .and_then(|s| s.rollout.as_ref())
                    .filter(|r| r.phase == Phase::Progressing && r.awaiting_gate)
                    .map(transitions::gate_step);
                if let Some(step) = gate {
                    self.run_effects(&service, 0, vec![crate::plan::Effect::AskGates { step }]);
                }
            }
        }
        self.leading = leading;
        leading
    }

    /// Topology hashes of the config now serving (after every reload).
    pub(super) fn hash_topology(&mut self) {
        if self.core.store.shared() {
            self.hashes = Arc::new(
                self.core
                    .config
                    .services
                    .iter()
                    .map(|s| (s.name.clone(), topology_hash(s)))
                    .collect(),
            );
        }
    }

    /// This replica's report to the fleet (once a second).
    pub(super) fn report(&self, table: &RoutingTable) {
        let mut windows = BTreeMap::new();
        for service in self.clocks.keys() {
            let Some(record) = self
                .state
                .get(service)
                .and_then(|s| s.rollout.as_ref())
                .filter(|r| r.phase == Phase::Progressing)
            else {
                continue;
            };
            let Some(route) = self.route(table, service) else {
                continue;
            };
            let version = |name: &str| route.versions.iter().find(|v| &*v.name == name);
            let (Some(canary), Some(stable)) = (version(&record.canary), version(&record.stable))
            else {
                continue;
            };
            let checked = self
                .core
                .config
                .service(service)
                .is_some_and(|s| s.health_check.is_some());
            windows.insert(
                service.clone(),
                ServiceWindows {
                    rollout: record.number,
                    canary: self.sampler.reading(service, canary),
                    stable: self.sampler.reading(service, stable),
                    canary_up: checked.then(|| canary.backends.iter().any(|b| b.is_healthy())),
                },
            );
        }
        self.core.store.report(Report {
            applied: self
                .state
                .iter()
                .map(|(k, s)| (k.clone(), s.revision))
                .collect(),
            hashes: Arc::clone(&self.hashes),
            windows,
        });
    }

    /// This replica's observations of a running rollout, made the fleet's: the leader adds
    /// every other live replica's traffic since the interval began; other replicas judge
    /// only what any replica may (fast-fail on their own last second).
    pub(super) fn pool(
        &mut self,
        service: &str,
        rollout: u64,
        mut obs: Observations,
        leading: bool,
        fleet: Option<&FleetView>,
    ) -> Observations {
        if !leading {
            obs.canary_health = None;
            return obs;
        }
        let (Some(fleet), Some(clock)) = (fleet, self.clocks.get_mut(service)) else {
            return obs;
        };
        clock
            .peers
            .retain(|name, _| fleet.windows.contains_key(name));
        let mut canary_up_elsewhere = false;
        for (name, published) in &fleet.windows {
            let Some(w) = published
                .services
                .get(service)
                .filter(|w| w.rollout == rollout)
            else {
                continue;
            };
            let base = clock
                .peers
                .entry(name.clone())
                .or_insert_with(|| baseline(&published.boot, w));
            if base.boot != published.boot {
                // It restarted: its counters began again at zero.
                *base = PeerBaseline {
                    boot: published.boot.clone(),
                    canary: Window::default(),
                    stable: Window::default(),
                    second: Default::default(),
                };
            }
            obs.canary.interval += &w.canary.since(&base.canary);
            obs.stable.interval += &w.stable.since(&base.stable);
            // The second that closed here gets what the replica published since the last
            // one (its publications are a second apart, not aligned with ours: a request
            // may count a second late, canary and stable alike).
            if let (Some(c), Some(st)) = (
                obs.canary.closed_second.as_mut(),
                obs.stable.closed_second.as_mut(),
            ) {
                *c += &w.canary.since(&base.second.0);
                *st += &w.stable.since(&base.second.1);
                base.second = (w.canary.clone(), w.stable.clone());
            }
            canary_up_elsewhere |= w.canary_up == Some(true);
        }
        if canary_up_elsewhere {
            obs.canary_health = None;
        }
        obs
    }

    /// A new analysis interval begins: every other replica's readings now are its interval
    /// baseline (its per-second baseline carries on).
    pub(super) fn rebase_peers(&mut self, service: &str, rollout: u64, fleet: Option<&FleetView>) {
        let (Some(fleet), Some(clock)) = (fleet, self.clocks.get_mut(service)) else {
            return;
        };
        for (name, p) in &fleet.windows {
            let Some(w) = p.services.get(service).filter(|w| w.rollout == rollout) else {
                continue;
            };
            let base = clock
                .peers
                .entry(name.clone())
                .or_insert_with(|| baseline(&p.boot, w));
            base.canary = w.canary.clone();
            base.stable = w.stable.clone();
        }
    }
}

fn baseline(boot: &str, w: &ServiceWindows) -> PeerBaseline {
    PeerBaseline {
        boot: boot.to_string(),
        canary: w.canary.clone(),
        stable: w.stable.clone(),
        second: (w.canary.clone(), w.stable.clone()),
    }
}
