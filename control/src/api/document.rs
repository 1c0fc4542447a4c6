//! The documents the API answers with: a service (SPEC §7, with each version's role from the
//! one rule in `rollout/roles.rs`), and a page of its history.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};
use switchyard_config::JudgeKind;

use crate::controller::{AnalysisRecord, ServiceView, View};
use crate::impact::{ImpactDoc, MirrorCounts, SafetyNetDoc};
use crate::rollout::roles::Role;
use crate::rollout::Phase;
use crate::sequential::EvidenceReport;
use crate::store::HISTORY_KEPT;
use crate::telemetry::{Live, SeriesView, TelemetryView};

/// The service document of SPEC §7, borrowing from the published view: serialized
/// straight to bytes, so `GET /services` at 10,000 services builds no value tree.
#[derive(Debug, Serialize)]
pub struct ServiceDoc<'a> {
    name: &'a str,
    revision: u64,
    versions: Vec<VersionDoc<'a>>,
    rollout: Option<RolloutDoc<'a>>,
}

#[derive(Debug, Serialize)]
struct VersionDoc<'a> {
    name: &'a str,
    release: &'a str,
    /// The live share in percent (two decimals).
    weight: f64,
    role: Option<Role>,
    rolled_back: bool,
    backends: Vec<BackendDoc<'a>>,
    /// Backend names that have never resolved (SPEC §12); left out when there are none.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    unresolved: &'a [Arc<str>],
    live: Live,
    series: Arc<SeriesView>,
}

#[derive(Debug, Serialize)]
struct BackendDoc<'a> {
    address: SocketAddr,
    /// The configured name it was resolved from (SPEC §15); left out for a literal address.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    healthy: bool,
}

#[derive(Debug, Serialize)]
struct RolloutDoc<'a> {
    state: &'static str,
    step: usize,
    steps: usize,
    stable: &'a str,
    canary: &'a str,
    release: Option<&'a str>,
    failed_checks: u32,
    threshold: Option<u32>,
    /// `threshold` or `sequential` (SPEC §15).
    judge: &'static str,
    /// The sequential judge's evidence and its limit; absent with the threshold judge.
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence: Option<EvidenceReport>,
    awaiting_gate: bool,
    reason: Option<&'a str>,
    started_at: Option<&'a str>,
    finished_at: Option<&'a str>,
    last_analysis: Option<&'a AnalysisRecord>,
    /// `traffic` or `mirror` (the current step's kind, SPEC §15).
    mode: &'static str,
    /// A mirror step's share of copied requests, in percent.
    mirror_pct: Option<u32>,
    /// The current (or latest) rollout's impact on users; `null` before any since start.
    impact: Option<ImpactDoc>,
    safety_net: Option<SafetyNetDoc>,
    /// Mirror copies of this service so far, by result.
    mirror: Option<MirrorCounts>,
}

/// The service document of SPEC §7.
pub fn service_doc<'a>(
    name: &'a str,
    view: &'a View,
    sv: &'a ServiceView,
    telemetry: &TelemetryView,
) -> ServiceDoc<'a> {
    let route = sv
        .index
        .and_then(|i| view.table.services.get(i))
        .filter(|r| &*r.name == name);
    let versions = route
        .map(|route| {
            route
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let series = telemetry.get(name, v);
                    VersionDoc {
                        name: &v.name,
                        release: &v.release,
                        weight: round2(route.share_percent(i)),
                        role: sv.roles.as_ref().and_then(|r| r.role(&v.name, &sv.state)),
                        rolled_back: v.rolled_back,
                        backends: v
                            .backends
                            .iter()
                            .zip(v.names.iter())
                            .map(|(b, name)| BackendDoc {
                                address: b.address,
                                name: name.as_deref(),
                                healthy: b.is_healthy(),
                            })
                            .collect(),
                        unresolved: &v.unresolved,
                        live: series.live,
                        series,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let rollout = view
        .config
        .service(name)
        .and_then(|cfg| cfg.rollout.as_ref())
        .map(|cfg| {
            let record = sv.rollout();
            let mirror_pct = record
                .filter(|r| r.phase.is_active())
                .and_then(|r| cfg.steps.get(r.step))
                .and_then(|s| s.mirror);
            RolloutDoc {
                state: record.map_or(Phase::Idle, |r| r.phase).as_str(),
                step: record.map_or(0, |r| {
                    if r.phase == Phase::Idle {
                        0
                    } else {
                        r.step + 1
                    }
                }),
                steps: cfg.steps.len(),
                stable: record.map_or(cfg.stable.as_str(), |r| r.stable.as_str()),
                canary: record.map_or(cfg.canary.as_str(), |r| r.canary.as_str()),
                release: record.map(|r| r.canary_release.as_str()),
                failed_checks: record.map_or(0, |r| r.failed_checks),
                threshold: sv.threshold,
                judge: cfg.analysis.judge.as_str(),
                evidence: (cfg.analysis.judge == JudgeKind::Sequential).then(|| {
                    record
                        .map(crate::engine::sequential::evidence_of)
                        .unwrap_or_default()
                        .report(cfg.analysis.alpha)
                }),
                awaiting_gate: record.is_some_and(|r| r.awaiting_gate),
                reason: record.and_then(|r| r.reason.as_deref()),
                started_at: record.map(|r| r.started_at.as_str()),
                finished_at: record.and_then(|r| r.finished_at.as_deref()),
                last_analysis: sv.last_analysis.as_ref(),
                mode: if mirror_pct.is_some() {
                    "mirror"
                } else {
                    "traffic"
                },
                mirror_pct,
                impact: route.and_then(ImpactDoc::of),
                safety_net: route.map(|r| SafetyNetDoc::of(r, cfg)),
                mirror: route.map(MirrorCounts::of),
            }
        });
    ServiceDoc {
        name,
        revision: sv.revision,
        versions,
        rollout,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A page of a service's history: revisions older than `before` (default: all), the newest
/// `limit` of them (default: every one kept in memory), oldest first. `next_before` pages
/// further back while older revisions are kept; the full history is `revisions.jsonl`.
pub fn history_json(sv: &ServiceView, before: Option<u64>, limit: Option<u64>) -> Value {
    let limit = limit.map_or(HISTORY_KEPT, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let older: Vec<_> = sv
        .history
        .iter()
        .filter(|r| before.is_none_or(|b| r.id < b))
        .collect();
    let page = &older[older.len().saturating_sub(limit)..];
    let next_before = (page.len() < older.len())
        .then(|| page.first().map(|r| r.id))
        .flatten();
    let page: Vec<&crate::store::Revision> = page.iter().map(|r| &***r).collect();
    json!({ "revisions": page, "next_before": next_before })
}

/// `GET /api/v1/fleet` (SPEC §11).
pub fn fleet_json(view: &crate::store::fleet::FleetView) -> Value {
    let replicas: Vec<Value> = view
        .replicas
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "admin": r.admin,
                "leader": view.leader.as_deref() == Some(r.name.as_str()),
                "applied_revision": r.applied_revision,
                "last_seen": r.last_seen,
                "config_hash": r.config_hash,
                "config_mismatch": view.mismatched(r),
            })
        })
        .collect();
    json!({
        "replica": view.me,
        "leader": view.leader,
        "store": {
            "endpoints": view.endpoints,
            "healthy": view.healthy,
            "error": view.error,
        },
        "replicas": replicas,
    })
}
