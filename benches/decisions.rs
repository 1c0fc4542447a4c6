//! How often each judge rolls back a canary, and how fast: a seeded simulation of rollouts,
//! no sockets, whose tables are `docs/DECISIONS.md` (SPEC §14).
//!
//! Run: `cargo bench --bench decisions` (about 105 s of CPU in release, spread over every
//! core; the output is the same on every run and every machine with the same build of `rand`,
//! however many cores ran it).
//!
//! Each rollout is one step at 10% canary share, judged every second for [`RUN_SECONDS`].
//! Every second, `Poisson(rate)` requests arrive and each goes to the canary with
//! probability 10% (so the split is binomial); each request fails with its version's error
//! probability at that moment and takes a latency drawn from its version's distribution,
//! recorded in the data path's own histogram buckets.
//!
//! The judges are the real engine: each second, every judge configuration gets the
//! telemetry windows the controller's run loop would hand it — the second that closed (for
//! fast-fail and the sequential judge), the interval since the last check (for the threshold
//! checks), and the stable's previous minutes (the sequential judge's slow edge) — and
//! `switchyard_control::engine::evaluate` decides, on a rollout config parsed from YAML by
//! `switchyard_config`. Its decisions are carried out on the rollout record as the run loop
//! does: a judge's memory (the sequential evidence) and the failed-check count go into the
//! record, and the first rollback ends that configuration's rollout. Every configuration sees
//! the same traffic, second by second. Fast-fail is judged on whole seconds (the controller
//! slides its one-second window every 250 ms, so it can trip a fraction of a second earlier).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution, LogNormal, Poisson};
use switchyard_config::Rollout;
use switchyard_control::engine::{
    self, Clock, Decision, Observations, RollbackReason, Spec, VersionObs,
};
use switchyard_control::rollout::{Phase, RolloutRecord};
use switchyard_control::telemetry::window::{Histogram, Window};
use switchyard_proxy::stats::{latency_bucket, LATENCY_BUCKETS};

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

/// The judges' configurations, as `analysis:` blocks of the same rollout.
const THRESHOLD: &str = "{ judge: threshold, interval: 10s, threshold: 5, metrics: [{ name: error-rate, threshold: 1 }, { name: latency-p99, threshold: 500 }] }";
/// SPEC §14's example: the same ceilings, plus the e-process.
const SEQUENTIAL: &str = "{ judge: sequential, alpha: 0.01, interval: 10s, threshold: 5, metrics: [{ name: error-rate, threshold: 1 }, { name: latency-p99, threshold: 500 }] }";
/// The recommended configuration (docs/CONFIG.md): the e-process and fast-fail, no ceilings.
const RECOMMENDED: &str =
    "{ judge: sequential, alpha: 0.01, interval: 10s, threshold: 5, metrics: [] }";
/// The threshold judge without a minimum sample (Flagger has none).
const NO_MINIMUM: &str = "{ judge: threshold, interval: 10s, threshold: 5, min_requests: 1, metrics: [{ name: error-rate, threshold: 1 }, { name: latency-p99, threshold: 500 }] }";

/// A rollout config with this `analysis:` block, parsed as the proxy parses its config.
fn rollout_config(analysis: &str) -> Rollout {
    let yaml = format!(
        "listeners: [{{ name: public, address: \"127.0.0.1:8080\" }}]\n\
         services:\n  api:\n    versions:\n      \
         blue: {{ release: v1, backends: [\"127.0.0.1:9001\"], weight: 100 }}\n      \
         green: {{ release: v2, backends: [\"127.0.0.1:9002\"], weight: 0 }}\n    \
         rollout:\n      stable: blue\n      canary: green\n      \
         steps: [{{ traffic: 10%, duration: 2h }}, {{ traffic: 100% }}]\n      \
         analysis: {analysis}\n"
    );
    let config = switchyard_config::parse(&yaml, "decisions.yaml").expect("valid config");
    config.services[0].rollout.clone().expect("rollout")
}

/// Milliseconds of the rollout's start on the engine's clock.
const T0: u64 = 1_000_000;

/// One judge configuration driving the engine through one rollout.
struct Judged<'a> {
    rollout: &'a Rollout,
    record: RolloutRecord,
    clock: Clock,
    /// Canary and stable traffic since the current analysis interval began.
    interval: (Window, Window),
    /// When and why it rolled back (second, 1-based).
    decided: Option<(u32, RollbackReason)>,
}

