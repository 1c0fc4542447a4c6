//! The rollout clock, every tick: read the counters, hand each running rollout's windows to
//! the pure engine, and carry out what it decides through the same transitions an operator's
//! commands use. Gate answers arrive here too.

use serde::Deserialize;
use serde_json::json;

use super::race::Redo;
use super::{AnalysisRecord, Controller};
use crate::clock::{self, Millis};
use crate::engine::{self, Decision, Observations, Spec, VersionObs};
use crate::plan::Plan;
use crate::rollout::{transitions, Phase};
use crate::sequential::EvidenceKind;
use crate::store::{Fence, Source};

impl Controller<'_> {
    pub(super) async fn tick(&mut self) {
        let started = std::time::Instant::now();
        let now = clock::now();
        self.free_retired();
        self.retry_pending(now).await;
        self.retry_starts().await;
        self.retry_gated_steps().await;
        let table = self.core.table.load_full();
        let running: Vec<String> = self.clocks.keys().cloned().collect();
        for service in &running {
            self.sampler.tick(&table, service, now);
        }
        let closed = now >= self.next_second;
        if closed {
            self.next_second = now + 1000;
            let view = self.sampler.second(&table, now);
            self.core.readers.telemetry.store(std::sync::Arc::new(view));
            if self.core.store.shared() {
                self.report(&table);
            }
        }
        let leading = self.follow_leadership();
        let fleet = self.core.store.fleet();
        let rollouts = running.len();
        for service in running {
            self.tick_service(&service, now, closed, leading, fleet.as_deref())
                .await;
        }
        // `benches/control_plane.sh` reads these.
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            rollouts,
            sampled_all = closed,
            "tick"
        );
    }

    async fn tick_service(
        &mut self,
        service: &str,
        now: Millis,
        closed: bool,
        leader: bool,
        fleet: Option<&crate::store::fleet::FleetView>,
    ) {
        let config = std::sync::Arc::clone(&self.core.config);
        let Some(cfg) = config.service(service) else {
            return;
        };
        let Some(rollout) = cfg.rollout.as_ref() else {
            return;
        };
        let Some(record) = self
            .state
            .get(service)
            .and_then(|s| s.rollout.clone())
            .filter(|r| r.phase == Phase::Progressing)
        else {
            return;
        };
        let Some(clock) = self.clocks.get(service).cloned() else {
            return;
        };
        let table = self.core.table.load_full();
        let Some(route) = self.route(&table, service) else {
            return;
        };
        let version = |name: &str| route.versions.iter().find(|v| &*v.name == name);
        let (Some(canary), Some(stable)) = (version(&record.canary), version(&record.stable))
        else {
            return;
        };
        let obs_of = |v, baseline: &crate::telemetry::window::Window| VersionObs {
            last_second: self.sampler.last_second(service, v),
            closed_second: if closed {
                self.sampler.closed_second(service, v)
            } else {
                None
            },
            interval: self.sampler.reading(service, v).since(baseline),
            recent: self.sampler.recent(service, v),
        };
        let obs = Observations {
            canary: obs_of(canary, &clock.baseline.0),
            stable: obs_of(stable, &clock.baseline.1),
            interval_s: now.saturating_sub(clock.engine.window_started) as f64 / 1000.0,
            canary_health: cfg.health_check.as_ref().map(|_| {
                canary
                    .backends
                    .iter()
                    .map(|b| (b.address.to_string(), b.is_healthy()))
                    .collect()
            }),
        };
        let obs = if self.core.store.shared() {
            self.pool(service, record.number, obs, leader, fleet)
        } else {
            obs
        };
        let spec = Spec::new(rollout);
        let outcome = engine::evaluate(&spec, &record, clock.engine, &obs, now, leader);
        let readings = (
            self.sampler.reading(service, canary),
            self.sampler.reading(service, stable),
        );
        if let Some(c) = self.clocks.get_mut(service) {
            c.engine = outcome.clock;
            if outcome.new_window {
                c.baseline = readings;
                self.rebase_peers(service, record.number, fleet);
            }
        }
        for decision in outcome.decisions {
            if let Err(e) = self.decide(service, decision, now).await {
                tracing::debug!(service, "rollout clock: {e}");
                break;
            }
        }
    }

    /// Carries out one engine decision.
    async fn decide(
        &mut self,
        service: &str,
        decision: Decision,
        now: Millis,
    ) -> Result<(), crate::refusal::Refusal> {
        let config = std::sync::Arc::clone(&self.core.config);
        let cfg = config
            .service(service)
            .ok_or_else(|| crate::refusal::Refusal::unknown_service(service))?;
        let state = self.state.get(service).cloned().unwrap_or_default();
        let ctx = transitions::Ctx {
            service,
            cfg,
            state: &state,
            now,
        };
        let leader_only = |mut plan: Plan| {
            // The clock's own bookkeeping is the leader's, fenced like its steps.
            plan.change.fence = Fence::Leader;
            plan
        };
        let mut redo = Redo::Drop;
        let plan = match decision {
            Decision::Checked(check) => {
                self.checked(service, cfg, &state, check);
                return Ok(());
            }
            Decision::FailedChecks(n) => leader_only(transitions::count_failed_checks(ctx, n)),
            Decision::Remember {
                judge,
                memory,
                persist,
            } => {
                export_evidence(service, judge, &memory);
                if !persist {
                    // Shown at once; committed with the record's next commit.
                    if let Some(r) = self.state.get_mut(service).and_then(|s| s.rollout.as_mut()) {
                        r.judges.insert(judge.to_string(), memory);
                    }
                    self.dirty_views.push(service.to_string());
                    return Ok(());
                }
                let mut next = state.clone();
                if let Some(r) = next.rollout.as_mut() {
                    r.judges.insert(judge.to_string(), memory);
                }
                leader_only(Plan::bookkeeping(service, next))
            }
            Decision::Rollback(rb) => {
                let plan = transitions::rollback(
                    ctx,
                    rb.reason,
                    rb.source,
                    &rb.message,
                    rb.evidence.clone(),
                )?;
                redo = Redo::Rollback {
                    rollout: state.rollout.as_ref().map_or(0, |r| r.number),
                    rollback: rb,
                };
                plan
            }
            Decision::AwaitGates { step } => leader_only(transitions::await_gates(ctx, step)),
            // No step advances while the store is resting after a refusal (SPEC §11: the
            // rollout clock pauses without the store); the next tick after it asks again.
            Decision::Advance { .. } if self.store_resting(now) => return Ok(()),
            Decision::Advance { step } => {
                transitions::enter_step(ctx, state.clone(), step, Source::Rollout)
            }
        };
        self.carry_out(plan, redo).await.map(|_| ())
    }

    /// An analysis check ran: count it, show it, tell it.
    fn checked(
        &mut self,
        service: &str,
        cfg: &switchyard_config::Service,
        state: &crate::store::ServiceState,
        check: engine::CheckResult,
    ) {
        for m in &check.metrics {
            metrics::counter!("switchyard_analysis_checks_total", "service" => service.to_string(), "metric" => m.name, "result" => m.result.as_str()).increment(1);
        }
        let threshold = cfg.rollout.as_ref().map_or(0, |r| r.analysis.threshold);
        let failed = check.verdict == engine::threshold::Verdict::Fail;
        let failed_checks =
            state.rollout.as_ref().map_or(0, |r| r.failed_checks) + u32::from(failed);
        let summary = match check.verdict {
            engine::threshold::Verdict::Fail => format!(
                "check failed ({failed_checks}/{threshold}): {}",
                check.explain()
            ),
            engine::threshold::Verdict::Pass => {
                format!("check passed over {} requests", check.requests)
            }
            engine::threshold::Verdict::Inconclusive => {
                format!("check inconclusive: only {} requests", check.requests)
            }
        };
        let record = AnalysisRecord {
            at: clock::rfc3339(clock::now()),
            check,
        };
        let details = serde_json::to_value(&record).unwrap_or_default();
        if let Some(c) = self.clocks.get_mut(service) {
            c.last_analysis = Some(record);
        }
        self.dirty_views.push(service.to_string());
        self.emit(service, "analysis", summary, details);
    }

    /// Gate webhooks answered: go on with the step they were asked about, or pause. An
    /// answer for a rollout that has moved on — ended, restarted, removed from the config —
    /// is ignored.
    pub(super) async fn gate_answered(
        &mut self,
        service: &str,
        rollout: u64,
        step: usize,
        result: Result<(), String>,
    ) {
        let config = std::sync::Arc::clone(&self.core.config);
        let Some(cfg) = config.service(service).filter(|c| c.rollout.is_some()) else {
            tracing::info!(
                service,
                "gate answer ignored: the service has no rollout now"
            );
            return;
        };
        let state = self.state.get(service).cloned().unwrap_or_default();
        let current = state.rollout.as_ref().is_some_and(|r| {
            r.number == rollout
                && r.awaiting_gate
                && r.phase == Phase::Progressing
                && transitions::gate_step(r) == step
        });
        if !current {
            tracing::info!(
                service,
                rollout,
                step,
                "gate answer ignored: the rollout moved on"
            );
            return;
        }
        let ctx = transitions::Ctx {
            service,
            cfg,
            state: &state,
            now: clock::now(),
        };
        let passed = result.is_ok();
        let plan = match result {
            Ok(()) => Ok(transitions::enter_step(
                ctx,
                state.clone(),
                step,
                Source::Rollout,
            )),
            Err(why) => transitions::pause(
                ctx,
                &why,
                format!("rollout paused: {why}"),
                json!({ "step": step + 1, "reason": why }),
            ),
        };
        let done = match plan {
            Ok(plan) => self.carry_out(plan, Redo::Drop).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(_) => {
                self.gates_passed.remove(service);
            }
            Err(e) if passed => {
                // The gates said yes but the store refused the step: retried every tick.
                tracing::debug!(service, "the gated step waits for the store: {e}");
                self.gates_passed
                    .insert(service.to_string(), (rollout, step));
            }
            Err(e) => tracing::warn!(service, "cannot pause after the gate's answer: {e}"),
        }
    }

    /// Steps the gates allowed but the store refused, tried again.
    pub(super) async fn retry_gated_steps(&mut self) {
        for (service, (rollout, step)) in std::mem::take(&mut self.gates_passed) {
            self.gate_answered(&service, rollout, step, Ok(())).await;
        }
    }
}

/// `switchyard_analysis_evidence{service,kind}`: the sequential judge's evidence (SPEC §15).
fn export_evidence(service: &str, judge: &str, memory: &serde_json::Value) {
    if judge != engine::sequential::NAME {
        return;
    }
    let evidence = crate::sequential::Evidence::deserialize(memory).unwrap_or_default();
    for (kind, e) in [
        (EvidenceKind::Failures, &evidence.failures),
        (EvidenceKind::Slow, &evidence.slow),
    ] {
        metrics::gauge!("switchyard_analysis_evidence", "service" => service.to_string(), "kind" => kind.as_str())
            .set(e.evidence());
    }
}
