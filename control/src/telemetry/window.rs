//! A telemetry window: what one version's traffic did over some span of time, as plain,
//! serializable numbers that can be **added**.
//!
//! The rollout engine judges windows, never live counters. Windows are differences of the
//! data path's cumulative counters (DESIGN §3), and because they add up, a fleet's leader can
//! judge the sum of every replica's window for the same second (SPEC §11 "pooled analysis"):
//! each replica publishes its [`Window`] as JSON, the leader adds them, and the same engine
//! code runs on the total.

use std::collections::BTreeMap;
use std::ops::{Add, AddAssign};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchyard_proxy::stats::{latency_bucket_range, FailureReason, VersionSnapshot};
use switchyard_proxy::table::VersionRoute;

/// Requests, failures by reason, and the latency histogram of one version over one span.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub requests: u64,
    /// Failed requests by SPEC §5 reason (`status`, `connect`, `timeout`, `reset`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, u64>,
    #[serde(default)]
    pub latency: Histogram,
}

impl Window {
    /// The cumulative counters of `version` now. `previous` (the last reading) lets an idle
    /// version share its histogram instead of copying it.
    pub fn read(version: &VersionRoute, previous: Option<&Window>) -> Window {
        let backends = version.backend_stats.iter().map(|s| &**s);
        let previous_snapshot = previous.map(|p| VersionSnapshot {
            total: p.requests,
            failed: 0,
            latency: Arc::clone(&p.latency.0),
        });
        let snap = version
            .stats
            .snapshot_after(backends, previous_snapshot.as_ref());
        let mut failures = BTreeMap::new();
        let every = version
            .backend_stats
            .iter()
            .map(|s| &**s)
            .chain(std::iter::once(&version.stats.unassigned));
        for stats in every {
            for (reason, n) in FailureReason::ALL.iter().zip(stats.failures_by_reason()) {
                if n > 0 {
                    *failures.entry(reason.as_str().to_string()).or_default() += n;
                }
            }
        }
        Window {
            requests: snap.total,
            failures,
            latency: Histogram(snap.latency),
        }
    }

    /// Failed requests, whatever the reason.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Failed requests in percent; `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.failed() as f64 * 100.0 / self.requests as f64)
    }

    /// What happened between `earlier` (a cumulative reading) and `self` (a later one).
    pub fn since(&self, earlier: &Window) -> Window {
        let mut failures = self.failures.clone();
        for (reason, n) in failures.iter_mut() {
            *n = n.saturating_sub(earlier.failures.get(reason).copied().unwrap_or(0));
        }
        failures.retain(|_, n| *n > 0);
        Window {
            requests: self.requests.saturating_sub(earlier.requests),
            failures,
            latency: self.latency.since(&earlier.latency),
        }
    }
}

impl AddAssign<&Window> for Window {
    fn add_assign(&mut self, other: &Window) {
        self.requests += other.requests;
        for (reason, n) in &other.failures {
            *self.failures.entry(reason.clone()).or_default() += n;
        }
        self.latency = &self.latency + &other.latency;
    }
}

impl Add for &Window {
    type Output = Window;
    fn add(self, other: &Window) -> Window {
        let mut sum = self.clone();
        sum += other;
        sum
    }
}

impl<'a> std::iter::Sum<&'a Window> for Window {
    fn sum<I: Iterator<Item = &'a Window>>(iter: I) -> Window {
        iter.fold(Window::default(), |mut acc, w| {
            acc += w;
            acc
        })
    }
}

/// Latency counts per bucket of the data path's log-linear histogram (`proxy::stats`): a
/// bucket is at most 6.25% wide, fine enough for a true p99. Empty means all zero. Shared,
/// not copied, between readings that saw the same counts; serialized sparsely as
/// `[[bucket, count], …]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Sparse", into = "Sparse")]
pub struct Histogram(pub Arc<[u64]>);

#[derive(Serialize, Deserialize)]
struct Sparse(Vec<(usize, u64)>);

impl From<Histogram> for Sparse {
    fn from(h: Histogram) -> Sparse {
        Sparse(
            h.0.iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(i, &n)| (i, n))
                .collect(),
        )
    }
}

impl From<Sparse> for Histogram {
    fn from(s: Sparse) -> Histogram {
        let len =
            s.0.iter()
                .map(|&(i, _)| i + 1)
                .max()
                .unwrap_or(0)
                .min(switchyard_proxy::stats::LATENCY_BUCKETS);
        let mut counts = vec![0u64; len];
        for (i, n) in s.0 {
            if let Some(c) = counts.get_mut(i) {
                *c += n;
            }
        }
        Histogram(counts.into())
    }
}

