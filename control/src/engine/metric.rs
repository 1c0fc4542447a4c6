//! The analysis metrics and rollback reasons, each defined once.
//!
//! A [`Metric`] owns everything about one metric: the name the config and the labels use,
//! its unit, how its value is read from a telemetry [`Window`], and the rollback reason it
//! gives. Adding a metric is one `Metric` here plus its name in the config's `MetricName`.
//! [`RollbackReason::ALL`] is what `/metrics` pre-registers, so alert rules see every reason
//! at 0 before the first rollback.

use serde::Serialize;
use switchyard_config::MetricName;

use crate::telemetry::window::Window;

/// Why a canary was rolled back (`switchyard_rollbacks_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RollbackReason {
    #[serde(rename = "error-rate")]
    ErrorRate,
    #[serde(rename = "latency-p99")]
    LatencyP99,
    #[serde(rename = "health")]
    Health,
    #[serde(rename = "manual")]
    Manual,
    #[serde(rename = "fast-fail")]
    FastFail,
    /// The sequential judge's evidence reached `2/alpha` (SPEC §14).
    #[serde(rename = "sequential")]
    Sequential,
}

impl RollbackReason {
    pub const ALL: [RollbackReason; 6] = [
        RollbackReason::ErrorRate,
        RollbackReason::LatencyP99,
        RollbackReason::Health,
        RollbackReason::Manual,
        RollbackReason::FastFail,
        RollbackReason::Sequential,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RollbackReason::ErrorRate => "error-rate",
            RollbackReason::LatencyP99 => "latency-p99",
            RollbackReason::Health => "health",
            RollbackReason::Manual => "manual",
            RollbackReason::FastFail => "fast-fail",
            RollbackReason::Sequential => "sequential",
        }
    }
}

/// One analysis metric.
#[derive(Debug)]
pub struct Metric {
    /// As written in the config and in `switchyard_analysis_checks_total{metric}`.
    pub name: &'static str,
    /// Printed after values and thresholds: `%`, `ms`.
    pub unit: &'static str,
    /// The metric's value over a window; `None` without data.
    pub read: fn(&Window) -> Option<f64>,
    /// The rollback reason when this metric fails the rollout.
    pub reason: RollbackReason,
}

pub static ERROR_RATE: Metric = Metric {
    name: "error-rate",
    unit: "%",
    read: Window::error_rate,
    reason: RollbackReason::ErrorRate,
};

pub static LATENCY_P99: Metric = Metric {
    name: "latency-p99",
    unit: "ms",
    read: |w| w.latency.quantile_ms(0.99),
    reason: RollbackReason::LatencyP99,
};

impl Metric {
    /// The metric a config entry names.
    pub fn of(name: MetricName) -> &'static Metric {
        match name {
            MetricName::ErrorRate => &ERROR_RATE,
            MetricName::LatencyP99 => &LATENCY_P99,
        }
    }

    /// Looks a metric up by its name (for results read back from JSON).
    pub fn named(name: &str) -> Option<&'static Metric> {
        [&ERROR_RATE, &LATENCY_P99]
            .into_iter()
            .find(|m| m.name == name)
    }
}
