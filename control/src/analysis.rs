//! Canary analysis: judging one window of the canary's traffic against the thresholds.
//!
//! Pure functions over plain numbers (windows are differences of the data path's counters),
//! so every rule of SPEC §6 is unit-tested here without sockets or clocks:
//! fewer than `min_requests` → inconclusive; a metric strictly above its threshold fails
//! (equal passes); with `max_increase`, the canary must also be worse than the stable in the
//! same window by more than that, so a shared downstream outage does not blame the canary.

use serde::Serialize;
use switchyard_config::{Analysis, FastFail, MetricCheck, MetricName};
use switchyard_proxy::stats::VersionSnapshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// One metric's result in one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricResult {
    pub name: &'static str,
    /// The canary's value (percent or milliseconds); `None` without data.
    pub value: Option<f64>,
    pub threshold: f64,
    /// The stable's value in the same window, when `max_increase` asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
    pub result: Verdict,
}

/// The outcome of one analysis check over one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub window_s: f64,
    pub requests: u64,
    pub verdict: Verdict,
    pub metrics: Vec<MetricResult>,
}

impl CheckResult {
    /// The first failing metric's name, used as the rollback reason.
    pub fn failing_metric(&self) -> Option<&'static str> {
        self.metrics
            .iter()
            .find(|m| m.result == Verdict::Fail)
            .map(|m| m.name)
    }

    /// `error-rate 2.3% > 1%; latency-p99 812ms > 500ms` — for logs, events and history.
    pub fn explain(&self) -> String {
        let parts: Vec<String> = self
            .metrics
            .iter()
            .filter(|m| m.result == Verdict::Fail)
            .map(|m| {
                let unit = unit(m.name);
                let mut s = format!(
                    "{} {:.1}{unit} > {}{unit}",
                    m.name,
                    m.value.unwrap_or(0.0),
                    m.threshold
                );
                if let (Some(stable), Some(max)) = (m.stable_value, m.max_increase) {
                    s.push_str(&format!(
                        " (stable {stable:.1}{unit}, allowed increase {max}{unit})"
                    ));
                }
                s
            })
            .collect();
        parts.join("; ")
    }
}

fn unit(metric: &str) -> &'static str {
    if metric == MetricName::ErrorRate.as_str() {
        "%"
    } else {
        "ms"
    }
}

fn value_of(metric: MetricName, window: &VersionSnapshot) -> Option<f64> {
    match metric {
        MetricName::ErrorRate => window.error_rate(),
        MetricName::LatencyP99 => window.quantile(0.99).map(|d| d.as_secs_f64() * 1000.0),
    }
}

