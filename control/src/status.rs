//! What `GET /api/v1/status` reports: config path, when it was loaded, the last reload error.
//!
//! The controller replaces the [`Status`] snapshot (`ArcSwap::rcu`) after every reload; the
//! admin API reads it without ever waiting on the controller.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Status {
    pub config_path: PathBuf,
    pub started: Instant,
    /// When the config now serving was loaded.
    pub loaded_at: SystemTime,
    /// The newest reload failure, cleared by the next successful reload.
    pub last_reload_error: Option<String>,
    pub reloads_ok: u64,
    pub reloads_error: u64,
    /// True once listeners are bound and the config is loaded (`/ready`).
    pub ready: bool,
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
            loaded_at: SystemTime::now(),
            last_reload_error: None,
            reloads_ok: 0,
            reloads_error: 0,
            ready: false,
        }
    }

    /// The status after a reload attempt.
    pub fn with_reload(&self, outcome: ReloadOutcome, at: SystemTime) -> Status {
        let mut next = self.clone();
        match outcome {
            ReloadOutcome::Ok => {
                next.loaded_at = at;
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
        json!({
            "config_path": self.config_path.display().to_string(),
            "loaded_at": rfc3339(self.loaded_at),
            "last_reload_error": self.last_reload_error,
            "reloads": { "ok": self.reloads_ok, "error": self.reloads_error },
            "uptime_s": self.started.elapsed().as_secs(),
            "version": env!("CARGO_PKG_VERSION"),
            "ready": self.ready,
        })
    }
}

/// `2026-11-28T12:00:00Z`: the time format of every timestamp the API returns.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
