//! What the data path does for a service while one of its rollouts runs (SPEC §13): the
//! safety net's budget, the mirror step's share, and the rollout's measured impact.
//!
//! Why here and not in the control plane: the proxy sees every request, so it is the one
//! place that can keep users away from a canary's failures (replaying them on the stable) and
//! count who was affected — cheaply, per request, with no lock: the routing table carries a
//! [`LiveRollout`] per service with a running rollout, resolved when the table was compiled,
//! and everything in it is atomics. The control plane only names the rollout (its number,
//! stable, canary, mirror share) in [`crate::table::ServiceTraffic`] and reads the numbers.
//!
//! Affected users are counted with HyperLogLog ([`Hll`]): 4,096 one-byte registers per
//! count (p = 12, standard error 1.04/√4096 ≈ 1.6%), three counts per rollout (users of the
//! service, users sent to the canary, users who received a failure from it) — 12 KiB per
//! running rollout. Adding a user is one hash and, at most, one atomic max on one register;
//! almost every request finds its register already as high and writes nothing. The estimate
//! is Flajolet et al.'s with the linear-counting correction for small counts (exact enough at
//! the few hundred users a test or a demo has).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use switchyard_config::SafetyNet;

use crate::budget::RetryBudget;

/// A running (or the latest finished) rollout of one service, as the data path sees it.
#[derive(Debug)]
pub struct LiveRollout {
    /// Which rollout of the service this is (its counters belong to it).
    pub number: u64,
    /// Version indices into the service's `versions`.
    pub stable: usize,
    pub canary: usize,
    /// Progressing or paused: the safety net, mirror copies and impact counting apply.
    /// A finished rollout keeps its final impact here for the API.
    pub active: bool,
    /// `None`: off.
    pub safety_net: Option<SafetyNet>,
    /// Percent of the service's requests copied to the canary (a mirror step); 0 = none.
    pub mirror_pct: u32,
    /// Requests with larger bodies are not mirrored.
    pub mirror_max_body: u64,
    pub(crate) budget: Arc<RetryBudget>,
    /// `None` for a rollout that has not run in this process (finished before a restart):
    /// nothing to count, and 12 KiB not spent on each such service.
    pub impact: Option<Arc<Impact>>,
}

impl LiveRollout {
    /// The safety net, if it covers a request routed to version `v` now.
    pub(crate) fn safety_net_for(&self, v: usize) -> Option<&SafetyNet> {
        self.safety_net
            .as_ref()
            .filter(|_| self.active && v == self.canary)
    }
}

/// Why a failed canary request was or was not replayed (`switchyard_safety_net_retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetResult {
    /// Replayed; the stable answered.
    Ok = 0,
    /// Replayed; the stable failed too.
    Failed = 1,
    /// Replayable but over budget: the client got the canary's failure.
    Budget = 2,
    /// Not replayable (method or body).
    Unsafe = 3,
}

impl NetResult {
    pub const ALL: [NetResult; 4] = [
        NetResult::Ok,
        NetResult::Failed,
        NetResult::Budget,
        NetResult::Unsafe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NetResult::Ok => "ok",
            NetResult::Failed => "failed",
            NetResult::Budget => "budget",
            NetResult::Unsafe => "unsafe",
        }
    }
}

/// What happened to a mirror copy (`switchyard_mirror_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorResult {
    /// Sent to the canary (its answer discarded).
    Sent = 0,
    /// Not sent: too many copies in flight.
    Dropped = 1,
    /// Sent, and the canary failed it.
    Failed = 2,
}

impl MirrorResult {
    pub const ALL: [MirrorResult; 3] = [
        MirrorResult::Sent,
        MirrorResult::Dropped,
        MirrorResult::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MirrorResult::Sent => "sent",
            MirrorResult::Dropped => "dropped",
            MirrorResult::Failed => "failed",
        }
    }
}

/// Per-service counters of the safety net and of mirror copies; they outlive rollouts (they
/// are Prometheus counters) and table swaps.
#[derive(Debug, Default)]
pub struct CanaryCounters {
    safety_net: [AtomicU64; 4],
    mirror: [AtomicU64; 3],
    /// Mirror copies under way now.
    pub(crate) mirror_in_flight: AtomicUsize,
}

impl CanaryCounters {
    pub(crate) fn safety_net(&self, r: NetResult) {
        self.safety_net[r as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn mirror(&self, r: MirrorResult) {
        self.mirror[r as usize].fetch_add(1, Relaxed);
    }

    pub fn safety_net_retries(&self, r: NetResult) -> u64 {
        self.safety_net[r as usize].load(Relaxed)
    }

    pub fn mirror_requests(&self, r: MirrorResult) -> u64 {
        self.mirror[r as usize].load(Relaxed)
    }
}

/// One rollout's measured impact on users (SPEC §13).
#[derive(Debug, Default)]
pub struct Impact {
    /// Distinct users of the service during the rollout.
    total: Hll,
    /// Distinct users sent to the canary (replayed ones included: they were sent there).
    on_canary: Hll,
    /// Distinct users who received a failed answer to a request sent to the canary.
    failed: Hll,
    /// Requests sent to the canary whose answer to the user was a failure.
    requests_failed: AtomicU64,
}

/// The numbers of [`Impact`], as the API shows them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ImpactCounts {
    pub users_total: u64,
    pub users_on_canary: u64,
    pub users_failed: u64,
    pub requests_failed: u64,
}

impl ImpactCounts {
    /// users_failed / users_total × 100 (0 with no users).
    pub fn users_failed_pct(&self) -> f64 {
        if self.users_total == 0 {
            0.0
        } else {
            self.users_failed as f64 * 100.0 / self.users_total as f64
        }
    }
}

impl Impact {
    /// One finished request of user `user` (a [`user_hash`]).
    #[inline]
    pub(crate) fn record(&self, user: u64, on_canary: bool, failed: bool) {
        self.total.add(user);
        if on_canary {
            self.on_canary.add(user);
            if failed {
                self.failed.add(user);
                self.requests_failed.fetch_add(1, Relaxed);
            }
        }
    }