/// Judges one window of canary traffic (and the stable's, for `max_increase`).
pub fn check(
    analysis: &Analysis,
    canary: &VersionSnapshot,
    stable: &VersionSnapshot,
    window_s: f64,
) -> CheckResult {
    if canary.total < analysis.min_requests {
        return CheckResult {
            window_s,
            requests: canary.total,
            verdict: Verdict::Inconclusive,
            metrics: analysis
                .metrics
                .iter()
                .map(|m| MetricResult {
                    name: m.metric.as_str(),
                    value: value_of(m.metric, canary),
                    threshold: m.threshold,
                    stable_value: None,
                    max_increase: m.max_increase,
                    result: Verdict::Inconclusive,
                })
                .collect(),
        };
    }
    let metrics: Vec<MetricResult> = analysis
        .metrics
        .iter()
        .map(|m| judge_metric(m, canary, stable))
        .collect();
    let verdict = if metrics.iter().any(|m| m.result == Verdict::Fail) {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    CheckResult {
        window_s,
        requests: canary.total,
        verdict,
        metrics,
    }
}

fn judge_metric(
    m: &MetricCheck,
    canary: &VersionSnapshot,
    stable: &VersionSnapshot,
) -> MetricResult {
    let value = value_of(m.metric, canary);
    let stable_value = m.max_increase.and_then(|_| value_of(m.metric, stable));
    let above = value.is_some_and(|v| v > m.threshold);
    let worse_than_stable = match (m.max_increase, value, stable_value) {
        (Some(max), Some(v), Some(s)) => v - s > max,
        // Without a stable baseline in this window, the absolute threshold decides alone.
        _ => true,
    };
    MetricResult {
        name: m.metric.as_str(),
        value,
        threshold: m.threshold,
        stable_value,
        max_increase: m.max_increase,
        result: if above && worse_than_stable {
            Verdict::Fail
        } else {
            Verdict::Pass
        },
    }
}

/// Fast-fail: in the last second, at least `min_requests` canary requests with an error rate
/// at or above the line. Returns the error rate that tripped it.
pub fn fast_fail(rule: &FastFail, last_second: &VersionSnapshot) -> Option<f64> {
    let rate = last_second.error_rate()?;
    (last_second.total >= rule.min_requests && rate >= rule.error_rate).then_some(rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use switchyard_proxy::stats::{FailureReason, VersionStats};

    /// A window with `total` requests of which `failed` failed, all taking `latency`.
    fn window(total: u64, failed: u64, latency: Duration) -> VersionSnapshot {
        let version = VersionStats::default();
        let backend = switchyard_proxy::stats::BackendStats::default();
        for i in 0..total {
            version.record_latency(latency);
            if i < failed {
                backend.record(500, Some(FailureReason::Status));
            } else {
                backend.record(200, None);
            }
        }
        version.snapshot([&backend])
    }

    fn analysis(metrics: Vec<MetricCheck>) -> Analysis {
        Analysis {
            min_requests: 10,
            metrics,
            ..Analysis::default()
        }
    }

    fn error_rate(threshold: f64, max_increase: Option<f64>) -> MetricCheck {
        MetricCheck {
            metric: MetricName::ErrorRate,
            threshold,
            max_increase,
        }
    }

    #[test]
    fn too_few_requests_is_inconclusive() {
        let a = analysis(vec![error_rate(1.0, None)]);
        let r = check(
            &a,
            &window(9, 9, Duration::ZERO),
            &window(0, 0, Duration::ZERO),
            1.0,
        );
        assert_eq!(r.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn strictly_above_fails_and_equal_passes() {
        let a = analysis(vec![error_rate(10.0, None)]);
        let ms = Duration::from_millis(1);
        assert_eq!(
            check(&a, &window(100, 10, ms), &window(0, 0, ms), 1.0).verdict,
            Verdict::Pass
        );
        let r = check(&a, &window(100, 11, ms), &window(0, 0, ms), 1.0);
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.failing_metric(), Some("error-rate"));
        assert_eq!(r.explain(), "error-rate 11.0% > 10%");
    }

    #[test]
    fn latency_p99_uses_milliseconds() {
        let a = analysis(vec![MetricCheck {
            metric: MetricName::LatencyP99,
            threshold: 300.0,
            max_increase: None,
        }]);
        let slow = window(50, 0, Duration::from_millis(800));
        let r = check(&a, &slow, &window(0, 0, Duration::ZERO), 1.0);
        assert_eq!(r.failing_metric(), Some("latency-p99"));
        let v = r.metrics[0].value.unwrap();
        assert!((v - 800.0).abs() / 800.0 < 0.05, "{v}");
    }

    #[test]
    fn max_increase_spares_a_canary_no_worse_than_stable() {
        let ms = Duration::from_millis(1);
        let a = analysis(vec![error_rate(1.0, Some(1.0))]);
        // Both versions fail 5%: a shared outage, not the canary's fault.
        let r = check(&a, &window(200, 10, ms), &window(200, 10, ms), 1.0);
        assert_eq!(r.verdict, Verdict::Pass);
        // The canary fails 5% while the stable fails 1%: the canary's fault.
        let r = check(&a, &window(200, 10, ms), &window(200, 2, ms), 1.0);
        assert_eq!(r.verdict, Verdict::Fail);
    }

    #[test]
    fn fast_fail_needs_volume_and_rate() {
        let rule = FastFail::default(); // 50% over at least 20 requests
        let ms = Duration::from_millis(1);
        assert_eq!(fast_fail(&rule, &window(19, 19, ms)), None);
        assert_eq!(fast_fail(&rule, &window(40, 19, ms)), None);
        assert_eq!(fast_fail(&rule, &window(40, 20, ms)), Some(50.0));
    }
}
