//! `GET /metrics`: the data path's recordings and the control plane's events as Prometheus text.
//!
//! Requests are recorded once, on the data path, into atomics (`proxy::stats`); this module
//! only *reads* them at scrape time (DESIGN §3) and renders the per-version and per-backend
//! series straight from the current routing table: requests, failures, weights, backend
//! health and the request-duration histogram (SPEC §5's exact bounds, `le` inclusive). So a
//! version, release or backend that a reload removed is gone from the very next scrape
//! (SPEC §15) — a removed version never keeps a `switchyard_backend_healthy 0` that pages
//! someone — and a scrape formats labels without touching a shared registry. Control-plane
//! events (reloads, rollbacks, analysis checks, store errors, controller restarts) go
//! through the `metrics` macros where they happen, into the `metrics-exporter-prometheus`
//! recorder.
//!
//! The recorder keeps histogram samples until they are rendered; an upkeep task drains them
//! every few seconds so memory stays flat when nothing scrapes.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use switchyard_proxy::listener::ListenerStats;
use switchyard_proxy::stats::{FailureReason, PROMETHEUS_BOUNDS, STATUS_CLASSES};
use switchyard_proxy::RoutingTable;

use crate::discovery::Discovery;

/// SPEC §5's histogram buckets, for the control plane's own histograms.
const DETECTION_BUCKETS: [f64; 13] = PROMETHEUS_BOUNDS;

/// How often the recorder's buffered histogram samples are folded in without a scrape.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The installed recorder; render with [`Exporter::render`].
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    listeners: Arc<[(String, Arc<ListenerStats>)]>,
    /// `switchyard_dns_lookups_total` is read from it at scrape time.
    discovery: Option<Arc<Discovery>>,
}

impl Exporter {
    /// Installs the process-wide `metrics` recorder (once per process).
    pub fn install(listeners: Vec<(String, Arc<ListenerStats>)>) -> Result<Exporter, String> {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&DETECTION_BUCKETS)
            .map_err(|e| format!("metrics buckets: {e}"))?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder)
            .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
        describe();
        // Both reload results exist from the start, so alerts can use rate() on them.
        for result in ["ok", "error"] {
            metrics::counter!("switchyard_config_reloads_total", "result" => result).absolute(0);
        }
        Ok(Exporter {
            handle,
            listeners: listeners.into(),
            discovery: None,
        })
    }

    /// Renders `switchyard_dns_lookups_total` from `discovery`'s counts.
    pub fn with_discovery(self, discovery: Option<Arc<Discovery>>) -> Exporter {
        Exporter { discovery, ..self }
    }

    /// Runs the recorder's upkeep forever (spawn it).
    pub async fn upkeep(self) {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            self.handle.run_upkeep();
        }
    }

    /// The whole `/metrics` page for the current table.
    pub fn render(&self, table: &RoutingTable) -> String {
        for (name, stats) in self.listeners.iter() {
            metrics::gauge!("switchyard_connections_active", "listener" => name.clone())
                .set(stats.active.load(Relaxed) as f64);
        }
        let mut text = self.handle.render();
        render_data_path(table, &mut text);
        render_canary(table, &mut text);
        render_request_durations(table, &mut text);
        if let Some(discovery) = &self.discovery {
            render_dns_lookups(discovery, &mut text);
        }
        text
    }
}

