//! What `GET /api/v1/status` reports: the config and its reloads, persistence health
//! (SPEC §15/§16), what a reload changed that needs a restart, controller restarts, any
//! damage found in `state_dir` at start, and the addresses the sockets were bound to (a
//! configured port 0 reads back here as the port the OS chose).
//!
//! The run loop and the supervisor replace the [`Status`] snapshot (`ArcSwap::rcu`); the
//! admin API reads it without ever waiting on them.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

use crate::clock::{self, Millis};

#[derive(Debug, Clone)]
pub struct Status {
    pub config_path: PathBuf,
    pub started: Instant,
    /// When the config now serving was loaded.
    pub loaded_at: Millis,
    /// The newest reload failure, cleared by the next successful reload.
    pub last_reload_error: Option<String>,
    pub reloads_ok: u64,
    pub reloads_error: u64,
    /// True once listeners are bound and the config is loaded (`/ready`).
    pub ready: bool,
    /// Settings the file changed that only take effect after a restart.
    pub restart_needed: Vec<String>,
    pub persistence: Persistence,
    /// Controller restarts after a panic.
    pub controller_restarts: u64,
    pub last_controller_restart: Option<Millis>,
    /// The sockets this process listens on, as bound: a configured port 0 shows the port
    /// the OS chose. Fixed at start (a reload never rebinds).
    pub bound: Bound,
}

/// The addresses the process actually listens on (`status.listeners`, `status.admin`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bound {
    pub admin: Option<std::net::SocketAddr>,
    /// `(name, address, tls)` per listener, in config order.
    pub listeners: Vec<(String, std::net::SocketAddr, bool)>,
}

/// Whether decisions reach the store (SPEC §15 `persistence`).
#[derive(Debug, Clone, PartialEq)]
pub struct Persistence {
    /// `file`, `memory`, `etcd`.
    pub store: &'static str,
    pub healthy: bool,
    /// The newest write error while unhealthy.
    pub error: Option<String>,
    /// Unhealthy since.
    pub since: Option<Millis>,
    /// Changes applied to traffic but not yet persisted (retried until taken).
    pub pending: usize,
    /// Damage found in the store at start and handled (files kept aside, lines skipped).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    Ok,
    Error(String),
}

impl Status {
    pub fn new(config_path: PathBuf) -> Status {
        Status {
            config_path,
            started: Instant::now(),
            loaded_at: clock::now(),
            last_reload_error: None,
            reloads_ok: 0,
            reloads_error: 0,
            ready: false,
            restart_needed: Vec::new(),
            persistence: Persistence {
                store: "memory",
                healthy: true,
                error: None,
                since: None,
                pending: 0,
                warnings: Vec::new(),
            },
            controller_restarts: 0,
            last_controller_restart: None,
            bound: Bound::default(),
        }
    }

    /// The status after a reload attempt.
    pub fn with_reload(&self, outcome: ReloadOutcome, at: SystemTime) -> Status {
        let mut next = self.clone();
        match outcome {
            ReloadOutcome::Ok => {
                next.loaded_at = clock::to_millis(at);
                next.last_reload_error = None;
                next.reloads_ok += 1;
            }
            ReloadOutcome::Error(message) => {
                next.last_reload_error = Some(message);
                next.reloads_error += 1;
            }
        }
        next
    }

    pub fn to_json(&self) -> Value {
        let p = &self.persistence;
        json!({
            "config_path": self.config_path.display().to_string(),
            "loaded_at": clock::rfc3339(self.loaded_at),
            "last_reload_error": self.last_reload_error,
            "reloads": { "ok": self.reloads_ok, "error": self.reloads_error },
            "restart_needed": self.restart_needed,
            "persistence": {
                "store": p.store,
                "healthy": p.healthy,
                "error": p.error,
                "since": p.since.map(clock::rfc3339),
                "pending": p.pending,
                "warnings": p.warnings,
            },
            "controller": {
                "restarts": self.controller_restarts,
                "last_restart": self.last_controller_restart.map(clock::rfc3339),
            },
            "listeners": self.bound.listeners.iter().map(|(name, address, tls)| json!({
                "name": name,
                "address": address.to_string(),
                "tls": tls,
            })).collect::<Vec<_>>(),
            "admin": { "address": self.bound.admin.map(|a| a.to_string()) },
            // Live counts, not part of the snapshot: how the workers share the connections.
            "workers": switchyard_proxy::workers::connections().iter().enumerate().map(|(i, (accepted, active))| json!({
                "worker": i + 1,
                "connections_accepted": accepted,
                "connections_active": active,
            })).collect::<Vec<_>>(),
            "uptime_s": self.started.elapsed().as_secs(),
            "version": env!("CARGO_PKG_VERSION"),
            "ready": self.ready,
        })
    }
}

/// What differs between the config the process started with and `config`, among the
/// settings that only take effect at a restart.
pub fn restart_needed(
    started: &switchyard_config::Config,
    config: &switchyard_config::Config,
) -> Vec<String> {
    let mut out = Vec::new();
    let listeners = |c: &switchyard_config::Config| -> Vec<(String, std::net::SocketAddr, bool)> {
        c.listeners
            .iter()
            .map(|l| (l.name.clone(), l.address, l.tls.is_some()))
            .collect()
    };
    if listeners(started) != listeners(config) {
        out.push("listeners (names, addresses or TLS on/off)".to_string());
    }
    if started.admin.address != config.admin.address {
        out.push(format!(
            "admin.address ({} → {})",
            started.admin.address, config.admin.address
        ));
    }
    if started.admin.token_file != config.admin.token_file {
        out.push("admin.token_file".to_string());
    }
    if started.state_dir != config.state_dir {
        out.push("state_dir".to_string());
    }
    if started.cluster != config.cluster {
        out.push("cluster".to_string());
    }
    if started.limits != config.limits {
        out.push("limits".to_string());
    }
    if started.access_log != config.access_log {
        out.push("access_log".to_string());
    }
    if started.resolver.nameservers != config.resolver.nameservers {
        out.push("resolver.nameservers".to_string());
    }
    out
}
