//! A rollout's measured impact on users and what its safety net and mirror copies did, as
//! the API, the rollback event and `ctl status` show them (SPEC §13, §15). The numbers are
//! counted on the data path (`switchyard_proxy::canary`); this module only reads them from
//! the current routing table.

use serde::Serialize;
use switchyard_proxy::canary::{MirrorResult, NetResult};
use switchyard_proxy::table::ServiceRoute;

/// `rollout.impact`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ImpactDoc {
    /// Distinct users of the service during the rollout (HyperLogLog, ±2%).
    pub users_total: u64,
    /// Distinct users sent to the canary.
    pub users_on_canary: u64,
    /// Distinct users who received a failure from the canary (after the safety net).
    pub users_failed: u64,
    /// Requests sent to the canary whose answer to the user was a failure.
    pub requests_failed: u64,
    /// users_failed / users_total × 100, two decimals.
    pub users_failed_pct: f64,
}

impl ImpactDoc {
    /// The impact of the service's current (or latest) rollout, if it ran since start.
    pub fn of(route: &ServiceRoute) -> Option<ImpactDoc> {
        let c = route.rollout.as_ref()?.impact.as_ref()?.counts();
        Some(ImpactDoc {
            users_total: c.users_total,
            users_on_canary: c.users_on_canary,
            users_failed: c.users_failed,
            requests_failed: c.requests_failed,
            users_failed_pct: (c.users_failed_pct() * 100.0).round() / 100.0,
        })
    }
}

/// `rollout.safety_net`: whether it is on, and the service's replays so far by result.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct SafetyNetDoc {
    pub enabled: bool,
    /// Percent of the canary's requests over 10 s that may be replayed.
    pub budget_pct: Option<u32>,
    pub retries: NetCounts,
}

/// `switchyard_safety_net_retries_total` by result.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct NetCounts {
    pub ok: u64,
    pub failed: u64,
    pub budget: u64,
    #[serde(rename = "unsafe")]
    pub not_safe: u64,
}

/// `switchyard_mirror_requests_total` by result.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct MirrorCounts {
    pub sent: u64,
    pub dropped: u64,
    pub failed: u64,
}

impl SafetyNetDoc {
    pub fn of(route: &ServiceRoute, cfg: &switchyard_config::Rollout) -> SafetyNetDoc {
        let c = &route.canary_counters;
        SafetyNetDoc {
            enabled: cfg.safety_net.is_some(),
            budget_pct: cfg.safety_net.map(|n| n.budget),
            retries: NetCounts {
                ok: c.safety_net_retries(NetResult::Ok),
                failed: c.safety_net_retries(NetResult::Failed),
                budget: c.safety_net_retries(NetResult::Budget),
                not_safe: c.safety_net_retries(NetResult::Unsafe),
            },
        }
    }
}

impl MirrorCounts {
    pub fn of(route: &ServiceRoute) -> MirrorCounts {
        let c = &route.canary_counters;
        MirrorCounts {
            sent: c.mirror_requests(MirrorResult::Sent),
            dropped: c.mirror_requests(MirrorResult::Dropped),
            failed: c.mirror_requests(MirrorResult::Failed),
        }
    }
}