/// `switchyard_dns_lookups_total{service,version,result}` (SPEC §15): every version with
/// backend names, each result from 0, gone with the version at the next reload.
fn render_dns_lookups(discovery: &Discovery, out: &mut String) {
    const NAME: &str = "switchyard_dns_lookups_total";
    let counts = discovery.lookups();
    if counts.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP {NAME} Lookups of backend names by result (ok, error, empty).\n# TYPE {NAME} counter"
    );
    for c in counts {
        let _ = writeln!(
            out,
            "{NAME}{{service=\"{}\",version=\"{}\",result=\"{}\"}} {}",
            escape(&c.service),
            escape(&c.version),
            c.result.as_str(),
            c.count
        );
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "switchyard_fleet_leader",
        "1 on the replica that runs the fleet's rollout clock, else 0."
    );
    describe_gauge!("switchyard_fleet_replicas", "Live replicas seen in etcd.");
    describe_counter!(
        "switchyard_fleet_store_errors_total",
        "Failed etcd calls by operation (commit, watch, publish, campaign)."
    );
    describe_histogram!(
        "switchyard_fleet_apply_seconds",
        "From a commit in etcd to its application on this replica."
    );
    describe_gauge!(
        "switchyard_fleet_config_mismatch",
        "Live replicas whose topology of the service differs from the leader's."
    );
    describe_counter!("switchyard_rollouts_total", "Finished rollouts by result.");
    describe_counter!("switchyard_rollbacks_total", "Rollbacks by reason.");
    describe_counter!(
        "switchyard_analysis_checks_total",
        "Canary analysis checks by result."
    );
    describe_gauge!(
        "switchyard_analysis_evidence",
        "The sequential judge's evidence against the canary, by kind (failures, slow); it rolls back at 2/alpha."
    );
    describe_histogram!(
        "switchyard_rollback_detection_seconds",
        "From the first failing check (the sequential judge: since its evidence rose above 1) to the canary's weight reaching 0."
    );
    describe_counter!(
        "switchyard_config_reloads_total",
        "Config reloads by result."
    );
    describe_gauge!(
        "switchyard_connections_active",
        "Open client connections per listener."
    );
    // Beyond SPEC §5 (documented in the README): what the edge refused, and access-log loss.
    describe_counter!(
        "switchyard_edge_rejections_total",
        "Connections or requests refused at the edge, by listener and reason."
    );
    describe_counter!(
        "switchyard_access_log_dropped_total",
        "Access-log lines dropped because the writer could not keep up."
    );
    describe_counter!(
        "switchyard_state_write_errors_total",
        "Failed attempts to persist the control plane's state, by store."
    );
    describe_counter!(
        "switchyard_controller_restarts_total",
        "Restarts of the controller after a panic."
    );
}

/// Renders the per-version and per-backend series of the current table.
fn render_data_path(table: &RoutingTable, out: &mut String) {
    let mut requests = String::new();
    let mut failures = String::new();
    let mut weights = String::new();
    let mut healthy = String::new();
    for service in table.services.iter() {
        let svc = escape(&service.name);
        for (vi, version) in service.versions.iter().enumerate() {
            let (ver, rel) = (escape(&version.name), escape(&version.release));
            let _ = writeln!(
                weights,
                "switchyard_version_weight{{service=\"{svc}\",version=\"{ver}\",release=\"{rel}\"}} {}",
                service.share_percent(vi)
            );
            let backends = version
                .backends
                .iter()
                .map(|b| (b.address.to_string(), Some(b.is_healthy())))
                .zip(version.backend_stats.iter().map(|s| &**s))
                // Requests that never got a backend (503) are labelled backend="none".
                .chain(std::iter::once((
                    ("none".to_string(), None),
                    &version.stats.unassigned,
                )));
            for ((backend, up), stats) in backends {
                if let Some(up) = up {
                    let _ = writeln!(
                        healthy,
                        "switchyard_backend_healthy{{service=\"{svc}\",version=\"{ver}\",backend=\"{backend}\"}} {}",
                        u8::from(up)
                    );
                }
                let labels = format!(
                    "service=\"{svc}\",version=\"{ver}\",release=\"{rel}\",backend=\"{backend}\""
                );
                for (class, n) in STATUS_CLASSES.iter().zip(stats.requests_by_class()) {
                    if n > 0 {
                        let _ = writeln!(
                            requests,
                            "switchyard_requests_total{{{labels},code=\"{class}\"}} {n}"
                        );
                    }
                }
                for (reason, n) in FailureReason::ALL.iter().zip(stats.failures_by_reason()) {
                    if n > 0 {
                        let _ = writeln!(
                            failures,
                            "switchyard_request_failures_total{{{labels},reason=\"{}\"}} {n}",
                            reason.as_str()
                        );
                    }
                }
            }
        }
    }
    for (name, kind, help, body) in [
        (
            "switchyard_requests_total",
            "counter",
            "Proxied requests by status class.",
            requests,
        ),
        (
            "switchyard_request_failures_total",
            "counter",
            "Failed requests (upstream 5xx, or the proxy answered 502/503/504) by reason.",
            failures,
        ),
        (
            "switchyard_version_weight",
            "gauge",
            "Live traffic share of a version, in percent.",
            weights,
        ),
        (
            "switchyard_backend_healthy",
            "gauge",
            "1 if the backend passes health checks.",
            healthy,
        ),
    ] {
        if !body.is_empty() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            out.push_str(&body);
        }
    }
}

