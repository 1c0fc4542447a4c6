//! The controller: the one and only writer of the routing table (DESIGN §1), as a thin run
//! loop.
//!
//! The config watcher, SIGHUP, the admin API, gate webhooks, other replicas and the rollout
//! clock all want to change what traffic does. Each sends an [`Intent`]; this loop handles
//! them one at a time, so two changes never race:
//!
//! ```text
//! intent → command / transition (a Plan) → commit.rs (store and table, in the order
//! DESIGN §7 asks) → effects (events, webhooks, metrics) → publish.rs (compile the table
//! only if traffic changed, publish the API view) → answer
//! ```
//!
//! The loop's parts: [`boot`] builds it from the store (at start and after a panic),
//! [`commit`] holds the two asymmetries of DESIGN §7, [`publish`] the table and views,
//! [`effects`] what follows a change, [`clock`] the rollout clock (telemetry → engine →
//! decisions), [`reload`] the config file, [`pending`] what waits for the store, [`race`]
//! races lost to other replicas, [`fleet`] leadership and pooled analysis in a fleet. What survives a panic — the intent queue, the
//! store, the table, the event log, changes not yet persisted — lives in [`Core`], owned by
//! the supervisor (`supervisor.rs`).

mod boot;
mod clock;
mod commit;
mod effects;
mod fleet;
mod pending;
mod publish;
mod race;
mod reload;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use switchyard_config::Config;
use switchyard_proxy::{RoutingTable, TableHandle, TrafficState};
use tokio::sync::{mpsc, oneshot};

use crate::commands::Command;
use crate::engine::CheckResult;
use crate::events::{Event, EventLog};
use crate::refusal::Refusal;
use crate::rollout::roles::Roles;
use crate::rollout::RolloutRecord;
use crate::status::Status;
use crate::store::{Remote, Revision, ServiceState, StateStore};
use crate::telemetry::{Sampler, TelemetryView};
use crate::webhooks::EventWebhooks;

pub use boot::{start, StartOptions};
pub use pending::Pending;

/// How often the rollout clock ticks (fast-fail needs sub-second ticks).
pub const TICK: std::time::Duration = std::time::Duration::from_millis(250);

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
        reply: oneshot::Sender<Result<Arc<View>, Refusal>>,
    },
    /// Gate webhooks answered for step `step` of rollout number `rollout`.
    GateAnswered {
        service: String,
        rollout: u64,
        step: usize,
        result: Result<(), String>,
    },
    /// A commit another replica made.
    Remote(Box<Remote>),
}

/// Cheap handle for sending intents to the controller.
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    tx: mpsc::Sender<Intent>,
}

impl ControllerHandle {
    /// Asks for a config reload without waiting for the result (watcher, SIGHUP): only sends
    /// the intent; the loop reads the file on the blocking pool.
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

    /// Runs an operator command; `Ok` carries the view published right after it was applied
    /// (and persisted, when the change needs the store) — the state the change made, even if
    /// another replica's commit is applied a moment later.
    pub async fn command(&self, service: &str, command: Command) -> Result<Arc<View>, Refusal> {
        let (reply, rx) = oneshot::channel();
        let lost = || {
            Refusal::Unavailable(format!(
                "the controller restarted while handling this change, which was not applied; \
                 check GET /api/v1/services/{service} and try again"
            ))
        };
        self.tx
            .send(Intent::Command {
                service: service.to_string(),
                command,
                reply,
            })
            .await
            .map_err(|_| lost())?;
        rx.await.map_err(|_| lost())?
    }
}

/// The last analysis check, as the API shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AnalysisRecord {
    pub at: String,
    #[serde(flatten)]
    pub check: CheckResult,
}

/// What the API reads about one service, published after every change to it.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub revision: u64,
    pub state: ServiceState,
    pub roles: Option<Roles>,
    pub threshold: Option<u32>,
    pub last_analysis: Option<AnalysisRecord>,
    /// The newest revisions, oldest first (at most `HISTORY_KEPT`).
    pub history: Arc<VecDeque<Arc<Revision>>>,
    /// Position of the service in [`View::table`].
    pub index: Option<usize>,
}

impl ServiceView {
    pub fn rollout(&self) -> Option<&RolloutRecord> {
        self.state.rollout.as_ref()
    }
}

/// The controller's published state: the config, the table it compiled from it, and
/// per-service views indexed by name.
#[derive(Debug, Clone)]
pub struct View {
    pub config: Arc<Config>,
    pub table: Arc<RoutingTable>,
    pub services: BTreeMap<Arc<str>, Arc<ServiceView>>,
}

/// Shared read handles for the admin API: snapshots only, no locks.
#[derive(Clone)]
pub struct Readers {
    pub view: Arc<ArcSwap<View>>,
    pub events: Arc<ArcSwap<Vec<Arc<Event>>>>,
    pub telemetry: Arc<ArcSwap<TelemetryView>>,
}