impl<'a> Judged<'a> {
    fn new(rollout: &'a Rollout) -> Judged<'a> {
        Judged {
            rollout,
            record: RolloutRecord {
                phase: Phase::Progressing,
                stable: "blue".into(),
                canary: "green".into(),
                canary_release: "v2".into(),
                number: 1,
                step: 0,
                steps: rollout.steps.len(),
                step_started_at: T0,
                step_elapsed_ms: 0,
                failed_checks: 0,
                awaiting_gate: false,
                reason: None,
                started_at: String::new(),
                finished_at: None,
                judges: Default::default(),
                extra: Default::default(),
            },
            clock: Clock::start(&Spec::new(rollout), T0),
            interval: Default::default(),
            decided: None,
        }
    }

    /// Second `t` closed with these windows; `recent` is the stable's previous minutes up to
    /// and including it (as the run loop's sampler gives it).
    fn second(&mut self, t: u32, canary: &Window, stable: &Window, recent: &Window) {
        if self.decided.is_some() {
            return;
        }
        let now = T0 + u64::from(t) * 1000;
        let spec = Spec::new(self.rollout);
        self.interval.0 += canary;
        self.interval.1 += stable;
        let obs = Observations {
            canary: VersionObs {
                last_second: canary.clone(),
                closed_second: Some(canary.clone()),
                interval: self.interval.0.clone(),
                recent: Window::default(),
            },
            stable: VersionObs {
                last_second: stable.clone(),
                closed_second: Some(stable.clone()),
                interval: self.interval.1.clone(),
                recent: recent.clone(),
            },
            interval_s: now.saturating_sub(self.clock.window_started) as f64 / 1000.0,
            canary_health: None,
        };
        let out = engine::evaluate(&spec, &self.record, self.clock, &obs, now, true);
        self.clock = out.clock;
        if out.new_window {
            self.interval = Default::default();
        }
        for decision in out.decisions {
            match decision {
                Decision::Remember { judge, memory, .. } => {
                    self.record.judges.insert(judge.to_string(), memory);
                }
                Decision::FailedChecks(n) => self.record.failed_checks = n,
                Decision::Rollback(rb) => self.decided = Some((t, rb.reason)),
                _ => {}
            }
        }
    }
}

/// The stable's previous minutes, as the run loop's sampler keeps them: a cumulative reading,
/// and the readings taken at each minute mark (six kept, so five to six minutes back).
#[derive(Default)]
struct Recent {
    reading: Window,
    minutes: std::collections::VecDeque<Window>,
}

impl Recent {
    fn push(&mut self, t: u32, stable: &Window) -> Window {
        self.reading += stable;
        if t % 60 == 1 {
            if self.minutes.len() == 6 {
                self.minutes.pop_front();
            }
            self.minutes.push_back(self.reading.clone());
        }
        self.reading
            .since(self.minutes.front().expect("pushed at second 1"))
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

/// One version's second as a telemetry window (failures as reason `status`). The histogram
/// is only as long as its slowest bucket: a window's missing buckets count as empty.
fn second_of(
    requests: u64,
    p: f64,
    latency: &Latency,
    rng: &mut SmallRng,
    buckets: &mut Vec<u64>,
) -> Window {
    let failed = Binomial::new(requests, p).expect("valid").sample(rng);
    buckets.clear();
    buckets.resize(LATENCY_BUCKETS, 0);
    let mut len = 0;
    for _ in 0..requests {
        let b = latency.draw(rng);
        buckets[b] += 1;
        len = len.max(b + 1);
    }
    Window {
        requests,
        failures: if failed > 0 {
            BTreeMap::from([("status".to_string(), failed)])
        } else {
            BTreeMap::new()
        },
        latency: Histogram(Arc::from(&buckets[..len])),
    }
}

// ---------------------------------------------------------------------------------------
// One rollout.

/// Who decided a rollback, for the "by reason" column.
fn component(reason: RollbackReason) -> &'static str {
    match reason {
        RollbackReason::Sequential => "sequential",
        RollbackReason::FastFail => "fast-fail",
        _ => "ceilings",
    }
}

struct Models {
    /// Per-request latency: healthy, and with the regression's tail.
    healthy: Latency,
    tail: Latency,
}

/// When (second, 1-based) and why each configuration rolled back, all judging the same
/// traffic in lockstep.
fn rollout(
    models: &Models,
    judges: &[Rollout],
    s: &Scenario,
    rate: f64,
    seconds: u32,
    seed: u64,
) -> Vec<Option<(u32, RollbackReason)>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let arrivals = Poisson::new(rate).expect("valid");
    let canary_latency = if s.canary_tail > 0.0 {
        &models.tail
    } else {
        &models.healthy
    };
    let mut judged: Vec<Judged> = judges.iter().map(Judged::new).collect();
    let mut recent = Recent::default();
    let mut buckets = Vec::new();
    for t in 1..=seconds {
        let total = arrivals.sample(&mut rng) as u64;
        let n_c = Binomial::new(total, CANARY_SHARE)
            .expect("valid")
            .sample(&mut rng);
        let (p_c, p_s) = (s.errors)(t);
        let canary = second_of(n_c, p_c, canary_latency, &mut rng, &mut buckets);
        let stable = second_of(total - n_c, p_s, &models.healthy, &mut rng, &mut buckets);
        let recent = recent.push(t, &stable);
        for j in &mut judged {
            j.second(t, &canary, &stable, &recent);
        }
        if judged.iter().all(|j| j.decided.is_some()) {
            break;
        }
    }
    judged.iter().map(|j| j.decided).collect()
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

/// `f(0..n)` on every core, in order. Each run has its own seed, so the tables do not depend
/// on how many threads ran them or in which order they finished.
fn runs<T: Send>(n: u64, f: impl Fn(u64) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicU64::new(0);
    let done = Mutex::new(Vec::with_capacity(n as usize));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let run = next.fetch_add(1, Ordering::Relaxed);
                if run >= n {
                    break;
                }
                let outcome = f(run);
                done.lock().expect("no run panics").push((run, outcome));
            });
        }
    });
    let mut done = done.into_inner().expect("no run panics");
    done.sort_unstable_by_key(|(run, _)| *run);
    done.into_iter().map(|(_, outcome)| outcome).collect()
}