/// Renders SPEC §15's safety-net, mirror and affected-user series: per service from the
/// table's counters (every result from the first rollout on, so `rate()` works at once);
/// users only for a service whose table has a rollout.
fn render_canary(table: &RoutingTable, out: &mut String) {
    use switchyard_proxy::canary::{MirrorResult, NetResult};
    let mut retries = String::new();
    let mut mirror = String::new();
    let mut users = String::new();
    for service in table.services.iter() {
        let Some(rollout) = &service.rollout else {
            continue;
        };
        let svc = escape(&service.name);
        let c = &service.canary_counters;
        for r in NetResult::ALL {
            let _ = writeln!(
                retries,
                "switchyard_safety_net_retries_total{{service=\"{svc}\",result=\"{}\"}} {}",
                r.as_str(),
                c.safety_net_retries(r)
            );
        }
        for r in MirrorResult::ALL {
            let _ = writeln!(
                mirror,
                "switchyard_mirror_requests_total{{service=\"{svc}\",result=\"{}\"}} {}",
                r.as_str(),
                c.mirror_requests(r)
            );
        }
        let Some(impact) = &rollout.impact else {
            continue;
        };
        let counts = impact.counts();
        for (kind, n) in [
            ("total", counts.users_total),
            ("on_canary", counts.users_on_canary),
            ("failed", counts.users_failed),
        ] {
            let _ = writeln!(
                users,
                "switchyard_rollout_users{{service=\"{svc}\",kind=\"{kind}\"}} {n}"
            );
        }
    }
    for (name, kind, help, body) in [
        (
            "switchyard_safety_net_retries_total",
            "counter",
            "Failed canary requests the safety net replayed on the stable (ok, failed) or did not (budget, unsafe).",
            retries,
        ),
        (
            "switchyard_mirror_requests_total",
            "counter",
            "Mirror copies sent to the canary, dropped (too many in flight) or failed by it.",
            mirror,
        ),
        (
            "switchyard_rollout_users",
            "gauge",
            "Distinct users during the service's current or latest rollout: total, sent to the canary, who received a failure from it.",
            users,
        ),
    ] {
        if !body.is_empty() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            out.push_str(&body);
        }
    }
}

/// Renders `switchyard_request_duration_seconds` from the per-version bucket counters.
fn render_request_durations(table: &RoutingTable, out: &mut String) {
    const NAME: &str = "switchyard_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {NAME} From a request's arrival to the upstream response head.\n# TYPE {NAME} histogram"
    );
    for service in table.services.iter() {
        for version in service.versions.iter() {
            let labels = format!(
                "service=\"{}\",version=\"{}\",release=\"{}\"",
                escape(&service.name),
                escape(&version.name),
                escape(&version.release)
            );
            let buckets = version.stats.prometheus_buckets();
            let mut cumulative = 0u64;
            for (bound, n) in PROMETHEUS_BOUNDS.iter().zip(buckets.iter()) {
                cumulative += n;
                let _ = writeln!(out, "{NAME}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            cumulative += buckets[PROMETHEUS_BOUNDS.len()];
            let _ = writeln!(out, "{NAME}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
            let _ = writeln!(
                out,
                "{NAME}_sum{{{labels}}} {}",
                version.stats.latency_sum().as_secs_f64()
            );
            let _ = writeln!(out, "{NAME}_count{{{labels}}} {cumulative}");
        }
    }
}

/// Escapes a label value per the Prometheus text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
