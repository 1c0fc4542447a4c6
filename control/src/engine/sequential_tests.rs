//! The sequential judge wired into the engine (SPEC §14), with virtual time: one tick per
//! closed second, its memory carried in the record as the run loop carries it.

use super::*;
use crate::rollout::Phase;
use crate::telemetry::window::{test_window, test_window_of, Window};

const T0: Millis = 1_000_000;

/// The engine tests' rollout (`tests::rollout`) with one 10% step of an hour.
fn rollout(analysis: &str) -> Rollout {
    super::tests::rollout(&format!(
        "      steps: [{{ traffic: 10%, duration: 1h }}, {{ traffic: 100% }}]\n      analysis: {analysis}\n"
    ))
}

fn sequential() -> Rollout {
    rollout("{ judge: sequential, interval: 10s, metrics: [] }")
}

/// What happened over a run of seconds.
struct Run {
    /// The second (1-based) and the rollback, if any.
    rollback: Option<(u32, Rollback)>,
    record: RolloutRecord,
    /// Seconds whose memory was committed to the store.
    persisted: Vec<u32>,
    /// The engine's clock after the last tick.
    clock: Clock,
}

/// Drives the engine once a second for `seconds`, as the run loop does: every tick closes a
/// second, the stable's recent window is every second so far (this one included), interval
/// windows restart when the engine says so, and `Remember`/`FailedChecks` go into the record.
fn drive(
    r: &Rollout,
    mut record: RolloutRecord,
    seconds: u32,
    second: impl Fn(u32) -> (Window, Window),
) -> Run {
    let spec = Spec::new(r);
    let mut clock = Clock::start(&spec, T0);
    let (mut interval_c, mut interval_s, mut recent) =
        (Window::default(), Window::default(), Window::default());
    let mut persisted = Vec::new();
    for t in 1..=seconds {
        let now = T0 + u64::from(t) * 1000;
        let (c, s) = second(t);
        interval_c += &c;
        interval_s += &s;
        recent += &s;
        let obs = Observations {
            canary: VersionObs {
                last_second: c.clone(),
                closed_second: Some(c),
                interval: interval_c.clone(),
                recent: Window::default(),
            },
            stable: VersionObs {
                last_second: s.clone(),
                closed_second: Some(s),
                interval: interval_s.clone(),
                recent: recent.clone(),
            },
            interval_s: 10.0,
            canary_health: None,
        };
        let out = evaluate(&spec, &record, clock, &obs, now, true);
        clock = out.clock;
        if out.new_window {
            (interval_c, interval_s) = (Window::default(), Window::default());
        }
        for d in out.decisions {
            match d {
                Decision::Remember {
                    judge,
                    memory,
                    persist,
                } => {
                    if persist {
                        persisted.push(t);
                    }
                    record.judges.insert(judge.to_string(), memory);
                }
                Decision::FailedChecks(n) => record.failed_checks = n,
                Decision::Rollback(rb) => {
                    return Run {
                        rollback: Some((t, rb)),
                        record,
                        persisted,
                        clock,
                    }
                }
                _ => {}
            }
        }
    }
    Run {
        rollback: None,
        record,
        persisted,
        clock,
    }
}

fn fresh() -> RolloutRecord {
    RolloutRecord::for_test(Phase::Progressing, 0, T0)
}

/// 500 req/s at 10% share: the canary fails 3 of 50 a second (6%), the stable 2 of 450.
fn ten_times_worse(_: u32) -> (Window, Window) {
    (test_window(50, 3, 5), test_window(450, 2, 5))
}

