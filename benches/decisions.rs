//! How often each judge rolls back a canary, and how fast: a seeded simulation of rollouts,
//! no sockets, whose tables are `docs/DECISIONS.md` (SPEC §14).
//!
//! Run: `cargo bench --bench decisions` (about a minute in release on one core; the output is
//! the same on every run and every machine with the same build of `rand`).
//!
//! Each rollout is one step at 10% canary share, judged every second for [`RUN_SECONDS`].
//! Every second, `Poisson(rate)` requests arrive and each goes to the canary with
//! probability 10% (so the split is binomial); each request fails with its version's error
//! probability at that moment and takes a latency drawn from its version's distribution,
//! recorded in the data path's own histogram buckets. What each judge sees of a second is a
//! `VersionSnapshot` per version, as the controller's one-second windows are.
//!
//! The judges are the real code: the threshold judge is `switchyard_control::analysis`
//! (`check` every 10 s over the window, rollback at 5 failed checks across the rollout, and
//! `fast_fail` every second) on the analysis block parsed from YAML by `switchyard_config`;
//! the sequential judge is the same block with `judge: sequential`, so its ceilings and
//! fast-fail are active too, plus `switchyard_control::sequential::SequentialJudge` fed the
//! same seconds. Each component's first call for a rollback is recorded on the same traffic
//! (fast-fail, the interval checks — "ceilings" — and the e-process), so each judge's decision
//! is the earliest of its components': the threshold judge is fast-fail + ceilings, the
//! sequential judge all three, and the last column is the sequential judge with `metrics: []`
//! (fast-fail + e-process), which shows what the e-process does on its own. Ties go to
//! fast-fail, then the ceilings. Fast-fail is judged on whole seconds (the controller slides its
//! one-second window every 250 ms, so it can trip a fraction of a second earlier).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution, LogNormal, Poisson};
use switchyard_config::Analysis;
use switchyard_control::sequential::{EvidenceKind, SequentialJudge};
use switchyard_proxy::stats::{latency_bucket, VersionSnapshot, LATENCY_BUCKETS};

const SEED: u64 = 18;
/// Rollouts per scenario and traffic level.
const RUNS: u64 = 1000;
/// One rollout: ten minutes at 10% (the length of SPEC §3's two timed steps).
const RUN_SECONDS: u32 = 600;
const RATES: [f64; 3] = [5.0, 50.0, 500.0];
const CANARY_SHARE: f64 = 0.1;
/// The background error rate of both versions.
const BACKGROUND: f64 = 0.005;
/// Healthy runs per traffic level for the run-length table, and their lengths.
const LONG_RUNS: u64 = 300;
const LONG_RUN_SECONDS: [u32; 2] = [300, 3600];

/// The Flagger-style block both judges start from.
const ANALYSIS: &str = "
        interval: 10s
        threshold: 5
        metrics:
          - { name: error-rate, threshold: 1 }
          - { name: latency-p99, threshold: 500 }";

// ---------------------------------------------------------------------------------------
// The threshold judge: the one place that calls `switchyard_control::analysis`.

/// The controller's rules of SPEC §6, driven one second at a time: fast-fail on every second,
/// a check at the end of every interval over that interval's requests, rollback when failed
/// checks reach `threshold`. (The current controller takes its first baseline at the end of
/// the first interval, so its first check comes one interval later than here.)
mod threshold {
    use super::*;
    use switchyard_control::analysis::{self, Verdict};

    pub struct Threshold {
        analysis: Analysis,
        interval_s: u32,
        failed_checks: u32,
        canary: Window,
        stable: Window,
    }

    #[derive(Default)]
    struct Window {
        total: u64,
        failed: u64,
        latency: Vec<u64>,
    }

    impl Window {
        fn add(&mut self, s: &VersionSnapshot) {
            self.total += s.total;
            self.failed += s.failed;
            self.latency.resize(LATENCY_BUCKETS, 0);
            for (w, n) in self.latency.iter_mut().zip(s.latency.iter()) {
                *w += n;
            }
        }

