//! The threshold checks over the data path's own `VersionSnapshot`s, for callers outside the
//! run loop — the seeded decision simulation (`benches/decisions.rs`). A thin adapter: it
//! turns snapshots into telemetry [`Window`]s and calls the engine's one implementation
//! (`engine::threshold::check`, `engine::judge::fast_fail`).

use std::collections::BTreeMap;

use switchyard_config::{Analysis, FastFail};
use switchyard_proxy::stats::VersionSnapshot;

pub use crate::engine::threshold::{CheckResult, MetricResult, Verdict};
use crate::telemetry::window::{Histogram, Window};

/// A snapshot (or a difference of snapshots) as a window; failures count as reason `status`.
pub fn window(s: &VersionSnapshot) -> Window {
    Window {
        requests: s.total,
        failures: if s.failed > 0 {
            BTreeMap::from([("status".to_string(), s.failed)])
        } else {
            BTreeMap::new()
        },
        latency: Histogram(s.latency.clone()),
    }
}

/// SPEC §6's check over one interval of canary (and stable) traffic.
pub fn check(
    analysis: &Analysis,
    canary: &VersionSnapshot,
    stable: &VersionSnapshot,
    window_s: f64,
) -> CheckResult {
    crate::engine::threshold::check(analysis, &window(canary), &window(stable), window_s)
}

/// SPEC §6's fast-fail over the last second; the error rate that tripped it.
pub fn fast_fail(rule: &FastFail, last_second: &VersionSnapshot) -> Option<f64> {
    crate::engine::judge::fast_fail(rule, &window(last_second))
}
