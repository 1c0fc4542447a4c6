//! What the control plane persists: per service, the desired state and its revision history.
//!
//! These are plain serde types shared by every [`super::StateStore`]: the file store writes
//! them as `state.json` and `revisions.jsonl` (DESIGN §6), an etcd store would put them under
//! a key per service. Fields are only ever added (with `#[serde(default)]`), so a newer binary
//! reads an older state and an older binary ignores what it does not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rollout::RolloutRecord;

/// Who made a revision (SPEC §7 history `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The config file (start-up or reload).
    Config,
    /// The control API.
    Api,
    /// A rollback decided by canary analysis (thresholds or fast-fail).
    Analysis,
    /// A rollback because every canary backend failed its health checks.
    Health,
    /// A scheduled rollout step or the promotion at its end.
    Rollout,
}

/// One entry of a service's history: the weights from then on, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub id: u64,
    pub service: String,
    /// RFC 3339, UTC, with milliseconds.
    pub at: String,
    pub source: Source,
    pub reason: String,
    pub weights: BTreeMap<String, u32>,
}

/// A version's live weight and the release it was set for: a new release resets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveWeight {
    pub weight: u32,
    pub release: String,
}

/// Everything decided about one service beyond its config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    /// Id of the newest revision (0: none yet).
    pub revision: u64,
    pub weights: BTreeMap<String, LiveWeight>,
    /// Version → the release that was rolled back (stays at 0% while the release matches).
    pub rolled_back: BTreeMap<String, String>,
    /// The current or last rollout.
    pub rollout: Option<RolloutRecord>,
    /// Version → release when the last rollout finished; a canary whose release differs
    /// starts a new rollout.
    pub settled: BTreeMap<String, String>,
    /// The config's weights this state was reconciled with: a config weight that differs from
    /// it at the next start or reload was edited in the file, and the edit wins.
    #[serde(default)]
    pub config_weights: BTreeMap<String, u32>,
    /// How many rollouts this service has had; the current one's number is in its record.
    #[serde(default)]
    pub rollouts: u64,
}

impl ServiceState {
    /// Version → live weight.
    pub fn weights(&self) -> BTreeMap<String, u32> {
        self.weights
            .iter()
            .map(|(k, v)| (k.clone(), v.weight))
            .collect()
    }

    /// Sets the weights of the versions named (others keep theirs).
    pub fn set_weights(&mut self, weights: &BTreeMap<String, u32>) {
        for (version, weight) in weights {
            if let Some(live) = self.weights.get_mut(version) {
                live.weight = *weight;
            }
        }
    }

    /// The live weight of one version (0 if unknown).
    pub fn weight(&self, version: &str) -> u32 {
        self.weights.get(version).map_or(0, |l| l.weight)
    }
}

/// Every service's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    pub services: BTreeMap<String, ServiceState>,
}

/// `blue=90 green=10`.
pub fn describe(weights: &BTreeMap<String, u32>) -> String {
    weights
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
