//! Choosing a version for a request — weighted random, or sticky by a user key — and the
//! order a version's backends take turns in ([`BackendTurns`]).
//!
//! Both choices are precomputed when the routing table is compiled, so a request does only
//! integer arithmetic here. Sticky assignment hashes the key with a fixed, seedless hash
//! (FNV-1a 64) to a bucket in `[0, 10000)`; buckets are laid out version after version in a
//! fixed order (the rollout's canary first). When the canary's share grows its range grows
//! from the same start, so a user already on the canary stays there and users only ever move
//! toward the version that grew (the monotone ramp SPEC §4 asks for). The hash is part of the
//! contract: every replica and every restart must put the same user in the same bucket.

/// Number of sticky buckets; a share of 1 bucket is 0.01%.
pub const BUCKETS: u32 = 10_000;

/// FNV-1a, 64 bit: the documented, seedless hash behind sticky assignment.
///
/// Offset basis `0xcbf29ce484222325`, prime `0x100000001b3`. Never replace it with a seeded
/// hasher: that would move every user at every restart.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The sticky bucket of a key, in `[0, BUCKETS)`.
pub fn sticky_bucket(key: &[u8]) -> u32 {
    (fnv1a64(key) % u64::from(BUCKETS)) as u32
}

/// A precomputed weighted choice among the versions of one service.
///
/// Versions are indexed as in the service's config order; `order` says in which order their
/// bucket ranges are laid out (canary first).
#[derive(Debug, Clone)]
pub struct WeightedPick {
    /// `(cumulative weight, version index)` in bucket order; only versions with weight > 0.
    cumulative: Box<[(u64, usize)]>,
    total: u64,
    /// Exclusive upper bucket bound per entry of `cumulative`, for sticky keys.
    bucket_ends: Box<[u32]>,
}

impl WeightedPick {
    /// `weights[i]` is version i's weight; `order` lists version indexes in bucket order and
    /// must be a permutation of `0..weights.len()`.
    pub fn new(weights: &[u32], order: &[usize]) -> WeightedPick {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut bucket_ends = Vec::with_capacity(weights.len());
        let mut running = 0u64;
        for &i in order {
            let w = u64::from(weights[i]);
            if w == 0 {
                continue;
            }
            running += w;
            cumulative.push((running, i));
            // Integer boundaries from the cumulative sum: rounding never drifts, the last end
            // is exactly BUCKETS, and a version's start only depends on the versions before it.
            bucket_ends.push((running * u64::from(BUCKETS) / total) as u32);
        }
        WeightedPick {
            cumulative: cumulative.into(),
            total,
            bucket_ends: bucket_ends.into(),
        }
    }

    /// True when no version has weight (nothing can be chosen by weight).
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Chooses by weight with a random number `r` (any u64; reduced here).
    pub fn pick_random(&self, r: u64) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        // Multiply-shift instead of `%`: unbiased enough for 64-bit r and branch-free.
        let point = ((u128::from(r) * u128::from(self.total)) >> 64) as u64;
        self.cumulative
            .iter()
            .find(|(end, _)| point < *end)
            .map(|&(_, i)| i)
    }

    /// Chooses the version owning a sticky bucket.
    pub fn pick_bucket(&self, bucket: u32) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        self.bucket_ends
            .iter()
            .position(|&end| bucket < end)
            .map(|k| self.cumulative[k].1)
    }
}

/// Most slots a [`BackendTurns`] keeps: weights whose reduced sum is larger are scaled down
/// to it (a share error below 1/1024 of the whole, for a few KiB at most per version).
const MAX_TURNS: u64 = 1024;

/// The order a version's backends take turns in: plain rotation when every backend weighs
/// the same (the usual case, no table), else a precomputed cycle of backend indexes in which
/// each appears as often as its weight, interleaved (nginx's smooth weighted round-robin),
/// so that SRV weights (SPEC §12) share requests without bursts to one backend. Built once
/// per table compile; a request only indexes it.
#[derive(Debug, Clone, Default)]
pub struct BackendTurns {
    /// Empty: rotate over all backends.
    cycle: Box<[u32]>,
}

