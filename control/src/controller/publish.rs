//! Publishing what the loop decided: the routing table for the data path, the view for the
//! API — each only when something it shows changed.
//!
//! The table is recompiled only when some service's traffic (weights, rolled-back versions,
//! the canary's sticky position) differs from what the current table was compiled from, or
//! when discovery publishes new addresses for backend names (SPEC §12): bookkeeping commits
//! (failed checks, gate waits, pauses) keep the table and its 10,000-service compile (~90 ms)
//! alone. A compile carries every backend's pool, health and counters and every version's
//! round-robin position over; backends it drops are drained
//! ([`RoutingTable::drain_removed`]). Views are rebuilt per changed service and published as
//! one immutable [`View`], services indexed by name, so readers never lock and never scan.

use std::sync::Arc;

use switchyard_config::Service;
use switchyard_proxy::table::RolloutTraffic;
use switchyard_proxy::{RoutingTable, ServiceTraffic};
use tokio::sync::watch;

use super::{Controller, ServiceView, View};
use crate::discovery::Snapshot;
use crate::rollout::roles::Roles;
use crate::store::ServiceState;

/// What the data path needs to know about one service's state.
pub(super) fn traffic_of(cfg: &Service, state: &ServiceState) -> ServiceTraffic {
    ServiceTraffic {
        weights: state.weights(),
        rolled_back: state.rolled_back.keys().cloned().collect(),
        canary: Roles::of(cfg, state).map(|r| r.canary),
        rollout: rollout_traffic(cfg, state),
    }
}

/// The next snapshot of resolved names; never ready without discovery (or once it stopped).
pub(super) async fn resolved_changed(
    rx: &mut Option<watch::Receiver<Arc<Snapshot>>>,
) -> Option<Arc<Snapshot>> {
    let Some(receiver) = rx.as_mut() else {
        return std::future::pending().await;
    };
    if receiver.changed().await.is_err() {
        *rx = None;
        return std::future::pending().await;
    }
    Some(Arc::clone(&receiver.borrow_and_update()))
}

/// The rollout as the data path needs it: its number, roles, whether it runs, and the
/// current step's mirror share (none before a gated first step is applied).
fn rollout_traffic(cfg: &Service, state: &ServiceState) -> Option<RolloutTraffic> {
    let record = state.rollout.as_ref()?;
    let steps = &cfg.rollout.as_ref()?.steps;
    let active = record.phase.is_active();
    let applied = !record.awaiting_gate || record.step_started_at > 0;
    let mirror = steps
        .get(record.step)
        .and_then(|s| s.mirror)
        .filter(|_| active && applied)
        .unwrap_or(0);
    Some(RolloutTraffic {
        number: record.number,
        stable: record.stable.clone(),
        canary: record.canary.clone(),
        active,
        mirror,
    })
}

impl Controller<'_> {
    /// Discovery published new addresses: the table follows at the next publish.
    pub(super) fn names_resolved(&mut self, snapshot: Arc<Snapshot>) {
        if *snapshot != *self.resolved {
            self.resolved = snapshot;
            self.traffic_dirty = true;
        }
    }

    /// Replaces a service's state in memory; marks what must be republished.
    pub(super) fn set_state(&mut self, service: &str, next: ServiceState) {
        if let Some(cfg) = self.core.config.service(service) {
            let traffic = traffic_of(cfg, &next);
            if self.traffic.get(service) != Some(&traffic) {
                self.traffic.insert(service.to_string(), traffic);
                self.traffic_dirty = true;
            }
        }
        self.state.insert(service.to_string(), next);
        self.dirty_views.push(service.to_string());
    }

    /// Every service's view must be rebuilt (a new config).
    pub(super) fn all_views_dirty(&mut self) {
        self.traffic_dirty = true;
        self.dirty_views = self
            .core
            .config
            .services
            .iter()
            .map(|s| s.name.clone())
            .collect();
    }

    /// Compiles and swaps the table if traffic changed, then publishes changed views.
    pub(super) fn publish(&mut self) {
        let table_changed = std::mem::take(&mut self.traffic_dirty);
        if table_changed {
            self.swap_table();
        }
        if !table_changed && self.dirty_views.is_empty() {
            return;
        }
        // Status before the views: whoever reads a new state can then also read whether it is
        // persisted yet (`persistence.pending`) — e.g. before stopping the process.
        self.publish_pending();
        let mut dirty = std::mem::take(&mut self.dirty_views);
        dirty.sort_unstable();
        dirty.dedup();
        for name in dirty {
            if let Some(view) = self.view_of(&name) {
                self.views.insert(Arc::from(name.as_str()), Arc::new(view));
            }
        }
        self.core.readers.view.store(Arc::new(View {
            config: Arc::clone(&self.core.config),
            table: self.core.table.load_full(),
            services: self.views.clone(),
        }));
    }

    fn view_of(&self, name: &str) -> Option<ServiceView> {
        let cfg = self.core.config.service(name)?;
        let state = self.state.get(name).cloned().unwrap_or_default();
        Some(ServiceView {
            revision: state.revision,
            roles: Roles::of(cfg, &state),
            state,
            threshold: cfg.rollout.as_ref().map(|r| r.analysis.threshold),
            last_analysis: self.clocks.get(name).and_then(|c| c.last_analysis.clone()),
            history: self.history.get(name).cloned().unwrap_or_default(),
            index: self.index.get(name).copied(),
        })
    }

    fn swap_table(&mut self) {
        let previous = self.core.table.load_full();
        let next = RoutingTable::compile_resolved(
            &self.core.config,
            &self.traffic,
            &*self.resolved,
            Some(&previous),
        );
        self.index = next
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (Arc::clone(&s.name), i))
            .collect();
        let next = Arc::new(next);
        self.core.table.store(Arc::clone(&next));
        let drained = next.drain_removed(&previous);
        if drained > 0 {
            tracing::debug!(drained, "backends left the table; their connections drain");
        }
        self.retire(previous);
    }

    /// Keeps a replaced table until no request holds it, so the last reference — and freeing
    /// it, ~30 ms for 10,000 services — is the loop's, never a request's on the data path.
    fn retire(&mut self, table: Arc<RoutingTable>) {
        self.free_retired();
        self.core.retired.push(table);
    }

    pub(super) fn free_retired(&mut self) {
        self.core.retired.retain(|t| Arc::strong_count(t) > 1);
    }

    /// The route of a service in the current table.
    pub(super) fn route<'t>(
        &self,
        table: &'t RoutingTable,
        service: &str,
    ) -> Option<&'t switchyard_proxy::table::ServiceRoute> {
        let route = table.services.get(*self.index.get(service)?)?;
        (&*route.name == service).then_some(route)
    }
}