/// A distinct seed per (table, scenario, rate, run), so every cell is reproducible alone.
fn seed(parts: [u64; 4]) -> u64 {
    parts.iter().fold(SEED, |h, p| {
        (h ^ p).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
    })
}

fn main() {
    let started = Instant::now();
    let table = [THRESHOLD, SEQUENTIAL, RECOMMENDED].map(rollout_config);
    let long = [THRESHOLD, NO_MINIMUM, RECOMMENDED].map(rollout_config);
    // The judges read the same interval, threshold and fast-fail; the first two the same
    // metrics too: only `judge` differs.
    let (thr, seq) = (&table[0].analysis, &table[1].analysis);
    assert_eq!(
        (thr.interval, thr.threshold, thr.fast_fail),
        (seq.interval, seq.threshold, seq.fast_fail)
    );
    assert_eq!(thr.metrics, seq.metrics);
    let alpha = seq.alpha;
    let mut rng = SmallRng::seed_from_u64(SEED);
    let models = Models {
        healthy: Latency::new(0.0, &mut rng),
        tail: Latency::new(0.1, &mut rng),
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "{RUNS} rollouts per cell, {} min each at {}% canary share; seed {SEED}; alpha {alpha}.",
        RUN_SECONDS / 60,
        CANARY_SHARE * 100.0,
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
            "| scenario | threshold judge | sequential judge (SPEC §14 example) | its rollbacks by reason | recommended: sequential, `metrics: []` |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
        for (si, s) in SCENARIOS.iter().enumerate() {
            let outcomes = runs(RUNS, |run| {
                let seed = seed([1, si as u64, ri as u64, run]);
                rollout(&models, &table, s, rate, RUN_SECONDS, seed)
            });
            let times = |k: usize| Times(outcomes.iter().map(|o| o[k].map(|(t, _)| t)).collect());
            let share = |name: &str| {
                let n = outcomes
                    .iter()
                    .filter(|o| o[1].is_some_and(|(_, r)| component(r) == name))
                    .count();
                pct(n as f64 / RUNS as f64)
            };
            let reasons = format!(
                "sequential {} · ceilings {} · fast-fail {}",
                share("sequential"),
                share("ceilings"),
                share("fast-fail"),
            );
            let _ = writeln!(
                out,
                "| {} | {} | {} | {reasons} | {} |",
                s.name,
                times(0).cell(s.bad),
                times(1).cell(s.bad),
                times(2).cell(s.bad)
            );
        }
        print!("{out}");
        out.clear();
    }

    // How false rollbacks of healthy canaries grow with the run's length, and what Flagger's
    // lack of a minimum sample does (Switchyard's `min_requests` defaults to 50).
    let _ = writeln!(
        out,
        "\n#### Healthy canaries by run length ({LONG_RUNS} rollouts per cell): share falsely rolled back\n"
    );
    let _ = writeln!(
        out,
        "| req/s | run | threshold judge | threshold judge, min_requests 1 | recommended: sequential, `metrics: []` |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for (ri, &rate) in RATES.iter().enumerate() {
        for &seconds in &LONG_RUN_SECONDS {
            let outcomes = runs(LONG_RUNS, |run| {
                let seed = seed([2, seconds.into(), ri as u64, run]);
                rollout(&models, &long, &SCENARIOS[0], rate, seconds, seed)
            });
            let rate_of = |k: usize| {
                pct(outcomes.iter().filter(|o| o[k].is_some()).count() as f64 / LONG_RUNS as f64)
            };
            let _ = writeln!(
                out,
                "| {rate} | {} min | {} | {} | {} |",
                seconds / 60,
                rate_of(0),
                rate_of(1),
                rate_of(2),
            );
        }
    }
    print!("{out}");
    eprintln!("decisions: {:.1} s", started.elapsed().as_secs_f64());
}