        fn take(&mut self) -> VersionSnapshot {
            let w = std::mem::take(self);
            VersionSnapshot {
                total: w.total,
                failed: w.failed,
                latency: Arc::from(w.latency),
            }
        }
    }

    impl Threshold {
        pub fn new(analysis: Analysis) -> Threshold {
            Threshold {
                interval_s: analysis.interval.as_secs() as u32,
                analysis,
                failed_checks: 0,
                canary: Window::default(),
                stable: Window::default(),
            }
        }

        /// Second `t` (1-based) is over. Returns whether fast-fail and whether the interval
        /// checks call for a rollback now (both are kept going after either did, so each
        /// one's first call is known).
        pub fn second(
            &mut self,
            t: u32,
            canary: &VersionSnapshot,
            stable: &VersionSnapshot,
        ) -> (bool, bool) {
            let fast_fail = self
                .analysis
                .fast_fail
                .is_some_and(|rule| analysis::fast_fail(&rule, canary).is_some());
            self.canary.add(canary);
            self.stable.add(stable);
            if t % self.interval_s != 0 {
                return (fast_fail, false);
            }
            let (c, s) = (self.canary.take(), self.stable.take());
            let check = analysis::check(&self.analysis, &c, &s, f64::from(self.interval_s));
            self.failed_checks += u32::from(check.verdict == Verdict::Fail);
            (fast_fail, self.failed_checks >= self.analysis.threshold)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Traffic.

/// A latency distribution, discretised to the data path's histogram buckets (which is all the
/// proxy records of a latency): a cumulative table to draw a request's bucket from.
struct Latency {
    cdf: Vec<(f64, usize)>,
}

impl Latency {
    /// Lognormal with median 20 ms and p99 100 ms; with `tail`, that share of requests takes
    /// 500 ms longer.
    fn new(tail: f64, rng: &mut SmallRng) -> Latency {
        const DRAWS: u64 = 1 << 21;
        let sigma = (100.0f64 / 20.0).ln() / 2.326;
        let base = LogNormal::new(20_000f64.ln(), sigma).expect("valid");
        let mut counts = vec![0u64; LATENCY_BUCKETS];
        for _ in 0..DRAWS {
            let mut us = base.sample(rng);
            if rng.random::<f64>() < tail {
                us += 500_000.0;
            }
            counts[latency_bucket(us as u64)] += 1;
        }
        let mut seen = 0;
        let cdf = counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(bucket, &n)| {
                seen += n;
                (seen as f64 / DRAWS as f64, bucket)
            })
            .collect();
        Latency { cdf }
    }

    fn draw(&self, rng: &mut SmallRng) -> usize {
        let u: f64 = rng.random();
        let i = self.cdf.partition_point(|&(c, _)| c <= u);
        self.cdf[i.min(self.cdf.len() - 1)].1
    }
}

struct Scenario {
    name: &'static str,
    /// Whether rolling back is the right call.
    bad: bool,
    /// Error probability of (canary, stable) in second `t`.
    errors: fn(u32) -> (f64, f64),
    /// The canary's latency tail (share of requests 500 ms slower).
    canary_tail: f64,
}

const SCENARIOS: [Scenario; 6] = [
    Scenario {
        name: "healthy (0.5% errors on both)",
        bad: false,
        errors: |_| (BACKGROUND, BACKGROUND),
        canary_tail: 0.0,
    },
    Scenario {
        name: "2× error rate (1%)",
        bad: true,
        errors: |_| (2.0 * BACKGROUND, BACKGROUND),
        canary_tail: 0.0,
    },
    Scenario {
        name: "10× error rate (5%)",
        bad: true,
        errors: |_| (10.0 * BACKGROUND, BACKGROUND),
        canary_tail: 0.0,
    },
    Scenario {
        name: "50% broken",
        bad: true,
        errors: |_| (0.5, BACKGROUND),
        canary_tail: 0.0,
    },
    Scenario {
        name: "latency only (10% of requests +500 ms)",
        bad: true,
        errors: |_| (BACKGROUND, BACKGROUND),
        canary_tail: 0.1,
    },
    Scenario {
        name: "shared outage (both 10%, minutes 2–5)",
        bad: false,
        errors: |t| {
            let p = if (121..=300).contains(&t) {
                0.1
            } else {
                BACKGROUND
            };
            (p, p)
        },
        canary_tail: 0.0,
    },
];

/// One version's second, written into a reused snapshot.
fn fill(snap: &mut VersionSnapshot, requests: u64, p: f64, latency: &Latency, rng: &mut SmallRng) {
    snap.total = requests;
    snap.failed = Binomial::new(requests, p).expect("valid").sample(rng);
    let buckets = Arc::get_mut(&mut snap.latency).expect("judges keep no snapshot");
    buckets.fill(0);
    for _ in 0..requests {
        buckets[latency.draw(rng)] += 1;
    }
}

// ---------------------------------------------------------------------------------------
// One rollout.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    FastFail,
    /// The interval checks of `metrics` reached `threshold`.
    Ceiling,
    Sequential(EvidenceKind),
}

/// When each component first called for a rollback (second, 1-based), on one traffic path.
#[derive(Default)]
struct Outcome {
    fast_fail: Option<u32>,
    ceilings: Option<u32>,
    sequential: Option<(u32, EvidenceKind)>,
}

impl Outcome {
    /// The threshold judge (SPEC §6): fast-fail and the interval checks.
    fn threshold_judge(&self) -> Option<(u32, Reason)> {
        self.first([self.fast_fail(), self.ceilings(), None])
    }

