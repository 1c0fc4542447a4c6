//! What follows an applied change: events (kept by the store, told to event webhooks),
//! rollout and rollback counters, the rollback's detection time, the analysis clock, and
//! questions to gate webhooks (asked in a task; the answer comes back as an intent).

use serde_json::{json, Value};
use switchyard_config::WebhookKind;

use super::{Controller, Intent, RolloutClock};
use crate::clock;
use crate::engine::{Clock, Spec};
use crate::impact::ImpactDoc;
use crate::plan::Effect;
use crate::webhooks::{self, Delivery};

impl Controller<'_> {
    pub(super) fn run_effects(&mut self, service: &str, revision: u64, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Event {
                    kind,
                    message,
                    mut details,
                } => {
                    with_revision(&mut details, revision);
                    self.emit(service, kind, message, details);
                }
                Effect::RolloutEnded(result) => {
                    metrics::counter!("switchyard_rollouts_total", "service" => service.to_string(), "result" => result).increment(1);
                }
                Effect::RolledBack {
                    reason,
                    message,
                    mut details,
                } => {
                    metrics::counter!("switchyard_rollbacks_total", "service" => service.to_string(), "reason" => reason.as_str()).increment(1);
                    metrics::counter!("switchyard_rollouts_total", "service" => service.to_string(), "result" => "rolled_back").increment(1);
                    // First failing check → weight 0; none for a rollback no check asked for.
                    let detection = self
                        .clocks
                        .get(service)
                        .and_then(|c| c.engine.first_failure)
                        .map(|first| clock::now().saturating_sub(first) as f64 / 1000.0);
                    if let Some(seconds) = detection {
                        metrics::histogram!("switchyard_rollback_detection_seconds", "service" => service.to_string())
                            .record(seconds);
                    }
                    self.clocks.remove(service);
                    details["detection_s"] =
                        json!(detection.map(|s| (s * 1000.0).round() / 1000.0));
                    let table = self.core.table.load();
                    if let Some(impact) = self.route(&table, service).and_then(ImpactDoc::of) {
                        details["impact"] = json!(impact);
                    }
                    with_revision(&mut details, revision);
                    self.emit(service, "rolled_back", message, details);
                }
                Effect::ClockStart => self.start_clock(service),
                Effect::ClockStop => {
                    self.clocks.remove(service);
                }
                Effect::AskGates { step } => self.ask_gates(service, step),
            }
        }
    }

    /// A fresh analysis window for a service's running rollout, from the readings now.
    pub(super) fn start_clock(&mut self, service: &str) {
        let Some(rollout) = self
            .core
            .config
            .service(service)
            .and_then(|s| s.rollout.clone())
        else {
            return;
        };
        let record = self.state.get(service).and_then(|s| s.rollout.clone());
        let table = self.core.table.load_full();
        let (Some(record), Some(route)) = (record, self.route(&table, service)) else {
            return;
        };
        self.sampler.tick(&table, service, clock::now());
        let read = |name: &str| {
            route
                .versions
                .iter()
                .find(|v| &*v.name == name)
                .map(|v| self.sampler.reading(service, v))
                .unwrap_or_default()
        };
        let signs = self
            .clocks
            .get(service)
            .map(|c| (c.engine.first_failure, c.engine.suspected_since));
        let mut engine = Clock::start(&Spec::new(&rollout), clock::now());
        if let Some((first_failure, suspected_since)) = signs {
            engine.first_failure = first_failure;
            engine.suspected_since = suspected_since;
        }
        let clock = RolloutClock {
            engine,
            baseline: (read(&record.canary), read(&record.stable)),
            last_analysis: self
                .clocks
                .get(service)
                .and_then(|c| c.last_analysis.clone()),
            peers: Default::default(),
        };
        self.clocks.insert(service.to_string(), clock);
    }

    /// Records an event, keeps it in the store, tells the event webhooks.
    pub(super) fn emit(&mut self, service: &str, kind: &str, message: String, details: Value) {
        tracing::info!(service, kind, "{message}");
        let event = self.core.events.push(service, kind, message, details);
        self.core.store.record_event(&event);
        let hooks = self
            .core
            .config
            .service(service)
            .and_then(|s| s.rollout.as_ref())
            .map(|r| r.webhooks.clone())
            .unwrap_or_default();
        for hook in hooks.into_iter().filter(|h| h.kind == WebhookKind::Event) {
            self.core.webhooks.send(Delivery {
                url: hook.url,
                timeout: hook.timeout,
                payload: serde_json::to_value(&*event).unwrap_or(Value::Null),
            });
        }
    }

    /// Asks every gate webhook about `step`, in a task; the answer comes back as
    /// [`Intent::GateAnswered`] naming this rollout, so a late answer for a rollout that
    /// ended (or was removed from the config) is recognised and ignored.
    fn ask_gates(&self, service: &str, step: usize) {
        let gates: Vec<_> = self
            .core
            .config
            .service(service)
            .and_then(|s| s.rollout.as_ref())
            .map(|r| {
                r.webhooks
                    .iter()
                    .filter(|w| w.kind == WebhookKind::Gate)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let Some(record) = self.state.get(service).and_then(|s| s.rollout.clone()) else {
            return;
        };
        let payload = json!({
            "service": service,
            "canary": record.canary,
            "release": record.canary_release,
            "step": step + 1,
        });
        let (tx, service, rollout) = (self.core.tx.clone(), service.to_string(), record.number);
        tokio::spawn(async move {
            let mut result = Ok(());
            for gate in gates {
                if let Err(e) = webhooks::ask_gate(&gate.url, gate.timeout, &payload).await {
                    result = Err(format!("gate {e}"));
                    break;
                }
            }
            let _ = tx
                .send(Intent::GateAnswered {
                    service,
                    rollout,
                    step,
                    result,
                })
                .await;
        });
    }
}

fn with_revision(details: &mut Value, revision: u64) {
    if details.is_null() {
        return;
    }
    if let Some(map) = details.as_object_mut() {
        map.entry("revision").or_insert(json!(revision));
    }
}
