//! The sequential judge (SPEC §14): is the canary failing — or slow — more often than the
//! stable *in the same seconds*, with a bounded chance of crying wolf however often we look?
//!
//! **Why ρ.** In one second the canary served `n_c` requests and the stable `n_s`, and `x` of
//! them failed. If the canary is no worse, a request fails with the same probability on either
//! version — whatever that probability is: 0.5% on a calm day, 30% while a shared database is
//! down — so each of the `x` failures is the canary's with probability `ρ = n_c / (n_c + n_s)`.
//! Conditioning on `x` removes the unknown base rate: a shared outage raises `x`, not the
//! canary's share of it. (Given the counts, the canary's failures are strictly hypergeometric,
//! not binomial; sampling without replacement is dominated in convex order by sampling with
//! replacement (Hoeffding 1963), and the likelihood ratio below is convex in the canary's
//! count, so its expectation stays ≤ 1. A canary that is *better* than the stable makes the
//! canary's share smaller still, and the ratio, which grows with it, smaller too.)
//!
//! **The likelihood ratio.** If instead the canary fails θ times as often, a failure is the
//! canary's with probability `π = θρ / (θρ + 1 − ρ)`, and one second multiplies the evidence
//! for θ by `(π/ρ)^x_c · ((1−π)/(1−ρ))^x_s`, which simplifies to `θ^x_c / (1 + (θ−1)ρ)^x`.
//! Under "no worse" each factor has expectation ≤ 1 given everything before it and this
//! second's counts, so `E(θ)`, the product over seconds, is a nonnegative supermartingale that
//! starts at 1: an *e-process*.
//!
//! **Why a mixture over θ.** One θ is the most powerful test against a canary exactly θ times
//! as bad, and slow or blind against others. The mean of `E(θ)` over θ ∈ {1.5, 2, 3, 5, 10} is
//! still an e-process (an average of supermartingales is one), and it grows at nearly the rate
//! of whichever θ fits the canary best: the mean is at least a fifth of the best θ's `E(θ)`,
//! so not knowing θ costs ln 5 ≈ 1.6 nats on top of the ln 200 ≈ 5.3 that a test of the
//! right θ alone would need at alpha = 0.01.
//!
//! **Ville's inequality** says a nonnegative supermartingale that starts at 1 *ever* reaches
//! `c` with probability at most `1/c`. So the evidence may be checked every second for the
//! whole rollout at no extra cost: peeking is built in. **Why 2/alpha**: two e-processes are
//! watched, failures and slow requests; each rolls back at `2/alpha`, so each cries wolf with
//! probability ≤ alpha/2, and either with ≤ alpha.
//!
//! **Slow** is a request slower than the stable's p99 *bucket edge* over the previous
//! minutes ([`slow_edge`]). The edge must be fixed before the second it judges: then, if
//! the canary is no slower, a request is slow with the same probability on either version and
//! the test above applies unchanged. An edge computed from the current second would move with
//! the very data it is measured against.
//!
//! Edge cases, each deliberate:
//! - a second with no failures multiplies every `E(θ)` by exactly 1 (`x = 0`); it is skipped;
//! - a second without stable traffic (ρ = 1: the promotion step) or without canary traffic
//!   (ρ = 0) carries no information about the *difference*; it is skipped (the factor's limit
//!   is 1 in both cases anyway);
//! - more failures than requests (two counters read a few nanoseconds apart) are clamped;
//! - `log E(θ)` is kept instead of `E(θ)`: a long healthy rollout drives `E(θ)` toward 0 and a
//!   bad one past `f64::MAX`, neither of which survives as a product; the mean is taken with
//!   log-sum-exp, and the limit is compared in logs. The log form has no division, so it stays
//!   finite for every ρ in [0, 1] and every count;
//! - before the stable has served [`EDGE_MIN_SAMPLES`] requests in the window there is no
//!   edge, and the slow evidence does not move.
//!
//! The engine's judge (`engine/sequential.rs`) feeds [`Evidence::second`] once a second from
//! the telemetry windows and keeps the [`Evidence`] in the rollout record.
//!
//! Reference: M. Lindon, C. Sanden, V. Shirikian, "Rapid Regression Detection in Software
//! Deployments through Sequential Testing", KDD 2022 (Netflix's canary analysis).