    /// The sequential judge as SPEC §14 configures it: the e-process on top of both.
    fn sequential_judge(&self) -> Option<(u32, Reason)> {
        self.first([self.fast_fail(), self.ceilings(), self.e_process()])
    }

    /// The sequential judge with `metrics: []`: the e-process and fast-fail.
    fn without_ceilings(&self) -> Option<(u32, Reason)> {
        self.first([self.fast_fail(), None, self.e_process()])
    }

    fn fast_fail(&self) -> Option<(u32, Reason)> {
        self.fast_fail.map(|t| (t, Reason::FastFail))
    }

    fn ceilings(&self) -> Option<(u32, Reason)> {
        self.ceilings.map(|t| (t, Reason::Ceiling))
    }

    fn e_process(&self) -> Option<(u32, Reason)> {
        self.sequential.map(|(t, k)| (t, Reason::Sequential(k)))
    }

    /// The earliest; a tie goes to the one named first.
    fn first(&self, calls: [Option<(u32, Reason)>; 3]) -> Option<(u32, Reason)> {
        calls.into_iter().flatten().min_by_key(|(t, _)| *t)
    }

    /// Every judge has decided: nothing later can change a result.
    fn settled(&self) -> bool {
        self.fast_fail.is_some() || (self.ceilings.is_some() && self.sequential.is_some())
    }
}

struct Models {
    /// The threshold judge's block (the sequential judge's is the same with `judge:`).
    analysis: Analysis,
    alpha: f64,
    /// Per-request latency: healthy, and with the regression's tail.
    healthy: Latency,
    tail: Latency,
}

fn rollout(
    models: &Models,
    analysis: &Analysis,
    s: &Scenario,
    rate: f64,
    seconds: u32,
    seed: u64,
) -> Outcome {
    let mut rng = SmallRng::seed_from_u64(seed);
    let arrivals = Poisson::new(rate).expect("valid");
    let canary_latency = if s.canary_tail > 0.0 {
        &models.tail
    } else {
        &models.healthy
    };
    let mut flagger = threshold::Threshold::new(analysis.clone());
    let mut judge = SequentialJudge::new(models.alpha);
    let empty = || VersionSnapshot {
        total: 0,
        failed: 0,
        latency: Arc::from(vec![0; LATENCY_BUCKETS]),
    };
    let (mut canary, mut stable) = (empty(), empty());
    let mut out = Outcome::default();
    for t in 1..=seconds {
        let total = arrivals.sample(&mut rng) as u64;
        let n_c = Binomial::new(total, CANARY_SHARE)
            .expect("valid")
            .sample(&mut rng);
        let (p_c, p_s) = (s.errors)(t);
        fill(&mut canary, n_c, p_c, canary_latency, &mut rng);
        fill(&mut stable, total - n_c, p_s, &models.healthy, &mut rng);
        let (fast_fail, ceilings) = flagger.second(t, &canary, &stable);
        if fast_fail {
            out.fast_fail.get_or_insert(t);
        }
        if ceilings {
            out.ceilings.get_or_insert(t);
        }
        if out.sequential.is_none() {
            out.sequential = judge.second(&canary, &stable).map(|k| (t, k));
        }
        if out.settled() {
            break;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Summaries.

/// Rollback times of many runs (`None`: not rolled back within the run).
struct Times(Vec<Option<u32>>);

impl Times {
    fn rate(&self) -> f64 {
        self.0.iter().filter(|t| t.is_some()).count() as f64 / self.0.len() as f64
    }

    /// The q-quantile over all runs, counting runs not rolled back as never.
    fn quantile(&self, q: f64) -> Option<u32> {
        let mut t: Vec<u32> = self.0.iter().map(|t| t.unwrap_or(u32::MAX)).collect();
        t.sort_unstable();
        let rank = ((q * t.len() as f64).ceil() as usize).clamp(1, t.len());
        Some(t[rank - 1]).filter(|&v| v != u32::MAX)
    }

    /// `12.3% · 40 / 90 s` — rollback rate, then median / p90 time to it when bad.
    fn cell(&self, bad: bool) -> String {
        let rate = pct(self.rate());
        if !bad {
            return rate;
        }
        let q = |q| self.quantile(q).map_or("—".to_string(), |t| t.to_string());
        format!("{rate} · {} / {} s", q(0.5), q(0.9))
    }
}

fn pct(x: f64) -> String {
    if x == 0.0 {
        "0%".into()
    } else if x < 0.001 {
        format!("{:.2}%", x * 100.0)
    } else {
        format!("{:.1}%", x * 100.0)
    }
}

/// A distinct seed per (table, scenario, rate, run), so every cell is reproducible alone.
fn seed(parts: [u64; 4]) -> u64 {
    parts.iter().fold(SEED, |h, p| {
        (h ^ p).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
    })
}

fn main() {
    let started = Instant::now();
    let block = |judge: &str| {
        let yaml = format!(
            "listeners: [{{ name: public, address: \"127.0.0.1:8080\" }}]\n\
             services:\n  api:\n    versions:\n      \
             blue: {{ release: v1, backends: [\"127.0.0.1:9001\"], weight: 100 }}\n      \
             green: {{ release: v2, backends: [\"127.0.0.1:9002\"], weight: 0 }}\n    \
             rollout:\n      stable: blue\n      canary: green\n      \
             steps: [{{ traffic: 10%, duration: 10m }}, {{ traffic: 100% }}]\n      \
             analysis:\n        judge: {judge}{ANALYSIS}\n"
        );
        let config = switchyard_config::parse(&yaml, "decisions.yaml").expect("valid config");
        config.services[0]
            .rollout
            .clone()
            .expect("rollout")
            .analysis
    };
    let (flagger, sequential) = (block("threshold"), block("sequential"));
    // The judges read the same metrics, interval, threshold and fast-fail; only `judge` differs.
    assert_eq!(
        Analysis {
            judge: flagger.judge,
            ..sequential.clone()
        },
        flagger
    );
    let mut rng = SmallRng::seed_from_u64(SEED);
    let models = Models {
        alpha: sequential.alpha,
        analysis: flagger,
        healthy: Latency::new(0.0, &mut rng),
        tail: Latency::new(0.1, &mut rng),
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "{RUNS} rollouts per cell, {} min each at {}% canary share; seed {SEED}; alpha {}.",
        RUN_SECONDS / 60,
        CANARY_SHARE * 100.0,
        models.alpha
    );
    let _ = writeln!(
        out,
        "Cells: share of rollouts rolled back · median / p90 seconds to the rollback (— = not \
         within {RUN_SECONDS} s)."
    );
    for (ri, &rate) in RATES.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n#### {rate} req/s ({} on the canary)\n",
            rate * CANARY_SHARE
        );
        let _ = writeln!(
            out,
            "| scenario | threshold judge | sequential judge | its rollbacks by reason | sequential, no ceilings |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
        for (si, s) in SCENARIOS.iter().enumerate() {
            let outcomes: Vec<Outcome> = (0..RUNS)
                .map(|run| {
                    let seed = seed([1, si as u64, ri as u64, run]);
                    rollout(&models, &models.analysis, s, rate, RUN_SECONDS, seed)
                })
                .collect();
            let times =
                |f: &dyn Fn(&Outcome) -> Option<u32>| Times(outcomes.iter().map(f).collect());
            let thr = times(&|o| o.threshold_judge().map(|(t, _)| t));
            let seq = times(&|o| o.sequential_judge().map(|(t, _)| t));
            let alone = times(&|o| o.without_ceilings().map(|(t, _)| t));
            let share = |want: fn(Reason) -> bool| {
                let n = outcomes
                    .iter()
                    .filter(|o| o.sequential_judge().is_some_and(|(_, r)| want(r)))
                    .count();
                pct(n as f64 / RUNS as f64)
            };
            let reasons = format!(
                "sequential {} · ceilings {} · fast-fail {}",
                share(|r| matches!(r, Reason::Sequential(_))),
                share(|r| r == Reason::Ceiling),
                share(|r| r == Reason::FastFail),
            );
            let _ = writeln!(
                out,
                "| {} | {} | {} | {reasons} | {} |",
                s.name,
                thr.cell(s.bad),
                seq.cell(s.bad),
                alone.cell(s.bad)
            );
        }
        print!("{out}");
        out.clear();
    }

    // How false rollbacks of healthy canaries grow with the run's length, and what Flagger's
    // lack of a minimum sample does (Switchyard's `min_requests` defaults to 50). The same
    // seeds give both threshold variants the same traffic.
    let mut no_minimum = models.analysis.clone();
    no_minimum.min_requests = 1;
    let _ = writeln!(
        out,
        "\n#### Healthy canaries by run length ({LONG_RUNS} rollouts per cell): share falsely rolled back\n"
    );
    let _ = writeln!(
        out,
        "| req/s | run | threshold judge | threshold judge, min_requests 1 | sequential, no ceilings |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for (ri, &rate) in RATES.iter().enumerate() {
        for &seconds in &LONG_RUN_SECONDS {
            let runs = |analysis: &Analysis| -> Vec<Outcome> {
                (0..LONG_RUNS)
                    .map(|run| {
                        let seed = seed([2, seconds.into(), ri as u64, run]);
                        rollout(&models, analysis, &SCENARIOS[0], rate, seconds, seed)
                    })
                    .collect()
            };
            let (strict, loose) = (runs(&models.analysis), runs(&no_minimum));
            let rate_of = |o: &[Outcome], f: fn(&Outcome) -> bool| {
                pct(o.iter().filter(|o| f(o)).count() as f64 / o.len() as f64)
            };
            let _ = writeln!(
                out,
                "| {rate} | {} min | {} | {} | {} |",
                seconds / 60,
                rate_of(&strict, |o| o.threshold_judge().is_some()),
                rate_of(&loose, |o| o.threshold_judge().is_some()),
                rate_of(&strict, |o| o.without_ceilings().is_some()),
            );
        }
    }
    print!("{out}");
    eprintln!("decisions: {:.1} s", started.elapsed().as_secs_f64());
}
