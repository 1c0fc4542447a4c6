//! Building the loop: at start, and again from the persisted state after a panic.
//!
//! [`start`] creates the [`Core`] and hands it to the supervisor's thread, which boots the
//! first incarnation — load the store, lay anything not yet persisted over it, reconcile
//! with the config, compile the first table — and signals that the table is there.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_config::Config;
use switchyard_proxy::{RoutingTable, TableHandle};
use tokio::sync::mpsc;

use super::{Controller, ControllerHandle, Core, Pending, Readers, View};
use crate::discovery::{Discovery, Snapshot};
use crate::events::EventLog;
use crate::rollout::Phase;
use crate::status::Status;
use crate::store::{push_bounded_arc, StateStore};
use crate::telemetry::Sampler;
use crate::webhooks::EventWebhooks;

/// Longest the loop waits for the store to be read at boot (a long history takes a while).
const LOAD_DEADLINE: Duration = Duration::from_secs(60);

/// What `start` needs.
pub struct StartOptions {
    pub config_path: PathBuf,
    pub config: Config,
    pub store: Arc<dyn StateStore>,
    pub status: Arc<ArcSwap<Status>>,
    /// Runs (on the blocking pool) with every config reload.
    pub on_reload: Arc<dyn Fn() + Send + Sync>,
    /// Backend names resolved in the background (SPEC §12); `None`: names give no backends.
    pub discovery: Option<Arc<Discovery>>,
}

/// Starts the controller on its own supervised thread; returns once the first table is
/// compiled. Must run inside a tokio runtime (event webhooks are delivered from it).
pub async fn start(
    options: StartOptions,
) -> Result<(ControllerHandle, Readers, TableHandle), String> {
    let (core, handle, readers, table) = Core::new(options);
    let ready = crate::supervisor::spawn(core)?;
    ready
        .await
        .map_err(|_| "the controller stopped while starting".to_string())?;
    Ok((handle, readers, table))
}

impl Core {
    /// Everything that outlives one incarnation of the loop, and the handles to it.
    pub(crate) fn new(options: StartOptions) -> (Core, ControllerHandle, Readers, TableHandle) {
        let (tx, rx) = mpsc::channel(256);
        let config = Arc::new(options.config);
        let table: TableHandle = Arc::new(ArcSwap::from_pointee(RoutingTable::default()));
        let events = EventLog::new(Vec::new());
        let readers = Readers {
            view: Arc::new(ArcSwap::from_pointee(View {
                config: Arc::clone(&config),
                table: table.load_full(),
                services: BTreeMap::new(),
            })),
            events: events.reader(),
            telemetry: Arc::default(),
        };
        let store_kind = options.store.kind();
        options.status.rcu(|s| {
            let mut next = Status::clone(s);
            next.persistence.store = store_kind;
            next
        });
        let core = Core {
            config_path: options.config_path,
            started_with: Arc::clone(&config),
            config,
            store: options.store,
            table: Arc::clone(&table),
            readers: readers.clone(),
            status: options.status,
            events,
            webhooks: EventWebhooks::start(),
            pending: Pending::default(),
            rx,
            tx: tx.clone(),
            on_reload: options.on_reload,
            discovery: options.discovery,
            retired: Vec::new(),
            panic_on: injected_fault(),
            booted: false,
        };
        (core, ControllerHandle { tx }, readers, table)
    }
}

/// Debug builds: `SWITCHYARD_FAULT=controller-panic:SERVICE` makes a command on SERVICE
/// panic the loop, so the supervisor's restart is tested against the real binary.
fn injected_fault() -> Option<String> {
    if !cfg!(debug_assertions) {
        return None;
    }
    std::env::var("SWITCHYARD_FAULT")
        .ok()?
        .strip_prefix("controller-panic:")
        .map(str::to_string)
}

impl Controller<'_> {
    /// One incarnation, from what the store holds plus what it has not taken yet.
    pub(crate) async fn boot(core: &mut Core) -> Controller<'_> {
        let deadline = tokio::time::Instant::now() + LOAD_DEADLINE;
        let loaded = match core.store.load(deadline).await {
            Ok(l) => l,
            Err(e) => crate::store::Loaded {
                warnings: vec![format!(
                    "cannot read the stored state ({e}); starting from the config"
                )],
                ..Default::default()
            },
        };
        if !core.booted {
            core.booted = true;
            for warning in &loaded.warnings {
                tracing::error!("{warning}");
            }
            let warnings = loaded.warnings.clone();
            core.status.rcu(|s| {
                let mut next = Status::clone(s);
                next.persistence.warnings = warnings.clone();
                next
            });
            core.events.restore(loaded.events);
            metrics::counter!("switchyard_state_write_errors_total", "store" => core.store.kind())
                .absolute(0);
            metrics::counter!("switchyard_controller_restarts_total").absolute(0);
        }
        let mut state = loaded.state.services;
        let mut history: HashMap<String, _> = loaded
            .history
            .into_iter()
            .map(|(k, v)| (k, Arc::new(v.into_iter().map(Arc::new).collect())))
            .collect();
        // A restart after a panic: what was applied but not persisted still holds.
        for (service, s, revisions) in core.pending.overlay() {
            state.insert(service.clone(), s.clone());
            let h = history.entry(service.clone()).or_default();
            for r in revisions {
                push_bounded_arc(Arc::make_mut(h), Arc::new(r.clone()));
            }
        }
        let resolved = core
            .discovery
            .as_ref()
            .map_or_else(|| Arc::new(Snapshot::default()), |d| d.snapshot());
        let core_leads = core.store.is_leader();
        let mut c = Controller {
            core,
            state,
            history,
            versions: loaded.versions,
            clocks: HashMap::new(),
            sampler: Sampler::default(),
            next_second: 0,
            traffic: BTreeMap::new(),
            traffic_dirty: true,
            resolved,
            index: HashMap::new(),
            views: BTreeMap::new(),
            dirty_views: Vec::new(),
            starts_pending: BTreeMap::new(),
            gates_passed: BTreeMap::new(),
            // A single replica always leads; a fleet's replica learns it from the session.
            leading: core_leads,
            hashes: Arc::default(),
        };
        // Rollouts that were running continue their step where it was; their analysis
        // starts a fresh window, and gates asked before the restart are asked again.
        let running: Vec<(String, u64)> = c
            .state
            .iter()
            .filter_map(|(name, s)| {
                let r = s.rollout.as_ref()?;
                (r.phase == Phase::Progressing).then(|| (name.clone(), r.number))
            })
            .collect();
        c.reconcile().await;
        c.publish();
        for (name, number) in running {
            let Some(r) = c.state.get(&name).and_then(|s| s.rollout.as_ref()) else {
                continue;
            };
            if r.phase != Phase::Progressing || r.number != number {
                continue;
            }
            let awaiting_gate = r.awaiting_gate;
            if !c.clocks.contains_key(&name) {
                c.start_clock(&name);
            }
            // Gates are the leader's to ask (a replica that becomes leader later asks then).
            if awaiting_gate && c.leading {
                let step = c.state[&name]
                    .rollout
                    .as_ref()
                    .map_or(0, crate::rollout::transitions::gate_step);
                c.run_effects(&name, 0, vec![crate::plan::Effect::AskGates { step }]);
            }
        }
        c.publish();
        c
    }
}