/// What outlives one run of the loop: owned by the supervisor, lent to each incarnation.
pub struct Core {
    pub(crate) config_path: PathBuf,
    /// The config serving now.
    pub(crate) config: Arc<Config>,
    /// The config the process started with (for "needs a restart").
    pub(crate) started_with: Arc<Config>,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) table: TableHandle,
    pub(crate) readers: Readers,
    pub(crate) status: Arc<ArcSwap<Status>>,
    pub(crate) events: EventLog,
    pub(crate) webhooks: EventWebhooks,
    /// Changes applied to traffic but not yet taken by the store.
    pub(crate) pending: Pending,
    pub(crate) rx: mpsc::Receiver<Intent>,
    pub(crate) tx: mpsc::Sender<Intent>,
    /// Called (on the blocking pool) with every config reload, e.g. to reload certificates.
    pub(crate) on_reload: Arc<dyn Fn() + Send + Sync>,
    /// Backend names, resolved in the background; each new snapshot recompiles the table.
    pub(crate) discovery: Option<Arc<crate::discovery::Discovery>>,
    /// Replaced tables some request may still hold (see `publish.rs`).
    pub(crate) retired: Vec<Arc<RoutingTable>>,
    /// Debug builds only: a command on this service panics the loop (supervision tests).
    pub(crate) panic_on: Option<String>,
    /// Whether the first incarnation has logged the store's warnings.
    pub(crate) booted: bool,
}

/// Per-rollout bookkeeping that restarts with the loop.
#[derive(Debug, Clone)]
struct RolloutClock {
    engine: crate::engine::Clock,
    /// Canary and stable readings when the current analysis interval began.
    baseline: (
        crate::telemetry::window::Window,
        crate::telemetry::window::Window,
    ),
    last_analysis: Option<AnalysisRecord>,
    /// The leader's: other replicas' readings when the interval began (`fleet.rs`).
    peers: BTreeMap<String, fleet::PeerBaseline>,
}

/// One incarnation of the loop.
pub struct Controller<'a> {
    core: &'a mut Core,
    state: BTreeMap<String, ServiceState>,
    history: HashMap<String, Arc<VecDeque<Arc<Revision>>>>,
    /// The store's version of each service (for conditional commits).
    versions: HashMap<String, u64>,
    clocks: HashMap<String, RolloutClock>,
    sampler: Sampler,
    next_second: u64,
    /// What the current table was compiled from, and whether it must be recompiled.
    traffic: TrafficState,
    traffic_dirty: bool,
    /// The addresses of backend names the table is compiled with (discovery's last snapshot).
    resolved: Arc<crate::discovery::Snapshot>,
    index: HashMap<Arc<str>, usize>,
    views: BTreeMap<Arc<str>, Arc<ServiceView>>,
    dirty_views: Vec<String>,
    /// Config-driven rollout starts the store refused, retried every tick.
    starts_pending: BTreeMap<String, String>,
    /// Steps the gates allowed but the store refused: (rollout number, step), retried.
    gates_passed: BTreeMap<String, (u64, usize)>,
    /// Whether this replica led at the last tick (a shared store; always true otherwise).
    leading: bool,
    /// Service → topology hash of the config now serving (a shared store only).
    hashes: Arc<BTreeMap<String, String>>,
}

impl Controller<'_> {
    /// Handles intents and ticks until every handle is gone.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut remote = self.core.store.subscribe();
        let mut resolved = self.core.discovery.as_ref().map(|d| d.subscribe());
        let mut remote_events = self.core.store.subscribe_events();
        loop {
            tokio::select! {
                intent = self.core.rx.recv() => match intent {
                    Some(intent) => self.handle(intent).await,
                    None => return,
                },
                Some(r) = remote.recv() => {
                    let waited = !self.core.pending.is_empty();
                    self.apply_remote(r);
                    if !self.core.pending.is_empty() {
                        // A change of ours was decided again on what arrived: commit it.
                        self.publish();
                        self.flush().await;
                    } else if waited {
                        // What waited is settled by what another replica committed.
                        self.publish_persistence(None);
                    }
                }
                Some(event) = next_event(&mut remote_events) => self.core.events.push_remote(event),
                Some(snapshot) = publish::resolved_changed(&mut resolved) => {
                    self.names_resolved(snapshot);
                }
                _ = tick.tick() => self.tick().await,
            }
            self.publish();
        }
    }

    async fn handle(&mut self, intent: Intent) {
        match intent {
            Intent::ReloadConfig { reply } => {
                let result = self.reload().await;
                self.publish();
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Intent::Command {
                service,
                command,
                reply,
            } => {
                if self.core.panic_on.as_deref() == Some(service.as_str()) {
                    panic!("injected fault: a command on service {service} (SWITCHYARD_FAULT)");
                }
                let result = self.command(&service, command).await;
                self.publish();
                let _ = reply.send(result.map(|_| self.core.readers.view.load_full()));
            }
            Intent::GateAnswered {
                service,
                rollout,
                step,
                result,
            } => self.gate_answered(&service, rollout, step, result).await,
            Intent::Remote(r) => self.apply_remote(*r),
        }
    }

    async fn command(&mut self, service: &str, command: Command) -> Result<u64, Refusal> {
        let config = Arc::clone(&self.core.config);
        let cfg = config
            .service(service)
            .ok_or_else(|| Refusal::unknown_service(service))?;
        let state = self.state.get(service).cloned().unwrap_or_default();
        let history = self.history.get(service).cloned().unwrap_or_default();
        let ctx = crate::commands::Ctx {
            service,
            cfg,
            state: &state,
            history: &history,
            now: crate::clock::now(),
        };
        let plan = crate::commands::plan(ctx, command.clone())?;
        self.carry_out(plan, race::Redo::Command(command)).await
    }
}

/// The next event another replica recorded (never, for a single replica's store).
async fn next_event(rx: &mut Option<mpsc::Receiver<Event>>) -> Option<Event> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