use serde::{Deserialize, Serialize};
use switchyard_proxy::stats::latency_bucket_range;

use crate::telemetry::window::{Histogram, Window};

/// The relative risks the evidence is averaged over (SPEC §14).
pub const THETAS: [f64; 5] = [1.5, 2.0, 3.0, 5.0, 10.0];

/// The evidence at which the judge rolls back.
pub fn limit(alpha: f64) -> f64 {
    2.0 / alpha
}

/// One version's traffic in one second: requests, and how many of them were events (failed,
/// or slow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub requests: u64,
    pub events: u64,
}

impl Count {
    pub fn new(requests: u64, events: u64) -> Count {
        Count { requests, events }
    }

    /// Requests and failures (SPEC §5) of one second's window.
    pub fn failures(second: &Window) -> Count {
        Count::new(second.requests, second.failed())
    }
}

/// The evidence that the canary's events are more frequent than the stable's: `log E(θ)` per
/// θ of [`THETAS`]. Starts at evidence 1. Serialized as `{"theta": [...], "log_e": [...]}`,
/// and refused on the way back in if the grid differs or a value is not finite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "EProcessRecord", try_from = "EProcessRecord")]
pub struct EProcess {
    log_e: [f64; THETAS.len()],
}

impl Default for EProcess {
    fn default() -> Self {
        EProcess {
            log_e: [0.0; THETAS.len()],
        }
    }
}

impl EProcess {
    /// Folds in one second. Returns false when the second carried no information (no events,
    /// or one version had no traffic) and nothing moved.
    pub fn observe(&mut self, canary: Count, stable: Count) -> bool {
        if canary.requests == 0 || stable.requests == 0 {
            return false;
        }
        let canary_events = canary.events.min(canary.requests) as f64;
        let events = canary_events + stable.events.min(stable.requests) as f64;
        if events == 0.0 {
            return false;
        }
        let (n_c, n_s) = (canary.requests as f64, stable.requests as f64);
        let rho = n_c / (n_c + n_s);
        for (log_e, theta) in self.log_e.iter_mut().zip(THETAS) {
            // ln of θ^x_c / (1 + (θ−1)ρ)^x.
            *log_e += canary_events * theta.ln() - events * ((theta - 1.0) * rho).ln_1p();
        }
        true
    }

    /// ln of the mean of `E(θ)` over θ.
    pub fn log_evidence(&self) -> f64 {
        let max = self.log_e.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = self.log_e.iter().map(|l| (l - max).exp()).sum();
        max + sum.ln() - (THETAS.len() as f64).ln()
    }

    /// The evidence itself, saturated at `f64::MAX` (JSON has no infinity).
    pub fn evidence(&self) -> f64 {
        self.log_evidence().exp().min(f64::MAX)
    }

    /// Whether the evidence has reached the rollback limit `2/alpha`.
    pub fn reached(&self, alpha: f64) -> bool {
        self.log_evidence() >= limit(alpha).ln()
    }

    /// `log E(θ)` for each θ of [`THETAS`], in order.
    pub fn log_e(&self) -> [f64; THETAS.len()] {
        self.log_e
    }
}

#[derive(Serialize, Deserialize)]
struct EProcessRecord {
    theta: Vec<f64>,
    log_e: Vec<f64>,
}

impl From<EProcess> for EProcessRecord {
    fn from(e: EProcess) -> Self {
        EProcessRecord {
            theta: THETAS.to_vec(),
            log_e: e.log_e.to_vec(),
        }
    }
}

impl TryFrom<EProcessRecord> for EProcess {
    type Error = String;

