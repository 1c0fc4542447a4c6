//! The controller: the one and only writer of the routing table (DESIGN §1).
//!
//! The config watcher, SIGHUP, the admin API, the rollout clock and the analysis all want to
//! change what traffic does. If each of them did load-modify-store on the table, two would
//! race and one change would be lost. Instead each sends an [`Intent`] over a channel and this
//! task applies intents one at a time:
//!
//! ```text
//! validate → compute the next ServiceState → persist (revision log fsync, state.json
//! atomic) → compile a RoutingTable → store() it → publish the API view → answer
//! ```
//!
//! so "acknowledged" always means "applied and durable", and history has no gaps. Readers
//! (data path, API GETs, /metrics) load snapshots and never wait on this task.
//!
//! The rollout engine runs here too, on a 250 ms [`Intent::Tick`]: telemetry sampling,
//! health-based and fast-fail rollback, interval analysis, and step advancement.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};
use switchyard_config::{Config, WebhookKind};
use switchyard_proxy::stats::VersionSnapshot;
use switchyard_proxy::{RoutingTable, ServiceTraffic, TableHandle, TrafficState};
use tokio::sync::{mpsc, oneshot};

use crate::analysis::{self, CheckResult, Verdict};
use crate::events::{Event, EventLog};
use crate::rollout::{step_weights, Phase, RolloutAction, RolloutRecord};
use crate::state::{DesiredState, LiveWeight, Loaded, Revision, ServiceState, Source, Store};
use crate::status::{rfc3339, ReloadOutcome, Status};
use crate::telemetry::{self, Telemetry};
use crate::webhooks::{self, Delivery, EventWebhooks};

/// How often the rollout engine looks at the canary (fast-fail needs sub-second ticks).
pub const TICK: Duration = Duration::from_millis(250);

/// A request to change what traffic does.
#[derive(Debug)]
pub enum Intent {
    /// Re-read the config file (watcher or SIGHUP).
    ReloadConfig {
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// An operator's command from the API.
    Command {
        service: String,
        command: Command,
        reply: oneshot::Sender<Result<u64, ApiError>>,
    },
    /// The rollout clock.
    Tick,
    /// A gate webhook answered for `step` of the rollout that started at `rollout`.
    GateAnswered {
        service: String,
        rollout: String,
        step: usize,
        result: Result<(), String>,
    },
}

#[derive(Debug, Clone)]
pub enum Command {
    SetWeights(BTreeMap<String, u32>),
    Switch { to: String },
    Rollout(RolloutAction),
    Rollback { reason: Option<String> },
    Undo { to_revision: Option<u64> },
}

/// A refused command: status, message, and the offending field (SPEC §7 error shape).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>, field: Option<&str>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            field: field.map(str::to_string),
        }
    }

    fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message, None)
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message, None)
    }
}

/// Cheap handle for sending intents to the controller.
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    tx: mpsc::Sender<Intent>,
}

impl ControllerHandle {
    /// Asks for a config reload without waiting for the result (watcher, SIGHUP).
    pub fn request_reload(&self) {
        // A full queue already holds a reload that will read the newest file.
        let _ = self.tx.try_send(Intent::ReloadConfig { reply: None });
    }

