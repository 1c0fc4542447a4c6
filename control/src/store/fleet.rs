//! What replicas of one fleet tell each other besides commits (SPEC §11): who they are, which
//! revision of each service they applied, a hash of their topology per service, and — for
//! services whose rollout is progressing — their telemetry windows, so the leader judges the
//! fleet's traffic, not its own slice of it.
//!
//! These are plain serde types: a replica hands its [`Report`] to the store
//! ([`super::StateStore::report`]), the etcd store publishes it under the replica's lease
//! at least once a second, and hands back what every live replica published as a
//! [`FleetView`] ([`super::StateStore::fleet`]). A single replica's store has no fleet.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::telemetry::window::Window;

/// What the run loop reports about this replica, every second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Service → the revision id applied to this replica's table.
    pub applied: BTreeMap<String, u64>,
    /// Service → hash of its topology in this replica's config ([`topology_hash`]).
    pub hashes: Arc<BTreeMap<String, String>>,
    /// Telemetry of the services whose rollout is progressing.
    pub windows: BTreeMap<String, ServiceWindows>,
}

/// One replica's cumulative readings of a running rollout's canary and stable. Cumulative
/// (since the process started, see [`Published::boot`]): the leader keeps its own baseline
/// per replica and judges the sum of the differences, so a missed publication loses nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceWindows {
    /// The rollout's number (readings of an earlier rollout are not pooled into this one).
    pub rollout: u64,
    pub canary: Window,
    pub stable: Window,
    /// Whether any canary backend passes its health checks here; `None` without checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_up: Option<bool>,
}

/// What one replica publishes under `windows/<replica>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// Changes when the process restarts (its counters start again from 0).
    pub boot: String,
    /// Unix milliseconds when published.
    pub at: u64,
    pub services: BTreeMap<String, ServiceWindows>,
}

/// What one replica publishes under `replicas/<replica>` (its heartbeat).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub name: String,
    /// Its admin address, as configured.
    pub admin: String,
    pub applied_revision: BTreeMap<String, u64>,
    /// RFC 3339: when it last wrote this.
    pub last_seen: String,
    /// Hash over every service's topology (equal on replicas with equal configs).
    pub config_hash: String,
    /// Service → topology hash.
    #[serde(default)]
    pub service_hashes: BTreeMap<String, String>,
}

/// The fleet as this replica last read it from the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetView {
    /// This replica's name.
    pub me: String,
    pub leader: Option<String>,
    pub endpoints: Vec<String>,
    /// Whether the store answered the last call.
    pub healthy: bool,
    pub error: Option<String>,
    /// Live replicas (their lease holds), this one included, by name.
    pub replicas: Vec<ReplicaInfo>,
    /// Other live replicas' published windows, by replica name.
    pub windows: BTreeMap<String, Published>,
}

impl FleetView {
    /// Services whose topology on `replica` differs from the leader's (none while either has
    /// not reported its topology yet, in its first second).
    pub fn mismatched(&self, replica: &ReplicaInfo) -> Vec<String> {
        if replica.service_hashes.is_empty() {
            return Vec::new();
        }
        let Some(leader) = self
            .leader
            .as_ref()
            .and_then(|l| self.replicas.iter().find(|r| &r.name == l))
            .filter(|l| !l.service_hashes.is_empty())
        else {
            return Vec::new();
        };
        let mut out: Vec<String> = leader
            .service_hashes
            .iter()
            .filter(|(svc, hash)| replica.service_hashes.get(*svc) != Some(hash))
            .map(|(svc, _)| svc.clone())
            .collect();
        out.extend(
            replica
                .service_hashes
                .keys()
                .filter(|svc| !leader.service_hashes.contains_key(*svc))
                .cloned(),
        );
        out.sort();
        out
    }

    /// Service → live replicas whose topology differs from the leader's (every service the
    /// leader knows has an entry, 0 when they all agree).
    pub fn mismatch_counts(&self) -> BTreeMap<String, usize> {
        let mut counts: BTreeMap<String, usize> = self
            .leader
            .as_ref()
            .and_then(|l| self.replicas.iter().find(|r| &r.name == l))
            .map(|l| l.service_hashes.keys().map(|s| (s.clone(), 0)).collect())
            .unwrap_or_default();
        for r in &self.replicas {
            for svc in self.mismatched(r) {
                *counts.entry(svc).or_default() += 1;
            }
        }
        counts
    }
}

/// A hash of what a service *is* in a config — matchers, versions, releases, backends,
/// health checks, timeouts, rollout steps and analysis — in 16 hex digits. FNV-1a over the
/// config's own debug rendering: fixed and seedless, so equal configs hash equally on every
/// replica running the same binary.
pub fn topology_hash(service: &switchyard_config::Service) -> String {
    format!("{:016x}", fnv1a(format!("{service:?}").as_bytes()))
}

/// One hash over many (a replica's whole topology).
pub fn combined_hash<'a>(hashes: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut bytes = Vec::new();
    for (k, v) in hashes {
        bytes.extend_from_slice(k.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(v.as_bytes());
        bytes.push(0);
    }
    format!("{:016x}", fnv1a(&bytes))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(name: &str, hashes: &[(&str, &str)]) -> ReplicaInfo {
        ReplicaInfo {
            name: name.into(),
            service_hashes: hashes
                .iter()
                .map(|(s, h)| (s.to_string(), h.to_string()))
                .collect(),
            ..ReplicaInfo::default()
        }
    }

    #[test]
    fn drift_is_counted_against_the_leader() {
        let view = FleetView {
            leader: Some("a".into()),
            replicas: vec![
                replica("a", &[("api", "1"), ("web", "2")]),
                replica("b", &[("api", "1"), ("web", "3")]),
                replica("c", &[("api", "1"), ("web", "3"), ("new", "4")]),
            ],
            ..FleetView::default()
        };
        assert_eq!(view.mismatched(&view.replicas[2]), ["new", "web"]);
        let counts = view.mismatch_counts();
        assert_eq!(counts["api"], 0);
        assert_eq!(counts["web"], 2);
        assert_eq!(counts["new"], 1);
    }

    #[test]
    fn equal_topologies_hash_equally_and_a_backend_changes_it() {
        let config = switchyard_config::parse(
            "listeners: [{ name: p, address: 127.0.0.1:0 }]\nservices:\n  api:\n    versions:\n      v1: { release: a, backends: [\"127.0.0.1:1\"] }\n",
            "t.yaml",
        )
        .unwrap();
        let mut other = config.services[0].clone();
        assert_eq!(topology_hash(&config.services[0]), topology_hash(&other));
        other.versions[0].backends[0] =
            switchyard_config::Backend::Address("127.0.0.1:2".parse().unwrap());
        assert_ne!(topology_hash(&config.services[0]), topology_hash(&other));
    }
}