impl Histogram {
    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The q-quantile (0..=1) in milliseconds, as the midpoint of its bucket.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let bucket = self.quantile_bucket(q)?;
        let (lo, hi) = latency_bucket_range(bucket);
        Some(((lo + hi - 1) / 2) as f64 / 1000.0)
    }

    /// The bucket holding the q-quantile (nearest rank); `None` when empty.
    pub fn quantile_bucket(&self, q: f64) -> Option<usize> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        self.0.iter().position(|&c| {
            seen += c;
            seen >= rank
        })
    }

    /// Requests in buckets above `bucket` (slower than that bucket's upper edge).
    pub fn above(&self, bucket: usize) -> u64 {
        self.0.iter().skip(bucket + 1).sum()
    }

    fn since(&self, earlier: &Histogram) -> Histogram {
        if Arc::ptr_eq(&self.0, &earlier.0) {
            return Histogram::default();
        }
        if earlier.0.is_empty() {
            return self.clone();
        }
        Histogram(
            self.0
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.0.get(i).copied().unwrap_or(0)))
                .collect(),
        )
    }
}

impl Add for &Histogram {
    type Output = Histogram;
    fn add(self, other: &Histogram) -> Histogram {
        if other.0.is_empty() {
            return self.clone();
        }
        if self.0.is_empty() {
            return other.clone();
        }
        let len = self.0.len().max(other.0.len());
        Histogram(
            (0..len)
                .map(|i| self.0.get(i).copied().unwrap_or(0) + other.0.get(i).copied().unwrap_or(0))
                .collect(),
        )
    }
}

/// Test helper: `requests` requests, `failed` of them failed (reason `status`), with
/// `latencies_us` as (microseconds, count) pairs.
#[cfg(test)]
pub fn test_window_of(requests: u64, failed: u64, latencies_us: &[(u64, u64)]) -> Window {
    let mut counts = vec![0u64; switchyard_proxy::stats::LATENCY_BUCKETS];
    for &(us, n) in latencies_us {
        counts[switchyard_proxy::stats::latency_bucket(us)] += n;
    }
    Window {
        requests,
        failures: if failed > 0 {
            BTreeMap::from([("status".to_string(), failed)])
        } else {
            BTreeMap::new()
        },
        latency: Histogram(counts.into()),
    }
}

/// Test helper: `requests` requests, `failed` of them failed, all taking `ms`.
#[cfg(test)]
pub fn test_window(requests: u64, failed: u64, ms: u64) -> Window {
    test_window_of(requests, failed, &[(ms * 1000, requests)])
}

#[cfg(test)]
mod tests {
    use super::test_window_of as window;
    use super::*;

    #[test]
    fn windows_of_replicas_add_up_to_the_fleet_window() {
        let a = window(100, 5, &[(1_000, 99), (400_000, 1)]);
        let b = window(300, 1, &[(1_000, 290), (400_000, 10)]);
        let sum = &a + &b;
        assert_eq!(sum.requests, 400);
        assert_eq!(sum.failed(), 6);
        assert!((sum.error_rate().unwrap() - 1.5).abs() < 1e-9);
        assert_eq!(sum.latency.count(), 400);
        // 11 of 400 are slow: the fleet's p99 is slow, while replica a's alone was not.
        assert!(a.latency.quantile_ms(0.99).unwrap() < 2.0);
        assert!(sum.latency.quantile_ms(0.99).unwrap() > 300.0);
    }

    #[test]
    fn windows_round_trip_as_sparse_json() {
        let w = window(10, 2, &[(5_000, 10)]);
        let json = serde_json::to_string(&w).unwrap();
        assert!(json.len() < 120, "{json}");
        let back: Window = serde_json::from_str(&json).unwrap();
        assert_eq!(back.requests, 10);
        assert_eq!(back.failed(), 2);
        assert_eq!(
            back.latency.quantile_bucket(0.5),
            w.latency.quantile_bucket(0.5)
        );
    }

    #[test]
    fn a_window_is_a_difference_of_readings() {
        let before = window(10, 1, &[(1_000, 10)]);
        let after = window(25, 4, &[(1_000, 20), (900_000, 5)]);
        let w = after.since(&before);
        assert_eq!((w.requests, w.failed()), (15, 3));
        assert_eq!(w.latency.count(), 15);
        let edge = w.latency.quantile_bucket(0.5).unwrap();
        assert_eq!(w.latency.above(edge), 5);
    }
}