    /// Reloads and waits for the outcome.
    pub async fn reload(&self) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Intent::ReloadConfig { reply: Some(reply) })
            .await
            .map_err(|_| "controller stopped".to_string())?;
        rx.await.map_err(|_| "controller stopped".to_string())?
    }

    /// Runs an operator command; `Ok` carries the service's revision after it was applied
    /// and persisted.
    pub async fn command(&self, service: &str, command: Command) -> Result<u64, ApiError> {
        let (reply, rx) = oneshot::channel();
        let stopped = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "controller stopped", None);
        self.tx
            .send(Intent::Command {
                service: service.to_string(),
                command,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// The last analysis check, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalysisRecord {
    pub at: String,
    #[serde(flatten)]
    pub check: CheckResult,
}

/// What the API reads about one service, published after every change.
#[derive(Debug, Clone, Default)]
pub struct ServiceView {
    pub revision: u64,
    pub rollout: Option<RolloutRecord>,
    pub threshold: Option<u32>,
    pub last_analysis: Option<AnalysisRecord>,
    pub history: Arc<Vec<Revision>>,
}

/// The controller's published state: config and per-service views.
#[derive(Debug, Clone)]
pub struct View {
    pub config: Arc<Config>,
    pub services: BTreeMap<String, Arc<ServiceView>>,
}

/// Shared read handles for the admin API.
#[derive(Clone)]
pub struct Readers {
    pub view: Arc<ArcSwap<View>>,
    pub events: Arc<ArcSwap<Vec<Arc<Event>>>>,
    pub telemetry: Arc<Mutex<Telemetry>>,
}

/// Per-service rollout bookkeeping that need not survive a restart.
#[derive(Debug)]
struct RolloutClock {
    step_started: Instant,
    next_check: Instant,
    /// Canary and stable counters at the start of the current analysis window.
    baseline: Option<(Instant, VersionSnapshot, VersionSnapshot)>,
    first_failure: Option<Instant>,
    last_analysis: Option<AnalysisRecord>,
}

impl RolloutClock {
    fn new(now: Instant, interval: Duration, elapsed: Duration) -> RolloutClock {
        RolloutClock {
            step_started: now.checked_sub(elapsed).unwrap_or(now),
            next_check: now + interval,
            baseline: None,
            first_failure: None,
            last_analysis: None,
        }
    }
}

/// One service's next state, and why its weights moved (`None`: they did not).
type Change = (String, ServiceState, Option<(Source, String)>);

/// The controller's state; owned by its task alone.
pub struct Controller {
    config_path: PathBuf,
    config: Arc<Config>,
    state: DesiredState,
    history: HashMap<String, Arc<Vec<Revision>>>,
    clocks: HashMap<String, RolloutClock>,
    store: Store,
    table: TableHandle,
    status: Arc<ArcSwap<Status>>,
    view: Arc<ArcSwap<View>>,
    events: EventLog,
    webhooks: EventWebhooks,
    telemetry: Arc<Mutex<Telemetry>>,
    /// Replaced tables some request may still hold (see [`Controller::retire`]).
    retired: Mutex<Vec<Arc<RoutingTable>>>,
    tx: mpsc::Sender<Intent>,
    rx: mpsc::Receiver<Intent>,
}

impl Controller {
    /// Reconciles the loaded state with the config, persists the result and compiles the
    /// first table. Must run inside the (multi-threaded) runtime.
    pub fn start(
        config_path: PathBuf,
        config: Config,
        store: Store,
        loaded: Loaded,
        status: Arc<ArcSwap<Status>>,
    ) -> Result<(Controller, ControllerHandle, TableHandle, Readers), String> {
        for warning in &loaded.warnings {
            tracing::error!("{warning}");
        }
        let mut history: HashMap<String, Vec<Revision>> = HashMap::new();
        for r in loaded.revisions {
            history.entry(r.service.clone()).or_default().push(r);
        }
        let (tx, rx) = mpsc::channel(256);
        let config = Arc::new(config);
        let events = EventLog::new(loaded.events);
        let readers = Readers {
            view: Arc::new(ArcSwap::from_pointee(View {
                config: Arc::clone(&config),
                services: BTreeMap::new(),
            })),
            events: events.reader(),
            telemetry: Arc::default(),
        };
        let mut controller = Controller {
            config_path,
            config: Arc::clone(&config),
            state: loaded.state,
            history: history.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
            clocks: HashMap::new(),
            store,
            table: Arc::new(ArcSwap::from_pointee(RoutingTable::default())),
            status,
            view: Arc::clone(&readers.view),
            events,
            webhooks: EventWebhooks::start(),
            telemetry: Arc::clone(&readers.telemetry),
            retired: Mutex::default(),
            tx: tx.clone(),
            rx,
        };
        // Rollouts that were running before a restart continue their step's clock.
        for (name, svc) in &controller.state.services {
            if let (Some(r), Some(cfg)) = (&svc.rollout, config.service(name)) {
                if r.phase == Phase::Progressing {
                    let interval = cfg.rollout.as_ref().map_or(TICK, |r| r.analysis.interval);
                    let clock = RolloutClock::new(
                        Instant::now(),
                        interval,
                        Duration::from_millis(r.step_elapsed_ms),
                    );
                    controller.clocks.insert(name.clone(), clock);
                }
            }
        }
        controller
            .apply_config(None)
            .map_err(|e| format!("cannot persist the initial state: {e}"))?;
        let table = Arc::clone(&controller.table);
        Ok((controller, ControllerHandle { tx }, table, readers))
    }

    /// Applies intents until every handle is dropped.
    pub async fn run(mut self) {
        let ticker = self.tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                if ticker.try_send(Intent::Tick).is_err() && ticker.is_closed() {
                    return;
                }
            }
        });
        while let Some(intent) = self.rx.recv().await {
            match intent {
                Intent::ReloadConfig { reply } => {
                    let result = self.reload().await;
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                }
                Intent::Command {
                    service,
                    command,
                    reply,
                } => {
                    let result = self.command(&service, command);
                    let _ = reply.send(result);
                }
                Intent::Tick => self.tick(),
                Intent::GateAnswered {
                    service,
                    rollout,
                    step,
                    result,
                } => self.gate_answered(&service, &rollout, step, result),
            }
        }
    }

    // ---- config -------------------------------------------------------------------------

    async fn reload(&mut self) -> Result<(), String> {
        let path = self.config_path.clone();
        // File I/O off the runtime's worker threads.
        let loaded = tokio::task::spawn_blocking(move || switchyard_config::load(&path))
            .await
            .map_err(|e| format!("config loader panicked: {e}"))?;
        let config = match loaded {
            Ok(config) => config,
            Err(errors) => {
                let message = errors.to_string();
                tracing::error!(
                    path = %self.config_path.display(),
                    errors = %message,
                    "config rejected; the previous config keeps serving"
                );
                self.status.rcu(|s| {
                    s.with_reload(ReloadOutcome::Error(message.clone()), SystemTime::now())
                });
                metrics::counter!("switchyard_config_reloads_total", "result" => "error")
                    .increment(1);
                return Err(message);
            }
        };
        if config.listeners != self.config.listeners || config.admin != self.config.admin {
            tracing::warn!("listener or admin addresses changed; they take effect after a restart");
        }
        let previous = std::mem::replace(&mut self.config, Arc::new(config));
        if let Err(e) = self.apply_config(Some(&previous)) {
            // Nothing was swapped: keep serving the old config, say why.
            self.config = previous;
            let message = format!("config not applied: {e}");
            tracing::error!("{message}");
            self.status
                .rcu(|s| s.with_reload(ReloadOutcome::Error(message.clone()), SystemTime::now()));
            metrics::counter!("switchyard_config_reloads_total", "result" => "error").increment(1);
            return Err(message);
        }
        self.status
            .rcu(|s| s.with_reload(ReloadOutcome::Ok, SystemTime::now()));
        metrics::counter!("switchyard_config_reloads_total", "result" => "ok").increment(1);
        tracing::info!(path = %self.config_path.display(), "config reloaded");
        Ok(())
    }

    /// Reconciles every service's state with `self.config` (SPEC §8): topology from the
    /// config; live weights and rolled-back releases from the state while the release names
    /// still match; a weight the operator edited in the file wins over the live one.
    fn apply_config(&mut self, previous: Option<&Config>) -> Result<(), String> {
        let config = Arc::clone(&self.config);
        self.state
            .services
            .retain(|name, _| config.service(name).is_some());
        self.clocks.retain(|name, _| config.service(name).is_some());
        let mut changes = Vec::new();
        for svc in &config.services {
            let mut next = self
                .state
                .services
                .get(&svc.name)
                .cloned()
                .unwrap_or_default();
            let before: BTreeMap<String, u32> = weights_of(&next);
            let rollout_active = next.rollout.as_ref().is_some_and(|r| r.phase.is_active());
            let old_svc = previous.and_then(|p| p.service(&svc.name));
            let mut weights = BTreeMap::new();
            for v in &svc.versions {
                let live = next.weights.get(&v.name).filter(|l| l.release == v.release);
                let edited = old_svc
                    .and_then(|o| o.version(&v.name))
                    .is_some_and(|o| o.weight != v.weight && o.release == v.release);
                let weight = match live {
                    // The live weight stands unless the operator edited this weight in the file
                    // (a running rollout owns the weights either way).
                    Some(l) if !edited || rollout_active => l.weight,
                    _ => v.weight,
                };
                weights.insert(
                    v.name.clone(),
                    LiveWeight {
                        weight,
                        release: v.release.clone(),
                    },
                );
            }
            next.weights = weights;
            // A rolled-back release stays out until the config names a new one.
            next.rolled_back
                .retain(|v, release| svc.version(v).is_some_and(|cv| &cv.release == release));
            let after = weights_of(&next);
            let change = if next.revision == 0 {
                Some((Source::Config, "initial config".to_string()))
            } else if after != before {
                Some((Source::Config, "config reloaded".to_string()))
            } else {
                None
            };
            changes.push((svc.name.clone(), next, change));
        }
        // One table compile for the whole reload, at the end (10,000 services: ~90 ms each).
        self.commit_many(changes, false)?;
        // Rollout counters exist from the start (at 0), so rate() alerts work before the
        // first rollback.
        for svc in config.services.iter().filter(|s| s.rollout.is_some()) {
            let name = svc.name.clone();
            for reason in ["error-rate", "latency-p99", "health", "manual", "fast-fail"] {
                metrics::counter!("switchyard_rollbacks_total", "service" => name.clone(), "reason" => reason).increment(0);
            }
            for result in ["promoted", "rolled_back", "aborted"] {
                metrics::counter!("switchyard_rollouts_total", "service" => name.clone(), "result" => result).increment(0);
            }
        }
        // Config-driven rollouts: a canary with a release the last rollout did not settle.
        for svc in &config.services {
            if let Err(e) = self.maybe_start_rollout(&svc.name) {
                tracing::error!(service = %svc.name, "cannot start rollout: {}", e.message);
            }
        }
        // Services with nothing to commit still need a (re)published view and table.
        self.swap_table();
        self.publish_view();
        Ok(())
    }

    // ---- committing changes --------------------------------------------------------------

    /// Persists and applies one service's next state; records a revision when `change` says
    /// why the weights moved. Returns the service's revision.
    fn commit(
        &mut self,
        service: &str,
        next: ServiceState,
        change: Option<(Source, String)>,
    ) -> Result<u64, String> {
        self.commit_many(vec![(service.to_string(), next, change)], true)?;
        Ok(self.state.services.get(service).map_or(0, |s| s.revision))
    }

    /// `apply`: compile and swap the table now (a caller that commits again, or swaps itself
    /// at the end, passes `false`).
    fn commit_many(&mut self, changes: Vec<Change>, apply: bool) -> Result<(), String> {
        let mut previous = Vec::new();
        let mut revisions = Vec::new();
        for (name, mut next, change) in changes {
            if let Some((source, reason)) = change {
                next.revision += 1;
                revisions.push(Revision {
                    id: next.revision,
                    service: name.clone(),
                    at: rfc3339(SystemTime::now()),
                    source,
                    reason,
                    weights: weights_of(&next),
                });
            }
            previous.push((name.clone(), self.state.services.insert(name, next)));
        }
        let store = self.store.clone();
        let state = &self.state;
        // The controller has a thread of its own (app.rs), so waiting here for the disk blocks
        // nothing but the controller — which must wait anyway: acknowledged means durable.
        let persisted = without_stalling_workers(|| {
            for r in &revisions {
                store.append_revision(r)?;
            }
            store.save_state(state)
        });
        if let Err(e) = persisted {
            // Not durable → not applied: restore the previous state.
            for (name, old) in previous {
                match old {
                    Some(old) => self.state.services.insert(name, old),
                    None => self.state.services.remove(&name),
                };
            }
            return Err(format!("cannot write the state directory: {e}"));
        }
        for r in revisions {
            tracing::info!(service = %r.service, revision = r.id, source = ?r.source, reason = %r.reason, weights = ?r.weights, "new revision");
            let h = self.history.entry(r.service.clone()).or_default();
            Arc::make_mut(h).push(r);
        }
        if apply {
            self.swap_table();
            self.publish_view();
        }
        Ok(())
    }

    fn traffic(&self) -> TrafficState {
        let mut traffic = TrafficState::new();
        for svc in &self.config.services {
            let Some(state) = self.state.services.get(&svc.name) else {
                continue;
            };
            traffic.insert(
                svc.name.clone(),
                ServiceTraffic {
                    weights: weights_of(state),
                    rolled_back: state.rolled_back.keys().cloned().collect(),
                    canary: self.roles(&svc.name).map(|(_, c)| c),
                },
            );
        }
        traffic
    }

    fn swap_table(&self) {
        let previous = self.table.load_full();
        let next = RoutingTable::compile(&self.config, &self.traffic(), Some(&previous));
        self.table.store(Arc::new(next));
        self.retire(previous);
    }

    /// Keeps a replaced table until no request holds it, so the last reference — and freeing
    /// it, ~30 ms for 10,000 services — is the controller's, never a request's on the data
    /// path. Requests only get tables from the handle, which no longer points here.
    fn retire(&self, table: Arc<RoutingTable>) {
        if let Ok(mut retired) = self.retired.lock() {
            retired.retain(|t| Arc::strong_count(t) > 1);
            retired.push(table);
        }
    }

    fn publish_view(&self) {
        let services = self
            .config
            .services
            .iter()
            .map(|svc| {
                let state = self.state.services.get(&svc.name);
                let view = ServiceView {
                    revision: state.map_or(0, |s| s.revision),
                    rollout: state.and_then(|s| s.rollout.clone()),
                    threshold: svc.rollout.as_ref().map(|r| r.analysis.threshold),
                    last_analysis: self
                        .clocks
                        .get(&svc.name)
                        .and_then(|c| c.last_analysis.clone()),
                    history: self.history.get(&svc.name).cloned().unwrap_or_default(),
                };
                (svc.name.clone(), Arc::new(view))
            })
            .collect();
        self.view.store(Arc::new(View {
            config: Arc::clone(&self.config),
            services,
        }));
    }

    // ---- events --------------------------------------------------------------------------

    fn emit(&mut self, service: &str, kind: &str, message: String, details: Value) {
        tracing::info!(service, kind, "{message}");
        let event = self.events.push(service, kind, message, details);
        if let Err(e) = self.store.append_event(&event) {
            tracing::warn!(error = %e, "cannot append to events.jsonl");
        }
        let hooks = self
            .config
            .service(service)
            .and_then(|s| s.rollout.as_ref())
            .map(|r| r.webhooks.clone())
            .unwrap_or_default();
        for hook in hooks.into_iter().filter(|h| h.kind == WebhookKind::Event) {
            self.webhooks.send(Delivery {
                url: hook.url,
                timeout: hook.timeout,
                payload: serde_json::to_value(&*event).unwrap_or(Value::Null),
            });
        }
    }

    // ---- roles and rollouts --------------------------------------------------------------

    /// (stable, canary) for the current or next rollout: after a promotion the roles swap.
    fn roles(&self, service: &str) -> Option<(String, String)> {
        let cfg = self.config.service(service)?;
        let rollout = cfg.rollout.as_ref()?;
        let record = self
            .state
            .services
            .get(service)
            .and_then(|s| s.rollout.as_ref());
        let (stable, canary) = match record {
            Some(r) if cfg.version(&r.stable).is_some() && cfg.version(&r.canary).is_some() => {
                if r.phase == Phase::Promoted {
                    (r.canary.clone(), r.stable.clone())
                } else {
                    (r.stable.clone(), r.canary.clone())
                }
            }
            _ => (rollout.stable.clone(), rollout.canary.clone()),
        };
        Some((stable, canary))
    }

    fn maybe_start_rollout(&mut self, service: &str) -> Result<(), ApiError> {
        let Some((_, canary)) = self.roles(service) else {
            return Ok(());
        };
        let Some(release) = self
            .config
            .service(service)
            .and_then(|s| s.version(&canary))
            .map(|v| v.release.clone())
        else {
            return Ok(());
        };
        let state = self.state.services.get(service);
        let record = state.and_then(|s| s.rollout.as_ref());
        let start = match record {
            // A new release named while a rollout runs supersedes it.
            Some(r) if r.phase.is_active() => r.canary_release != release,
            _ => state.and_then(|s| s.settled.get(&canary)) != Some(&release),
        };
        if start {
            self.start_rollout(
                service,
                Source::Config,
                format!("release {release} of {canary} named by the config"),
            )?;
        }
        Ok(())
    }

    fn start_rollout(
        &mut self,
        service: &str,
        source: Source,
        why: String,
    ) -> Result<u64, ApiError> {
        let cfg = self
            .config
            .service(service)
            .ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, format!("no service {service}"), None)
            })?
            .clone();
        let Some(rollout) = cfg.rollout.clone() else {
            return Err(ApiError::conflict(format!(
                "service {service} has no rollout configured; use switch or weights"
            )));
        };
        let (stable, canary) = self.roles(service).expect("rollout configured");
        let release = cfg
            .version(&canary)
            .map(|v| v.release.clone())
            .unwrap_or_default();
        let mut next = self
            .state
            .services
            .get(service)
            .cloned()
            .unwrap_or_default();
        next.rolled_back.remove(&canary);
        let gated = rollout.webhooks.iter().any(|w| w.kind == WebhookKind::Gate);
        let record = RolloutRecord {
            phase: Phase::Progressing,
            stable: stable.clone(),
            canary: canary.clone(),
            canary_release: release.clone(),
            step: 0,
            steps: rollout.steps.len(),
            step_elapsed_ms: 0,
            failed_checks: 0,
            awaiting_gate: gated,
            reason: None,
            started_at: rfc3339(SystemTime::now()),
            finished_at: None,
        };
        let started_at = record.started_at.clone();
        next.rollout = Some(record);
        self.clocks.insert(
            service.to_string(),
            RolloutClock::new(Instant::now(), rollout.analysis.interval, Duration::ZERO),
        );
        self.emit(
            service,
            "rollout_started",
            format!("rollout of {canary} {release} started ({why}); stable is {stable}"),
            json!({ "canary": canary, "release": release, "stable": stable, "source": source }),
        );
        if gated {
            let revision = self
                .commit(service, next, None)
                .map_err(ApiError::internal)?;
            self.ask_gates(service, &started_at, 0);
            Ok(revision)
        } else {
            self.apply_step(service, next, 0, source)
        }
    }

    /// Applies step `k` (the last step promotes).
    fn apply_step(
        &mut self,
        service: &str,
        mut next: ServiceState,
        k: usize,
        source: Source,
    ) -> Result<u64, ApiError> {
        let cfg = self
            .config
            .service(service)
            .cloned()
            .expect("service exists");
        let rollout = cfg.rollout.as_ref().expect("rollout configured");
        let record = next.rollout.as_mut().expect("rollout record");
        if k + 1 >= rollout.steps.len() {
            return self.promote(service, next, Source::Rollout, "last step reached".into());
        }
        let traffic = rollout.steps[k].traffic;
        record.step = k;
        record.step_elapsed_ms = 0;
        record.awaiting_gate = false;
        let (stable, canary) = (record.stable.clone(), record.canary.clone());
        let weights = step_weights(
            cfg.versions.iter().map(|v| &v.name),
            &stable,
            &canary,
            traffic,
        );
        set_weights(&mut next, &weights);
        let reason = format!(
            "step {}/{}: {canary} at {traffic}%",
            k + 1,
            rollout.steps.len()
        );
        let revision = self
            .commit(service, next, Some((source, reason.clone())))
            .map_err(ApiError::internal)?;
        if let Some(clock) = self.clocks.get_mut(service) {
            clock.step_started = Instant::now();
        }
        self.take_baseline(service);
        self.emit(
            service,
            "step",
            reason,
            json!({ "step": k + 1, "traffic": traffic, "revision": revision }),
        );
        Ok(revision)
    }

    fn promote(
        &mut self,
        service: &str,
        mut next: ServiceState,
        source: Source,
        why: String,
    ) -> Result<u64, ApiError> {
        let cfg = self
            .config
            .service(service)
            .cloned()
            .expect("service exists");
        let record = next.rollout.as_mut().expect("rollout record");
        record.phase = Phase::Promoted;
        record.step = record.steps.saturating_sub(1);
        record.awaiting_gate = false;
        record.reason = Some(why);
        record.finished_at = Some(rfc3339(SystemTime::now()));
        let (stable, canary, release) = (
            record.stable.clone(),
            record.canary.clone(),
            record.canary_release.clone(),
        );
        let weights = step_weights(cfg.versions.iter().map(|v| &v.name), &stable, &canary, 100);
        set_weights(&mut next, &weights);
        next.rolled_back.remove(&canary);
        next.settled = releases(&cfg);
        let reason = format!("promoted {canary} {release}; it is now the stable version");
        let revision = self
            .commit(service, next, Some((source, reason.clone())))
            .map_err(ApiError::internal)?;
        self.clocks.remove(service);
        metrics::counter!("switchyard_rollouts_total", "service" => service.to_string(), "result" => "promoted").increment(1);
        self.emit(
            service,
            "promoted",
            reason,
            json!({ "canary": canary, "release": release, "revision": revision }),
        );
        Ok(revision)
    }

    /// Takes the canary out of traffic in one table swap, then records and tells why.
    fn rollback(
        &mut self,
        service: &str,
        reason_label: &'static str,
        source: Source,
        message: String,
        evidence: Value,
    ) -> Result<u64, ApiError> {
        let cfg = self
            .config
            .service(service)
            .cloned()
            .expect("service exists");
        let (stable, canary) = self.roles(service).ok_or_else(|| {
            ApiError::conflict(format!(
                "service {service} has no rollout configured; use switch"
            ))
        })?;
        let mut next = self
            .state
            .services
            .get(service)
            .cloned()
            .unwrap_or_default();
        let release = cfg
            .version(&canary)
            .map(|v| v.release.clone())
            .unwrap_or_default();
        let from = weights_of(&next);
        let weights = step_weights(cfg.versions.iter().map(|v| &v.name), &stable, &canary, 0);
        set_weights(&mut next, &weights);
        next.rolled_back.insert(canary.clone(), release.clone());
        next.settled = releases(&cfg);
        let finished = rfc3339(SystemTime::now());
        match next.rollout.as_mut() {
            Some(r) if r.phase.is_active() => {
                r.phase = Phase::RolledBack;
                r.reason = Some(message.clone());
                r.finished_at = Some(finished);
                r.awaiting_gate = false;
            }
            _ => {
                next.rollout = Some(RolloutRecord {
                    phase: Phase::RolledBack,
                    stable: stable.clone(),
                    canary: canary.clone(),
                    canary_release: release.clone(),
                    step: 0,
                    steps: cfg.rollout.as_ref().map_or(0, |r| r.steps.len()),
                    step_elapsed_ms: 0,
                    failed_checks: 0,
                    awaiting_gate: false,
                    reason: Some(message.clone()),
                    started_at: finished.clone(),
                    finished_at: Some(finished),
                });
            }
        }
        let failed_checks = next.rollout.as_ref().map_or(0, |r| r.failed_checks);
        let revision = self
            .commit(service, next, Some((source, message.clone())))
            .map_err(ApiError::internal)?;
        let labels = [("service", service.to_string())];
        metrics::counter!("switchyard_rollbacks_total", "service" => service.to_string(), "reason" => reason_label).increment(1);
        metrics::counter!("switchyard_rollouts_total", "service" => service.to_string(), "result" => "rolled_back").increment(1);
        // First failing check → weight 0; `None` for a rollback no check asked for.
        let detection_s = self
            .clocks
            .get(service)
            .and_then(|c| c.first_failure)
            .map(|first| first.elapsed().as_secs_f64());
        if let Some(seconds) = detection_s {
            metrics::histogram!("switchyard_rollback_detection_seconds", &labels).record(seconds);
        }
        self.clocks.remove(service);
        self.publish_view();
        self.emit(
            service,
            "rolled_back",
            format!("rolled back {canary} {release}: {message}"),
            json!({
                "service": service, "version": canary, "release": release,
                "reason": reason_label, "message": message,
                "from_weights": from, "to_weights": weights,
                "failed_checks": failed_checks, "evidence": evidence,
                "detection_s": detection_s.map(|s| (s * 1000.0).round() / 1000.0),
                "revision": revision, "at": rfc3339(SystemTime::now()),
            }),
        );
        Ok(revision)
    }

    fn ask_gates(&self, service: &str, rollout: &str, step: usize) {
        let gates: Vec<_> = self
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
        let record = self
            .state
            .services
            .get(service)
            .and_then(|s| s.rollout.clone());
        let payload = json!({
            "service": service,
            "canary": record.as_ref().map(|r| r.canary.clone()),
            "release": record.as_ref().map(|r| r.canary_release.clone()),
            "step": step + 1,
        });
        let (tx, service, rollout) = (self.tx.clone(), service.to_string(), rollout.to_string());
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

    fn gate_answered(
        &mut self,
        service: &str,
        rollout: &str,
        step: usize,
        result: Result<(), String>,
    ) {
        let Some(mut next) = self.state.services.get(service).cloned() else {
            return;
        };
        let Some(record) = next.rollout.as_mut() else {
            return;
        };
        if record.started_at != rollout
            || !record.awaiting_gate
            || record.phase != Phase::Progressing
        {
            return; // An answer for a rollout or step that has moved on.
        }
        match result {
            Ok(()) => {
                if let Err(e) = self.apply_step(service, next, step, Source::Rollout) {
                    tracing::error!(service, "cannot apply step: {}", e.message);
                }
            }
            Err(why) => {
                record.phase = Phase::Paused;
                record.reason = Some(why.clone());
                if let Err(e) = self.commit(service, next, None) {
                    tracing::error!(service, "cannot persist pause: {e}");
                }
                self.emit(
                    service,
                    "paused",
                    format!("rollout paused: {why}"),
                    json!({ "step": step + 1, "reason": why }),
                );
            }
        }
    }

    // ---- the rollout clock ---------------------------------------------------------------

    fn take_baseline(&mut self, service: &str) {
        let table = self.table.load();
        let Some((stable, canary)) = self.roles(service) else {
            return;
        };
        let Some(route) = table.service(service) else {
            return;
        };
        let snap = |name: &str| {
            route
                .versions
                .iter()
                .find(|v| &*v.name == name)
                .map(telemetry::snapshot)
        };
        if let (Some(c), Some(s), Some(clock)) =
            (snap(&canary), snap(&stable), self.clocks.get_mut(service))
        {
            clock.baseline = Some((Instant::now(), c, s));
        }
    }

    fn tick(&mut self) {
        if let Ok(mut retired) = self.retired.lock() {
            retired.retain(|t| Arc::strong_count(t) > 1);
        }
        let table = self.table.load_full();
        let now = Instant::now();
        if let Ok(mut t) = self.telemetry.lock() {
            t.sample(&table, now);
        }
        let progressing: Vec<String> = self
            .state
            .services
            .iter()
            .filter(|(_, s)| {
                s.rollout
                    .as_ref()
                    .is_some_and(|r| r.phase == Phase::Progressing)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for service in progressing {
            if let Err(e) = self.tick_service(&service, &table, now) {
                tracing::error!(service, "rollout step failed: {}", e.message);
            }
        }
    }

    fn tick_service(
        &mut self,
        service: &str,
        table: &RoutingTable,
        now: Instant,
    ) -> Result<(), ApiError> {
        let Some(cfg) = self.config.service(service).cloned() else {
            return Ok(());
        };
        let Some(rollout) = cfg.rollout.clone() else {
            return Ok(());
        };
        let Some(record) = self
            .state
            .services
            .get(service)
            .and_then(|s| s.rollout.clone())
        else {
            return Ok(());
        };
        if !self.clocks.contains_key(service) {
            self.clocks.insert(
                service.to_string(),
                RolloutClock::new(now, rollout.analysis.interval, Duration::ZERO),
            );
            return Ok(());
        }
        let Some(route) = table.service(service) else {
            return Ok(());
        };
        let version = |name: &str| route.versions.iter().find(|v| &*v.name == name);
        let (Some(canary), Some(stable)) = (version(&record.canary), version(&record.stable))
        else {
            return Ok(());
        };

        // 1. Health: every canary backend down (a release that fails at start-up).
        if cfg.health_check.is_some()
            && !canary.backends.is_empty()
            && canary.backends.iter().all(|b| !b.is_healthy())
        {
            if let Some(c) = self.clocks.get_mut(service) {
                c.first_failure.get_or_insert(now);
            }
            self.rollback(
                service,
                "health",
                Source::Health,
                format!("every backend of {} failed its health checks", record.canary),
                json!({ "backends": canary.backends.iter().map(|b| b.address.to_string()).collect::<Vec<_>>() }),
            )?;
            return Ok(());
        }

        // 2. Fast-fail: the last second was bad enough to stop at once.
        if let Some(rule) = rollout.analysis.fast_fail {
            let last = self
                .telemetry
                .lock()
                .ok()
                .and_then(|t| t.last_second(service, canary));
            if let Some(rate) = last.as_ref().and_then(|w| analysis::fast_fail(&rule, w)) {
                let requests = last.map_or(0, |w| w.total);
                if let Some(c) = self.clocks.get_mut(service) {
                    c.first_failure.get_or_insert(now);
                }
                self.rollback(
                    service,
                    "fast-fail",
                    Source::Analysis,
                    format!(
                        "fast-fail: error rate {rate:.1}% over {requests} requests within the last second (line: {}% over {})",
                        rule.error_rate, rule.min_requests
                    ),
                    json!({ "metric": "error-rate", "value": rate, "threshold": rule.error_rate, "requests": requests, "window_s": 1 }),
                )?;
                return Ok(());
            }
        }

        // 3. Interval analysis over the requests completed since the last check.
        if now >= self.clocks[service].next_check {
            let canary_now = telemetry::snapshot(canary);
            let stable_now = telemetry::snapshot(stable);
            let check = self.clocks[service].baseline.as_ref().map(|(at, c0, s0)| {
                analysis::check(
                    &rollout.analysis,
                    &canary_now.since(c0),
                    &stable_now.since(s0),
                    now.duration_since(*at).as_secs_f64(),
                )
            });
            let clock = self.clocks.get_mut(service).expect("checked above");
            clock.baseline = Some((now, canary_now, stable_now));
            clock.next_check = now + rollout.analysis.interval;
            if let Some(check) = check {
                if self.record_check(service, &record, check, rollout.analysis.threshold)? {
                    return Ok(());
                }
            }
        }

        // 4. The step's time is up: advance (asking the gates first).
        let step = &rollout.steps[record.step.min(rollout.steps.len() - 1)];
        let clock = self.clocks.get(service).expect("checked above");
        if !record.awaiting_gate
            && step
                .duration
                .is_some_and(|d| now.duration_since(clock.step_started) >= d)
        {
            let next_step = record.step + 1;
            let mut next = self.state.services.get(service).cloned().expect("exists");
            if rollout.webhooks.iter().any(|w| w.kind == WebhookKind::Gate) {
                if let Some(r) = next.rollout.as_mut() {
                    r.awaiting_gate = true;
                }
                self.commit(service, next, None)
                    .map_err(ApiError::internal)?;
                self.ask_gates(service, &record.started_at, next_step);
            } else {
                self.apply_step(service, next, next_step, Source::Rollout)?;
            }
        }
        Ok(())
    }

    /// Records one check; rolls back when failed checks reach the threshold. True if it did.
    fn record_check(
        &mut self,
        service: &str,
        record: &RolloutRecord,
        check: CheckResult,
        threshold: u32,
    ) -> Result<bool, ApiError> {
        for m in &check.metrics {
            metrics::counter!("switchyard_analysis_checks_total", "service" => service.to_string(), "metric" => m.name, "result" => m.result.as_str()).increment(1);
        }
        let failed = check.verdict == Verdict::Fail;
        let analysis_record = AnalysisRecord {
            at: rfc3339(SystemTime::now()),
            check: check.clone(),
        };
        let clock = self.clocks.get_mut(service).expect("clock exists");
        clock.last_analysis = Some(analysis_record.clone());
        if failed {
            clock.first_failure.get_or_insert_with(Instant::now);
        }
        let failed_checks = record.failed_checks + u32::from(failed);
        let summary = match check.verdict {
            Verdict::Fail => format!(
                "check failed ({failed_checks}/{threshold}): {}",
                check.explain()
            ),
            Verdict::Pass => format!("check passed over {} requests", check.requests),
            Verdict::Inconclusive => {
                format!("check inconclusive: only {} requests", check.requests)
            }
        };
        let details = serde_json::to_value(&analysis_record).unwrap_or(Value::Null);
        self.emit(service, "analysis", summary, details.clone());
        if failed {
            let mut next = self.state.services.get(service).cloned().expect("exists");
            if let Some(r) = next.rollout.as_mut() {
                r.failed_checks = failed_checks;
            }
            self.commit(service, next, None)
                .map_err(ApiError::internal)?;
            if failed_checks >= threshold {
                let metric = check.failing_metric().unwrap_or("error-rate");
                self.rollback(
                    service,
                    if metric == "latency-p99" {
                        "latency-p99"
                    } else {
                        "error-rate"
                    },
                    Source::Analysis,
                    check.explain(),
                    details,
                )?;
                return Ok(true);
            }
        } else {
            self.publish_view();
        }
        Ok(false)
    }

    // ---- operator commands ---------------------------------------------------------------

    /// Applies weights an operator chose (weights, switch, undo): versions given a share leave
    /// the rolled-back set (an explicit decision), then one API revision and one event.
    fn set_operator_weights(
        &mut self,
        service: &str,
        state: &ServiceState,
        weights: &BTreeMap<String, u32>,
        kind: &str,
        reason: String,
        mut details: Value,
    ) -> Result<u64, ApiError> {
        let mut next = state.clone();
        set_weights(&mut next, weights);
        if weights_of(&next).values().all(|&w| w == 0) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "weights may not all be 0: give at least one version a share",
                None,
            ));
        }
        next.rolled_back
            .retain(|v, _| weights.get(v).is_none_or(|&w| w == 0));
        let revision = self
            .commit(service, next, Some((Source::Api, reason.clone())))
            .map_err(ApiError::internal)?;
        details["revision"] = json!(revision);
        self.emit(service, kind, reason, details);
        Ok(revision)
    }

    fn command(&mut self, service: &str, command: Command) -> Result<u64, ApiError> {
        let cfg = self.config.service(service).cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no service named {service:?}"),
                None,
            )
        })?;
        let state = self
            .state
            .services
            .get(service)
            .cloned()
            .unwrap_or_default();
        let active = state.rollout.as_ref().filter(|r| r.phase.is_active());
        let busy = |what: &str| {
            ApiError::conflict(format!(
                "a rollout of {} is {}; promote, abort or roll it back before {what}",
                active.map_or("", |r| r.canary.as_str()),
                active.map_or("", |r| r.phase.as_str())
            ))
        };
        let unknown = |v: &str, field: &str| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "service {service} has no version {v:?} (versions: {})",
                    cfg.versions
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some(field),
            )
        };
        match command {
            Command::SetWeights(weights) => {
                // Bad input (404) is reported before what the state forbids (409).
                if let Some(v) = weights.keys().find(|v| cfg.version(v).is_none()) {
                    return Err(unknown(v, v));
                }
                if active.is_some() {
                    return Err(busy("setting weights"));
                }
                let reason = format!("weights set: {}", describe(&weights));
                let details = json!({ "weights": weights });
                self.set_operator_weights(service, &state, &weights, "weights", reason, details)
            }
            Command::Switch { to } => {
                if cfg.version(&to).is_none() {
                    return Err(unknown(&to, "to"));
                }
                if active.is_some() {
                    return Err(busy("switching"));
                }
                let weights: BTreeMap<String, u32> = cfg
                    .versions
                    .iter()
                    .map(|v| (v.name.clone(), if v.name == to { 100 } else { 0 }))
                    .collect();
                let reason = format!("switched 100% to {to}");
                let details = json!({ "to": to });
                self.set_operator_weights(service, &state, &weights, "switched", reason, details)
            }
            Command::Undo { to_revision } => {
                let history = self.history.get(service).cloned().unwrap_or_default();
                if to_revision.is_none() && state.revision <= 1 {
                    return Err(ApiError::conflict(format!(
                        "service {service} has no earlier revision to undo to"
                    )));
                }
                let target = to_revision.unwrap_or(state.revision.saturating_sub(1));
                let Some(old) = history.iter().find(|r| r.id == target) else {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("service {service} has no revision {target}"),
                        Some("to_revision"),
                    ));
                };
                if let Some(v) = old.weights.keys().find(|v| cfg.version(v).is_none()) {
                    return Err(ApiError::conflict(format!(
                        "revision {target} names version {v}, which is no longer in the config"
                    )));
                }
                if active.is_some() {
                    return Err(busy("undoing"));
                }
                let weights = old.weights.clone();
                let reason = format!("undo to revision {target}: {}", describe(&weights));
                let details = json!({ "to_revision": target });
                self.set_operator_weights(service, &state, &weights, "undo", reason, details)
            }
            Command::Rollback { reason } => {
                let Some((_, canary)) = self.roles(service) else {
                    return Err(ApiError::conflict(format!(
                        "service {service} has no rollout configured, so no canary to roll back; use switch"
                    )));
                };
                let canary_weight = weights_of(&state).get(&canary).copied().unwrap_or(0);
                if active.is_none() && canary_weight == 0 {
                    return Err(ApiError::conflict(format!(
                        "nothing to roll back: canary {canary} already has 0% and no rollout is running"
                    )));
                }
                let message = format!(
                    "manual rollback: {}",
                    reason.unwrap_or_else(|| "requested through the API".into())
                );
                self.rollback(service, "manual", Source::Api, message, Value::Null)
            }
            Command::Rollout(action) => {
                action
                    .allowed_in(state.rollout.as_ref().map(|r| r.phase))
                    .map_err(ApiError::conflict)?;
                if cfg.rollout.is_none() {
                    return Err(ApiError::conflict(format!(
                        "service {service} has no rollout configured"
                    )));
                }
                let mut next = state.clone();
                match action {
                    RolloutAction::Start => {
                        self.start_rollout(service, Source::Api, "started through the API".into())
                    }
                    RolloutAction::Resume
                        if next
                            .rollout
                            .as_ref()
                            .is_some_and(|r| r.phase == Phase::RolledBack) =>
                    {
                        self.start_rollout(
                            service,
                            Source::Api,
                            "resumed after a rollback through the API".into(),
                        )
                    }
                    RolloutAction::Pause => {
                        let elapsed = self
                            .clocks
                            .get(service)
                            .map_or(0, |c| c.step_started.elapsed().as_millis() as u64);
                        let r = next.rollout.as_mut().expect("allowed_in checked");
                        r.phase = Phase::Paused;
                        r.step_elapsed_ms = elapsed;
                        r.reason = Some("paused through the API".into());
                        let revision = self
                            .commit(service, next, None)
                            .map_err(ApiError::internal)?;
                        self.emit(
                            service,
                            "paused",
                            "rollout paused through the API".into(),
                            Value::Null,
                        );
                        Ok(revision)
                    }
                    RolloutAction::Resume => {
                        let r = next.rollout.as_mut().expect("allowed_in checked");
                        r.phase = Phase::Progressing;
                        r.reason = None;
                        let (gated, started, step, elapsed) = (
                            r.awaiting_gate,
                            r.started_at.clone(),
                            r.step,
                            r.step_elapsed_ms,
                        );
                        let interval = cfg.rollout.as_ref().map_or(TICK, |r| r.analysis.interval);
                        self.clocks.insert(
                            service.to_string(),
                            RolloutClock::new(
                                Instant::now(),
                                interval,
                                Duration::from_millis(elapsed),
                            ),
                        );
                        let revision = self
                            .commit(service, next, None)
                            .map_err(ApiError::internal)?;
                        self.take_baseline(service);
                        self.emit(
                            service,
                            "resumed",
                            "rollout resumed through the API".into(),
                            Value::Null,
                        );
                        if gated {
                            self.ask_gates(service, &started, step);
                        }
                        Ok(revision)
                    }
                    RolloutAction::Promote => self.promote(
                        service,
                        next,
                        Source::Api,
                        "promoted through the API".into(),
                    ),
                    RolloutAction::Abort => {
                        let r = next.rollout.as_mut().expect("allowed_in checked");
                        r.phase = Phase::Aborted;
                        r.reason = Some("aborted through the API".into());
                        r.finished_at = Some(rfc3339(SystemTime::now()));
                        r.awaiting_gate = false;
                        let (stable, canary) = (r.stable.clone(), r.canary.clone());
                        let weights =
                            step_weights(cfg.versions.iter().map(|v| &v.name), &stable, &canary, 0);
                        set_weights(&mut next, &weights);
                        next.settled = releases(&cfg);
                        let reason = format!("rollout of {canary} aborted; {stable} back to 100%");
                        let revision = self
                            .commit(service, next, Some((Source::Api, reason.clone())))
                            .map_err(ApiError::internal)?;
                        self.clocks.remove(service);
                        metrics::counter!("switchyard_rollouts_total", "service" => service.to_string(), "result" => "aborted").increment(1);
                        self.emit(service, "aborted", reason, json!({ "revision": revision }));
                        Ok(revision)
                    }
                }
            }
        }
    }
}

/// Runs blocking I/O. On a multi-threaded runtime's worker (the first commit at start-up runs
/// there) other tasks are handed to another worker meanwhile; elsewhere it simply blocks.
fn without_stalling_workers<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn weights_of(state: &ServiceState) -> BTreeMap<String, u32> {
    state
        .weights
        .iter()
        .map(|(k, v)| (k.clone(), v.weight))
        .collect()
}

fn set_weights(state: &mut ServiceState, weights: &BTreeMap<String, u32>) {
    for (version, weight) in weights {
        if let Some(live) = state.weights.get_mut(version) {
            live.weight = *weight;
        }
    }
}

fn releases(cfg: &switchyard_config::Service) -> BTreeMap<String, String> {
    cfg.versions
        .iter()
        .map(|v| (v.name.clone(), v.release.clone()))
        .collect()
}

fn describe(weights: &BTreeMap<String, u32>) -> String {
    weights
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
