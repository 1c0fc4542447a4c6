//! The config file's intent on the loop's side: load it off the loop's thread, reconcile
//! every service with it (applied at once, persisted after), start the rollouts it names,
//! and say what only a restart can change.

use std::sync::Arc;
use std::time::SystemTime;

use super::race::Redo;
use super::Controller;
use crate::clock;
use crate::commands::reload;
use crate::engine::RollbackReason;
use crate::rollout::transitions;
use crate::status::{restart_needed, ReloadOutcome};
use crate::store::Source;

impl Controller<'_> {
    pub(super) async fn reload(&mut self) -> Result<(), String> {
        let path = self.core.config_path.clone();
        // Certificates and anything else that follows the file reload beside it, on the
        // blocking pool too.
        let hook = Arc::clone(&self.core.on_reload);
        let side = tokio::task::spawn_blocking(move || hook());
        let loaded = reload::load(&path).await;
        let _ = side.await;
        let config = match loaded {
            Ok(config) => config,
            Err(message) => {
                tracing::error!(path = %path.display(), errors = %message, "config rejected; the previous config keeps serving");
                self.core.status.rcu(|s| {
                    s.with_reload(ReloadOutcome::Error(message.clone()), SystemTime::now())
                });
                metrics::counter!("switchyard_config_reloads_total", "result" => "error")
                    .increment(1);
                return Err(message);
            }
        };
        let needed = restart_needed(&self.core.started_with, &config);
        if !needed.is_empty() {
            tracing::warn!(
                "the config changed settings that take effect after a restart: {}",
                needed.join(", ")
            );
        }
        // Names that stay keep their addresses; new ones are resolved at once, and the table
        // takes them when discovery publishes.
        if let Some(discovery) = &self.core.discovery {
            discovery.reconfigure(&config);
        }
        self.core.config = Arc::new(config);
        self.reconcile().await;
        self.core.status.rcu(|s| {
            let mut next = s.with_reload(ReloadOutcome::Ok, SystemTime::now());
            next.restart_needed = needed.clone();
            next
        });
        metrics::counter!("switchyard_config_reloads_total", "result" => "ok").increment(1);
        tracing::info!(path = %path.display(), "config reloaded");
        Ok(())
    }

    /// Reconciles every service with the config now serving (start, reload, restart).
    pub(super) async fn reconcile(&mut self) {
        let config = Arc::clone(&self.core.config);
        let known = |name: &String| config.service(name).is_some();
        self.state.retain(|n, _| known(n));
        self.clocks.retain(|n, _| known(n));
        self.history.retain(|n, _| known(n));
        self.traffic.retain(|n, _| known(n));
        self.views.retain(|n, _| config.service(n).is_some());
        self.all_views_dirty();
        self.hash_topology();
        // What the table is compiled from, for every service (the config may have changed
        // topology, or this is a fresh incarnation).
        self.traffic = config
            .services
            .iter()
            .filter_map(|svc| {
                let state = self.state.get(&svc.name)?;
                Some((svc.name.clone(), super::publish::traffic_of(svc, state)))
            })
            .collect();
        let now = clock::now();
        for plan in reload::reconcile(&config, &self.state, now) {
            self.apply_toward(plan, Redo::Reconcile, false);
        }
        // One table compile for the whole reload (10,000 services: ~90 ms), then persist.
        self.publish();
        self.flush().await;
        // Rollout counters exist from the start (at 0), so rate() alerts work before the
        // first rollback.
        for svc in config.services.iter().filter(|s| s.rollout.is_some()) {
            for reason in RollbackReason::ALL {
                metrics::counter!("switchyard_rollbacks_total", "service" => svc.name.clone(), "reason" => reason.as_str()).increment(0);
            }
            for result in ["promoted", "rolled_back", "aborted"] {
                metrics::counter!("switchyard_rollouts_total", "service" => svc.name.clone(), "result" => result).increment(0);
            }
        }
        self.starts_pending = reload::rollouts_to_start(&config, &self.state)
            .into_iter()
            .collect();
        self.retry_starts().await;
    }

    /// Starts the rollouts the config names; one the store refuses is tried again next tick.
    pub(super) async fn retry_starts(&mut self) {
        if self.starts_pending.is_empty() || self.store_resting(clock::now()) {
            return;
        }
        let config = Arc::clone(&self.core.config);
        for (service, why) in std::mem::take(&mut self.starts_pending) {
            let Some(cfg) = config.service(&service) else {
                continue;
            };
            let Some(state) = self.state.get(&service).cloned() else {
                continue;
            };
            if reload::wants_start(cfg, &state).is_none() {
                continue;
            }
            let ctx = transitions::Ctx {
                service: &service,
                cfg,
                state: &state,
                now: clock::now(),
            };
            let started = match transitions::start(ctx, Source::Config, &why) {
                Ok(plan) => self.carry_out(plan, Redo::Drop).await,
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                tracing::warn!(service = %service, "cannot start the rollout yet: {e}");
                self.starts_pending.insert(service, why);
            }
        }
    }
}