    pub fn counts(&self) -> ImpactCounts {
        let total = self.total.estimate();
        let on_canary = self.on_canary.estimate();
        // Estimates of nested sets may cross by the error; never show more failed users
        // than users on the canary, or more of those than users.
        let on_canary = on_canary.min(total.max(on_canary));
        ImpactCounts {
            users_total: total.max(on_canary),
            users_on_canary: on_canary,
            users_failed: self.failed.estimate().min(on_canary),
            requests_failed: self.requests_failed.load(Relaxed),
        }
    }

    /// Bytes held per rollout (for docs/PERFORMANCE.md).
    pub const BYTES: usize = 3 * Hll::REGISTERS;
}

/// HyperLogLog with 2^12 one-byte registers, updated with relaxed atomics.
#[derive(Debug)]
pub struct Hll {
    registers: Box<[AtomicU8]>,
}

impl Default for Hll {
    fn default() -> Self {
        Hll {
            registers: (0..Hll::REGISTERS).map(|_| AtomicU8::new(0)).collect(),
        }
    }
}

impl Hll {
    const P: u32 = 12;
    pub const REGISTERS: usize = 1 << Hll::P;

    /// Adds one (well-mixed) 64-bit hash.
    #[inline]
    pub fn add(&self, hash: u64) {
        let index = (hash >> (64 - Hll::P)) as usize;
        // The rank of the first 1 bit in the remaining 52 bits (1-based; 53 if none).
        let rest = hash << Hll::P;
        let rank = (rest.leading_zeros() + 1).min(64 - Hll::P + 1) as u8;
        let register = &self.registers[index];
        if register.load(Relaxed) < rank {
            register.fetch_max(rank, Relaxed);
        }
    }

    /// The estimated count of distinct hashes added.
    pub fn estimate(&self) -> u64 {
        let m = Hll::REGISTERS as f64;
        let mut sum = 0.0;
        let mut zeros = 0u32;
        for r in self.registers.iter() {
            let r = r.load(Relaxed);
            sum += 2f64.powi(-i32::from(r));
            zeros += u32::from(r == 0);
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            // Linear counting: exact enough for small counts, where raw HLL is biased.
            m * (m / f64::from(zeros)).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

/// The user a request counts for: its sticky key if it has one, else its client's IP.
/// FNV-1a over the bytes, then a 64-bit finalizer (MurmurHash3's fmix64) so that every bit
/// of the hash is well mixed, as HyperLogLog needs.
#[inline]
pub(crate) fn user_hash(sticky_key: Option<&[u8]>, client: SocketAddr) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    match (sticky_key, client.ip()) {
        (Some(key), _) => feed(key),
        (None, IpAddr::V4(ip)) => feed(&ip.octets()),
        (None, IpAddr::V6(ip)) => feed(&ip.octets()),
    }
    fmix64(h)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn hyperloglog_counts_distinct_users_within_two_percent() {
        for n in [0u64, 1, 10, 200, 1_000, 10_000, 100_000] {
            let hll = Hll::default();
            for i in 0..n {
                let key = format!("user-{i}");
                hll.add(user_hash(Some(key.as_bytes()), ip()));
                // The same user again changes nothing.
                hll.add(user_hash(Some(key.as_bytes()), ip()));
            }
            let got = hll.estimate() as f64;
            let err = if n == 0 {
                got
            } else {
                (got - n as f64).abs() / n as f64
            };
            // 2% is about 1.3 standard errors at p = 12; small counts are near exact.
            let bound = if n <= 1_000 { 0.01 } else { 0.04 };
            assert!(err <= bound, "{n} users estimated as {got}");
        }
    }

    #[test]
    fn impact_counts_users_on_the_canary_and_those_who_saw_a_failure() {
        let impact = Impact::default();
        for i in 0..100u32 {
            let user = user_hash(Some(&i.to_be_bytes()), ip());
            impact.record(user, i < 50, i < 10);
        }
        let c = impact.counts();
        // HyperLogLog: within a user or two at these counts.
        assert!(c.users_total.abs_diff(100) <= 2, "{c:?}");
        assert!(c.users_on_canary.abs_diff(50) <= 1, "{c:?}");
        assert!(c.users_failed.abs_diff(10) <= 1, "{c:?}");
        assert_eq!(c.requests_failed, 10);
        assert!((c.users_failed_pct() - 10.0).abs() < 1.5, "{c:?}");
    }

    #[test]
    fn without_a_sticky_key_the_client_ip_is_the_user() {
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:2000".parse().unwrap();
        assert_eq!(user_hash(None, a), user_hash(None, b));
        assert_ne!(user_hash(None, a), user_hash(Some(b"u1"), a));
    }
}
