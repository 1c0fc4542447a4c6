//! The controller: the one and only writer of the routing table (DESIGN §1).
//!
//! The config file watcher, SIGHUP, the admin API and (later) the rollout analysis all want to
//! change what traffic does. If each of them did load-modify-store on the table, two would
//! race and one change would be lost. Instead each sends an [`Intent`] over a channel and this
//! task applies intents one at a time: validate → compute the new state → compile a new
//! [`RoutingTable`] → `store()` it → answer. Readers (data path, admin GETs) never wait on it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use switchyard_config::Config;
use switchyard_proxy::{RoutingTable, TableHandle, TrafficState};
use tokio::sync::{mpsc, oneshot};

use crate::status::{ReloadOutcome, Status};

/// A request to change what traffic does.
#[derive(Debug)]
pub enum Intent {
    /// Re-read the config file (watcher or SIGHUP); answers whether it was applied.
    ReloadConfig {
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
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
}

/// The controller's state; owned by its task alone.
pub struct Controller {
    config_path: PathBuf,
    config: Arc<Config>,
    traffic: TrafficState,
    table: TableHandle,
    status: Arc<ArcSwap<Status>>,
    rx: mpsc::Receiver<Intent>,
}

impl Controller {
    /// Compiles the first table from an already loaded config.
    pub fn new(
        config_path: PathBuf,
        config: Config,
        status: Arc<ArcSwap<Status>>,
    ) -> (Controller, ControllerHandle, TableHandle) {
        let traffic = TrafficState::default();
        let table = Arc::new(ArcSwap::from_pointee(RoutingTable::compile(
            &config, &traffic, None,
        )));
        let (tx, rx) = mpsc::channel(64);
        let controller = Controller {
            config_path,
            config: Arc::new(config),
            traffic,
            table: Arc::clone(&table),
            status,
            rx,
        };
        (controller, ControllerHandle { tx }, table)
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Applies intents until every handle is dropped.
    pub async fn run(mut self) {
        while let Some(intent) = self.rx.recv().await {
            match intent {
                Intent::ReloadConfig { reply } => {
                    let result = self.reload().await;
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                }
            }
        }
    }

    async fn reload(&mut self) -> Result<(), String> {
        let path = self.config_path.clone();
        // File I/O off the runtime's worker threads.
        let loaded = tokio::task::spawn_blocking(move || switchyard_config::load(&path))
            .await
            .map_err(|e| format!("config loader panicked: {e}"))?;
        match loaded {
            Ok(config) => {
                if config.listeners != self.config.listeners || config.admin != self.config.admin {
                    tracing::warn!(
                        "listener or admin addresses changed; they take effect after a restart"
                    );
                }
                self.config = Arc::new(config);
                self.swap_table();
                self.status
                    .rcu(|s| s.with_reload(ReloadOutcome::Ok, SystemTime::now()));
                tracing::info!(path = %self.config_path.display(), "config reloaded");
                Ok(())
            }
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
                Err(message)
            }
        }
    }

    fn swap_table(&self) {
        let previous = self.table.load();
        let next = RoutingTable::compile(&self.config, &self.traffic, Some(&previous));
        self.table.store(Arc::new(next));
    }
}