#[test]
fn a_canary_failing_ten_times_as_often_is_rolled_back_for_sequential_within_seconds() {
    let run = drive(&sequential(), fresh(), 60, ten_times_worse);
    let (t, rb) = run.rollback.expect("rolled back");
    // Evidence 16.4 after one second, 464 after two (the e-process's hand-computed values).
    assert_eq!(t, 2);
    assert_eq!(rb.reason, RollbackReason::Sequential);
    assert_eq!(rb.reason.as_str(), "sequential");
    assert!(
        rb.message
            .starts_with("sequential: the canary fails more often than the stable")
            && rb
                .message
                .contains("evidence 464.1 ≥ limit 200.0, alpha 0.01"),
        "{}",
        rb.message
    );
    assert_eq!(rb.evidence["kind"], "failures");
    assert_eq!(rb.evidence["limit"], 200.0);
    assert!((rb.evidence["failures"].as_f64().unwrap() - 464.124_863).abs() < 1e-3);
    // The evidence that decided is in the record that the rollback commits.
    let kept = sequential::evidence_of(&run.record);
    assert!(kept.failures.evidence() > 200.0);
}

#[test]
fn a_sequential_rollbacks_detection_time_starts_when_the_evidence_first_leaned_against_the_canary()
{
    // Evidence 16.4 after the first bad second: the judge leaned from then, decided at the second.
    let run = drive(&sequential(), fresh(), 60, ten_times_worse);
    assert_eq!(run.rollback.as_ref().map(|(t, _)| *t), Some(2));
    assert_eq!(run.clock.first_failure, Some(T0 + 1_000));

    // Healthy for 20 s (the evidence sinks below 1), then ten times worse: the lean — and the
    // detection time — starts with the bad seconds, not with an early blip.
    let run = drive(&sequential(), fresh(), 80, |t| {
        if t <= 20 {
            (test_window(50, 0, 5), test_window(450, 2, 5))
        } else {
            ten_times_worse(t)
        }
    });
    let (t, _) = run.rollback.expect("rolled back");
    let since = run.clock.first_failure.expect("a detection start");
    assert!(
        since > T0 + 20_000,
        "leaned from {since} (bad from {})",
        T0 + 21_000
    );
    assert!(
        since < T0 + u64::from(t) * 1000,
        "detected at {t}, leaned from {since}"
    );
}

#[test]
fn the_threshold_judge_stays_the_default_and_never_judges_by_evidence() {
    let r = rollout("{ interval: 10s, metrics: [] }");
    assert_eq!(r.analysis.judge, switchyard_config::JudgeKind::Threshold);
    let run = drive(&r, fresh(), 60, ten_times_worse);
    assert!(run.rollback.is_none());
    assert!(run.record.judges.is_empty(), "{:?}", run.record.judges);
}

#[test]
fn a_shared_outage_is_not_blamed_on_the_canary() {
    // Both versions fail 2% for ten minutes at 500 req/s.
    let run = drive(&sequential(), fresh(), 600, |_| {
        (test_window(50, 1, 5), test_window(450, 9, 5))
    });
    assert!(run.rollback.is_none(), "{:?}", run.rollback);
    assert!(sequential::evidence_of(&run.record).failures.evidence() < 1e-3);
}

#[test]
fn evidence_is_committed_once_per_interval_and_kept_in_memory_in_between() {
    let run = drive(&sequential(), fresh(), 35, |_| {
        (test_window(50, 0, 5), test_window(450, 2, 5))
    });
    assert!(run.rollback.is_none());
    assert_eq!(run.persisted, vec![10, 20, 30]);
    // The record in memory moved every second: 70 stable failures at ρ = 0.1 bring even
    // θ = 1.5 down to (1/1.05)^70 = 0.033.
    assert!(sequential::evidence_of(&run.record).failures.evidence() < 0.01);
}

#[test]
fn a_restarted_rollout_resumes_from_the_persisted_evidence() {
    // One second of a 10× canary leaves evidence 16.4; persisted, the next process needs one
    // more such second to reach 200, where a fresh record needs two.
    let first = drive(&sequential(), fresh(), 1, ten_times_worse);
    assert!(first.rollback.is_none());
    let json = serde_json::to_string(&first.record).unwrap();
    let restored: RolloutRecord = serde_json::from_str(&json).unwrap();
    let resumed = drive(&sequential(), restored, 60, ten_times_worse);
    assert_eq!(resumed.rollback.map(|(t, _)| t), Some(1));
    let again = drive(&sequential(), fresh(), 60, ten_times_worse);
    assert_eq!(again.rollback.map(|(t, _)| t), Some(2));
}