impl BackendTurns {
    /// `weights[i]` is backend i's weight (0 counts as the smallest share, not none: a
    /// backend in the table takes traffic).
    pub fn new(weights: &[u32]) -> BackendTurns {
        let Some(&first) = weights.first() else {
            return BackendTurns::default();
        };
        if weights.iter().all(|&w| w == first) {
            return BackendTurns::default();
        }
        let weights: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
        let g = weights.iter().copied().fold(0, gcd);
        let mut weights: Vec<u64> = weights.iter().map(|w| w / g).collect();
        let sum: u64 = weights.iter().sum();
        if sum > MAX_TURNS {
            for w in &mut weights {
                *w = (*w * MAX_TURNS / sum).max(1);
            }
        }
        let total: i64 = weights.iter().map(|&w| w as i64).sum();
        let mut current = vec![0i64; weights.len()];
        let mut cycle = Vec::with_capacity(total as usize);
        for _ in 0..total {
            for (c, &w) in current.iter_mut().zip(&weights) {
                *c += w as i64;
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|&(i, &c)| (c, std::cmp::Reverse(i)))
                .unwrap_or((0, &0));
            current[best] -= total;
            cycle.push(best as u32);
        }
        BackendTurns {
            cycle: cycle.into(),
        }
    }

    /// The backend (of `n`) whose turn `turn` is; the caller moves on from it past
    /// unhealthy ones.
    #[inline]
    pub fn first(&self, turn: usize, n: usize) -> usize {
        match self.cycle.len() {
            0 => turn % n,
            len => self.cycle[turn % len] as usize,
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn random_pick_follows_weights() {
        let pick = WeightedPick::new(&[90, 10], &[1, 0]);
        let mut counts = [0u32; 2];
        let n = 100_000u64;
        for k in 0..n {
            // Evenly spaced r values sweep the whole range.
            let r = k.wrapping_mul(u64::MAX / n);
            counts[pick.pick_random(r).unwrap()] += 1;
        }
        assert!((counts[0] as i64 - 90_000).abs() < 100, "{counts:?}");
    }

    #[test]
    fn zero_weight_versions_are_never_picked() {
        let pick = WeightedPick::new(&[0, 100, 0], &[0, 1, 2]);
        for r in [0, u64::MAX / 2, u64::MAX] {
            assert_eq!(pick.pick_random(r), Some(1));
        }
        for b in [0, 5000, 9999] {
            assert_eq!(pick.pick_bucket(b), Some(1));
        }
        assert!(WeightedPick::new(&[0, 0], &[0, 1]).pick_random(7).is_none());
    }

    #[test]
    fn sticky_ramp_is_monotone() {
        // Version 1 is the canary (first in bucket order).
        let at = |canary: u32| WeightedPick::new(&[100 - canary, canary], &[1, 0]);
        let steps = [0, 1, 10, 25, 50, 90, 100];
        for pair in steps.windows(2) {
            let (before, after) = (at(pair[0]), at(pair[1]));
            for b in 0..BUCKETS {
                if before.pick_bucket(b) == Some(1) {
                    assert_eq!(after.pick_bucket(b), Some(1), "bucket {b} left the canary");
                }
            }
        }
        let share = (0..BUCKETS)
            .filter(|&b| at(10).pick_bucket(b) == Some(1))
            .count();
        assert_eq!(share, 1000);
    }

    #[test]
    fn backend_turns_follow_weights_interleaved() {
        let turns = |weights: &[u32], n: usize| -> Vec<usize> {
            let t = BackendTurns::new(weights);
            (0..n).map(|k| t.first(k, weights.len())).collect()
        };
        // Equal weights: plain rotation.
        assert_eq!(turns(&[100, 100, 100], 6), [0, 1, 2, 0, 1, 2]);
        // SRV weights 1 and 3 (as discovery gives them: 50 and 150): 1 in 4, spread out.
        assert_eq!(turns(&[50, 150], 8), [1, 0, 1, 1, 1, 0, 1, 1]);
        // A weight far below the others still gets its turn; a huge sum is scaled down.
        let t = turns(&[1, 200_000], 2048);
        let zero = t.iter().filter(|&&i| i == 0).count();
        assert!((1..=4).contains(&zero), "{zero}");
        let t = turns(&[333, 667, 1000], 20_000);
        let shares: Vec<usize> = (0..3)
            .map(|b| t.iter().filter(|&&i| i == b).count())
            .collect();
        for (got, want) in shares.iter().zip([3_330, 6_670, 10_000]) {
            assert!(got.abs_diff(want) < 60, "{shares:?}");
        }
    }
}
