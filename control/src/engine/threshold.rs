//! The threshold judge: SPEC §6's Flagger-style interval checks, and the check itself.
//!
//! Every `interval`, over the canary's requests in that interval: fewer than `min_requests`
//! → inconclusive; a metric strictly above its threshold fails (equal passes); with
//! `max_increase`, the canary must also be worse than the stable in the same window by more
//! than that, so a shared downstream outage does not blame the canary. When failed checks in
//! the rollout reach `threshold`, roll back with the first failing metric's reason.

use serde::Serialize;
use switchyard_config::{Analysis, MetricCheck};

use super::judge::{Judge, JudgeInput, Rollback, Verdict as JudgeVerdict};
use super::metric::Metric;
use crate::store::Source;
use crate::telemetry::window::Window;

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
    /// The first failing metric.
    pub fn failing_metric(&self) -> Option<&'static Metric> {
        self.metrics
            .iter()
            .find(|m| m.result == Verdict::Fail)
            .and_then(|m| Metric::named(m.name))
    }

    /// `error-rate 2.3% > 1%; latency-p99 812.0ms > 500ms` — for logs, events and history.
    pub fn explain(&self) -> String {
        let parts: Vec<String> = self
            .metrics
            .iter()
            .filter(|m| m.result == Verdict::Fail)
            .map(|m| {
                let unit = Metric::named(m.name).map_or("", |metric| metric.unit);
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

/// Judges one window of canary traffic (and the stable's, for `max_increase`).
pub fn check(analysis: &Analysis, canary: &Window, stable: &Window, window_s: f64) -> CheckResult {
    let enough = canary.requests >= analysis.min_requests;
    let metrics: Vec<MetricResult> = analysis
        .metrics
        .iter()
        .map(|m| {
            let mut r = judge_metric(m, canary, stable);
            if !enough {
                r.stable_value = None;
                r.result = Verdict::Inconclusive;
            }
            r
        })
        .collect();
    let verdict = if !enough {
        Verdict::Inconclusive
    } else if metrics.iter().any(|m| m.result == Verdict::Fail) {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    CheckResult {
        window_s,
        requests: canary.requests,
        verdict,
        metrics,
    }
}

fn judge_metric(m: &MetricCheck, canary: &Window, stable: &Window) -> MetricResult {
    let metric = Metric::of(m.metric);
    let value = (metric.read)(canary);
    let stable_value = m.max_increase.and_then(|_| (metric.read)(stable));
    let above = value.is_some_and(|v| v > m.threshold);
    let worse_than_stable = match (m.max_increase, value, stable_value) {
        (Some(max), Some(v), Some(s)) => v - s > max,
        // Without a stable baseline in this window, the absolute threshold decides alone.
        _ => true,
    };
    MetricResult {
        name: metric.name,
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

/// SPEC §6's interval checks (the default judge).
pub struct ThresholdJudge;

impl Judge for ThresholdJudge {
    fn name(&self) -> &'static str {
        "threshold"
    }

    fn judge(&self, input: &JudgeInput<'_>) -> JudgeVerdict {
        if !input.check_due {
            return JudgeVerdict::default();
        }
        let analysis = &input.spec.rollout.analysis;
        let obs = input.obs;
        let result = check(
            analysis,
            &obs.canary.interval,
            &obs.stable.interval,
            obs.interval_s,
        );
        let failed = result.verdict == Verdict::Fail;
        let failed_checks = input.record.failed_checks + u32::from(failed);
        let rollback = (failed && failed_checks >= analysis.threshold).then(|| Rollback {
            reason: result
                .failing_metric()
                .map_or(super::RollbackReason::ErrorRate, |m| m.reason),
            source: Source::Analysis,
            message: result.explain(),
            evidence: serde_json::to_value(&result).unwrap_or_default(),
        });
        JudgeVerdict {
            failed_checks: failed.then_some(failed_checks),
            checked: Some(result),
            rollback,
            memory: None,
            suspects: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::MetricName;

    use crate::telemetry::window::test_window as window;

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
        let r = check(&a, &window(9, 9, 1), &window(0, 0, 1), 1.0);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert_eq!(r.metrics[0].result, Verdict::Inconclusive);
    }

    #[test]
    fn strictly_above_fails_and_equal_passes() {
        let a = analysis(vec![error_rate(10.0, None)]);
        assert_eq!(
            check(&a, &window(100, 10, 1), &window(0, 0, 1), 1.0).verdict,
            Verdict::Pass
        );
        let r = check(&a, &window(100, 11, 1), &window(0, 0, 1), 1.0);
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.failing_metric().map(|m| m.name), Some("error-rate"));
        assert_eq!(r.explain(), "error-rate 11.0% > 10%");
    }

    #[test]
    fn latency_p99_uses_milliseconds_and_its_own_reason() {
        let a = analysis(vec![MetricCheck {
            metric: MetricName::LatencyP99,
            threshold: 300.0,
            max_increase: None,
        }]);
        let r = check(&a, &window(50, 0, 800), &window(0, 0, 1), 1.0);
        let metric = r.failing_metric().unwrap();
        assert_eq!(metric.reason, super::super::RollbackReason::LatencyP99);
        let v = r.metrics[0].value.unwrap();
        assert!((v - 800.0).abs() / 800.0 < 0.05, "{v}");
    }

    #[test]
    fn max_increase_spares_a_canary_no_worse_than_stable() {
        let a = analysis(vec![error_rate(1.0, Some(1.0))]);
        // Both versions fail 5%: a shared outage, not the canary's fault.
        let r = check(&a, &window(200, 10, 1), &window(200, 10, 1), 1.0);
        assert_eq!(r.verdict, Verdict::Pass);
        // The canary fails 5% while the stable fails 1%: the canary's fault.
        let r = check(&a, &window(200, 10, 1), &window(200, 2, 1), 1.0);
        assert_eq!(r.verdict, Verdict::Fail);
    }
}