#[test]
fn evidence_it_cannot_trust_starts_again_at_one() {
    let mut record = fresh();
    record.judges.insert(
        "sequential".into(),
        serde_json::json!({ "failures": { "theta": [2, 4], "log_e": [50, 50] } }),
    );
    assert_eq!(
        sequential::evidence_of(&record),
        crate::sequential::Evidence::default()
    );
    let run = drive(&sequential(), record, 60, ten_times_worse);
    assert_eq!(run.rollback.map(|(t, _)| t), Some(2));
}

#[test]
fn a_canary_slower_than_the_stables_p99_is_rolled_back_for_slowness() {
    // Both versions fail nothing; 10% of the canary's requests take 800 ms, the stable's
    // all take 20 ms. The edge needs 100 stable requests of history first.
    let run = drive(&sequential(), fresh(), 60, |_| {
        (
            test_window_of(50, 0, &[(20_000, 45), (800_000, 5)]),
            test_window_of(450, 0, &[(20_000, 450)]),
        )
    });
    let (t, rb) = run.rollback.expect("rolled back");
    assert!(t <= 5, "second {t}");
    assert_eq!(rb.reason, RollbackReason::Sequential);
    assert_eq!(rb.evidence["kind"], "slow");
    assert!(rb.message.contains("is slow (over 20."), "{}", rb.message);
    let edge = rb.evidence["slow_edge_ms"].as_f64().unwrap();
    assert!((20.0..21.5).contains(&edge), "{edge}");
}

#[test]
fn both_versions_slow_in_the_same_seconds_is_not_the_canarys_fault() {
    // A minute of fast seconds, then both versions take 800 ms: the edge comes from the
    // seconds before, so every request is slow on both, in proportion to traffic.
    let run = drive(&sequential(), fresh(), 300, |t| {
        let ms = if t > 60 { 800 } else { 20 };
        (test_window(50, 0, ms), test_window(450, 0, ms))
    });
    assert!(run.rollback.is_none(), "{:?}", run.rollback);
}

#[test]
fn ticks_without_a_closed_second_fold_in_nothing() {
    let r = sequential();
    let spec = Spec::new(&r);
    let (c, s) = ten_times_worse(1);
    let obs = Observations {
        canary: VersionObs {
            last_second: c.clone(),
            interval: c,
            ..VersionObs::default()
        },
        stable: VersionObs {
            last_second: s.clone(),
            interval: s,
            ..VersionObs::default()
        },
        interval_s: 0.25,
        canary_health: None,
    };
    let out = evaluate(
        &spec,
        &fresh(),
        Clock::start(&spec, T0),
        &obs,
        T0 + 250,
        true,
    );
    assert!(out.decisions.is_empty(), "{:?}", out.decisions);
}

#[test]
fn only_the_leader_runs_the_sequential_judge() {
    let r = sequential();
    let spec = Spec::new(&r);
    let (c, s) = ten_times_worse(1);
    let mut record = fresh();
    // Evidence already just under the limit: one more bad second would decide.
    let mut e = crate::sequential::Evidence::default();
    e.failures.observe(
        crate::sequential::Count::new(50, 3),
        crate::sequential::Count::new(450, 2),
    );
    record
        .judges
        .insert("sequential".into(), serde_json::to_value(&e).unwrap());
    let obs = Observations {
        canary: VersionObs {
            closed_second: Some(c),
            ..VersionObs::default()
        },
        stable: VersionObs {
            closed_second: Some(s),
            ..VersionObs::default()
        },
        interval_s: 1.0,
        canary_health: None,
    };
    let follower = evaluate(
        &spec,
        &record,
        Clock::start(&spec, T0),
        &obs,
        T0 + 1000,
        false,
    );
    assert!(follower.decisions.is_empty(), "{:?}", follower.decisions);
    let leader = evaluate(
        &spec,
        &record,
        Clock::start(&spec, T0),
        &obs,
        T0 + 1000,
        true,
    );
    assert!(leader
        .decisions
        .iter()
        .any(|d| matches!(d, Decision::Rollback(rb) if rb.reason == RollbackReason::Sequential)));
}