    fn try_from(r: EProcessRecord) -> Result<Self, String> {
        if r.theta != THETAS {
            return Err(format!(
                "evidence was kept for relative risks {:?}, this build judges {THETAS:?}",
                r.theta
            ));
        }
        let log_e: [f64; THETAS.len()] = r.log_e.try_into().map_err(|v: Vec<f64>| {
            format!("evidence has {} values, expected {}", v.len(), THETAS.len())
        })?;
        if let Some(bad) = log_e.iter().find(|l| !l.is_finite()) {
            return Err(format!("evidence value {bad} is not a finite number"));
        }
        Ok(EProcess { log_e })
    }
}

/// What the evidence is about (the `kind` label of `switchyard_analysis_evidence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceKind {
    Failures,
    Slow,
}

impl EvidenceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::Failures => "failures",
            EvidenceKind::Slow => "slow",
        }
    }
}

/// Both e-processes of one rollout: what is persisted with the rollout record and shared in a
/// fleet (a few hundred bytes of JSON). The stable's latency is not part of it: the edge is
/// read from the telemetry's recent window, which a restarted process refills within minutes,
/// and until then only the slow evidence waits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub failures: EProcess,
    pub slow: EProcess,
}

impl Evidence {
    /// The kind whose evidence reached `2/alpha`, failures first.
    pub fn reached(&self, alpha: f64) -> Option<EvidenceKind> {
        if self.failures.reached(alpha) {
            Some(EvidenceKind::Failures)
        } else if self.slow.reached(alpha) {
            Some(EvidenceKind::Slow)
        } else {
            None
        }
    }

    /// Whether either evidence is above 1: the seconds so far favour "the canary is worse".
    pub fn leans_against_the_canary(&self) -> bool {
        self.failures.log_evidence() > 0.0 || self.slow.log_evidence() > 0.0
    }

    /// SPEC §15's `rollout.evidence`.
    pub fn report(&self, alpha: f64) -> EvidenceReport {
        EvidenceReport {
            failures: self.failures.evidence(),
            slow: self.slow.evidence(),
            limit: limit(alpha),
        }
    }
}

/// `{"failures": 1.0, "slow": 1.0, "limit": 200.0}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EvidenceReport {
    pub failures: f64,
    pub slow: f64,
    pub limit: f64,
}

/// Stable requests the previous minutes need before their p99 is worth an edge (at 100
/// samples the nearest-rank p99 is the second slowest).
pub const EDGE_MIN_SAMPLES: u64 = 100;

/// The slow edge from the stable's latency over the minutes *before* the second it judges
/// (the telemetry's recent window less that second): the stable's p99 bucket, once the
/// window holds [`EDGE_MIN_SAMPLES`] requests.
pub fn slow_edge(stable_before: &Histogram) -> Option<SlowEdge> {
    if stable_before.count() < EDGE_MIN_SAMPLES {
        return None;
    }
    stable_before
        .quantile_bucket(0.99)
        .map(|bucket| SlowEdge { bucket })
}

/// A request is slow when it lands in a latency bucket above the stable's p99 bucket: it took
/// at least [`SlowEdge::micros`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowEdge {
    bucket: usize,
}

impl SlowEdge {
    /// The edge in microseconds: the exclusive upper bound of the stable's p99 bucket.
    pub fn micros(self) -> u64 {
        latency_bucket_range(self.bucket).1
    }

    /// Requests and slow requests among one second's latency counts.
    pub fn count(self, latency: &Histogram) -> Count {
        Count::new(latency.count(), latency.above(self.bucket))
    }
}

impl Evidence {
    /// Folds in one second: the canary's and the stable's windows over the same second, and
    /// the stable's latency over the minutes before it (never including this second, so the
    /// edge cannot move with the data it judges). Returns the edge the slow requests were
    /// counted against, if there was one yet.
    pub fn second(
        &mut self,
        canary: &Window,
        stable: &Window,
        stable_before: &Histogram,
    ) -> Option<SlowEdge> {
        self.failures
            .observe(Count::failures(canary), Count::failures(stable));
        let edge = slow_edge(stable_before)?;
        self.slow
            .observe(edge.count(&canary.latency), edge.count(&stable.latency));
        Some(edge)
    }
}

#[cfg(test)]
mod tests;
