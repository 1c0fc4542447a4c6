//! Every SPEC §6 decision of the engine, with virtual time: no sockets, no sleeps, no clock.

use super::*;
use crate::rollout::Phase;
use crate::telemetry::window::Window;

const T0: Millis = 1_000_000;

pub(super) fn rollout(yaml: &str) -> Rollout {
    let text = format!(
        "listeners: [{{ name: p, address: \"127.0.0.1:1\" }}]\nservices:\n  api:\n    versions:\n      blue: {{ release: v1, backends: [\"127.0.0.1:2\"], weight: 100 }}\n      green: {{ release: v2, backends: [\"127.0.0.1:3\"], weight: 0 }}\n    rollout:\n      stable: blue\n      canary: green\n{yaml}"
    );
    switchyard_config::parse(&text, "t.yaml")
        .unwrap_or_else(|e| panic!("{e}"))
        .services
        .remove(0)
        .rollout
        .unwrap()
}

/// Two 10 s steps, then promotion; a check every 1 s, rollback after 2 failed checks of
/// error rate > 1%, fast-fail at the default line (50% over 20 requests).
fn standard() -> Rollout {
    rollout(
        "      steps: [{ traffic: 10%, duration: 10s }, { traffic: 50%, duration: 10s }, { traffic: 100% }]\n      analysis: { interval: 1s, threshold: 2, min_requests: 10, metrics: [{ name: error-rate, threshold: 1 }, { name: latency-p99, threshold: 300 }] }\n",
    )
}

fn record(step: usize, started: Millis) -> RolloutRecord {
    RolloutRecord::for_test(Phase::Progressing, step, started)
}

use crate::telemetry::window::test_window as window;

/// The canary's interval and last second both show `w`.
fn canary(w: Window) -> Observations {
    Observations {
        canary: VersionObs {
            last_second: w.clone(),
            interval: w,
            ..VersionObs::default()
        },
        interval_s: 1.0,
        ..Observations::default()
    }
}

fn run(r: &Rollout, rec: &RolloutRecord, clock: Clock, obs: &Observations, now: Millis) -> Outcome {
    evaluate(&Spec::new(r), rec, clock, obs, now, true)
}

/// One tick on a fresh clock started at `T0`.
fn at(r: &Rollout, rec: &RolloutRecord, obs: &Observations, now: Millis) -> Outcome {
    run(r, rec, Clock::start(&Spec::new(r), T0), obs, now)
}

fn any(o: &Outcome, f: impl Fn(&Decision) -> bool) -> bool {
    o.decisions.iter().any(f)
}

fn rollbacks(o: &Outcome) -> Vec<RollbackReason> {
    o.decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Rollback(r) => Some(r.reason),
            _ => None,
        })
        .collect()
}

#[test]
fn nothing_happens_while_a_step_holds_and_no_check_is_due() {
    let r = standard();
    let o = at(&r, &record(0, T0), &canary(window(100, 0, 1)), T0 + 500);
    assert!(o.decisions.is_empty(), "{:?}", o.decisions);
    assert!(!o.new_window);
}

#[test]
fn a_step_whose_duration_passed_advances_to_the_next() {
    let r = standard();
    let quiet = Observations::default();
    let o = at(&r, &record(0, T0), &quiet, T0 + 9_999);
    assert!(!o.decisions.contains(&Decision::Advance { step: 1 }));
    let o = at(&r, &record(0, T0), &quiet, T0 + 10_000);
    assert!(
        o.decisions.contains(&Decision::Advance { step: 1 }),
        "{:?}",
        o.decisions
    );
    // The step before the last advances to the last, which promotes (transitions.rs).
    let o = at(&r, &record(1, T0), &quiet, T0 + 10_000);
    assert!(o.decisions.contains(&Decision::Advance { step: 2 }));
}

#[test]
fn the_last_step_never_times_out() {
    let r = standard();
    let o = at(&r, &record(2, T0), &Observations::default(), T0 + 3_600_000);
    assert!(!any(&o, |d| matches!(d, Decision::Advance { .. })));
}

#[test]
fn a_paused_step_keeps_its_elapsed_time() {
    let mut rec = record(0, 0);
    rec.phase = Phase::Paused;
    rec.step_elapsed_ms = 7_000;
    assert_eq!(rec.step_elapsed(T0 + 60_000), 7_000);
    rec.phase = Phase::Progressing;
    rec.step_started_at = T0 - 7_000;
    assert_eq!(rec.step_elapsed(T0 + 3_000), 10_000);
}

#[test]
fn with_gates_a_step_waits_for_them_and_asks_once() {
    let r = rollout(
        "      steps: [{ traffic: 10%, duration: 1s }, { traffic: 100% }]\n      webhooks: [{ type: gate, url: \"http://127.0.0.1:1/\" }]\n",
    );
    let o = at(&r, &record(0, T0), &Observations::default(), T0 + 1_000);
    assert!(o.decisions.contains(&Decision::AwaitGates { step: 1 }));
    let mut waiting = record(0, T0);
    waiting.awaiting_gate = true;
    let o = at(&r, &waiting, &Observations::default(), T0 + 5_000);
    assert!(!any(&o, |d| matches!(d, Decision::AwaitGates { .. })));
}

#[test]
fn a_check_runs_every_interval_and_starts_a_new_window() {
    let r = standard();
    let o = at(&r, &record(0, T0), &canary(window(100, 0, 1)), T0 + 1_000);
    assert!(o.new_window);
    assert_eq!(o.clock.window_started, T0 + 1_000);
    assert_eq!(o.clock.next_check, T0 + 2_000);
    let Some(Decision::Checked(check)) = o.decisions.first() else {
        panic!("{:?}", o.decisions);
    };
    assert_eq!(check.verdict, threshold::Verdict::Pass);
    assert_eq!(o.clock.first_failure, None);
}

#[test]
fn too_few_requests_is_inconclusive_and_counts_nothing() {
    let r = standard();
    let o = at(&r, &record(0, T0), &canary(window(9, 9, 1)), T0 + 1_000);
    assert!(
        matches!(&o.decisions[..], [Decision::Checked(c)] if c.verdict == threshold::Verdict::Inconclusive),
        "{:?}",
        o.decisions
    );
}

#[test]
fn failed_checks_count_across_the_rollout_and_roll_back_at_the_threshold() {
    let r = standard();
    let bad = canary(window(100, 5, 1)); // 5%: above 1%, below the fast-fail line
    let o = at(&r, &record(0, T0), &bad, T0 + 1_000);
    assert!(
        o.decisions.contains(&Decision::FailedChecks(1)),
        "{:?}",
        o.decisions
    );
    assert!(rollbacks(&o).is_empty());
    assert_eq!(o.clock.first_failure, Some(T0 + 1_000));
    // The count lives in the record: the next failed check reaches the threshold of 2.
    let mut rec = record(0, T0);
    rec.failed_checks = 1;
    let o2 = run(&r, &rec, o.clock, &bad, T0 + 2_000);
    assert_eq!(rollbacks(&o2), [RollbackReason::ErrorRate]);
    assert_eq!(
        o2.clock.first_failure,
        Some(T0 + 1_000),
        "detection starts at the first"
    );
    let Some(Decision::Rollback(rb)) = o2.decisions.last() else {
        panic!()
    };
    assert_eq!(rb.message, "error-rate 5.0% > 1%");
    assert_eq!(rb.source, crate::store::Source::Analysis);
}

#[test]
fn a_slow_canary_is_rolled_back_for_latency() {
    let r = standard();
    let mut rec = record(0, T0);
    rec.failed_checks = 1;
    let o = run(
        &r,
        &rec,
        Clock::start(&Spec::new(&r), T0),
        &canary(window(100, 0, 800)),
        T0 + 1_000,
    );
    assert_eq!(rollbacks(&o), [RollbackReason::LatencyP99]);
}

#[test]
fn fast_fail_rolls_back_within_the_second_without_waiting_for_the_interval() {
    let r = standard();
    let o = at(&r, &record(0, T0), &canary(window(20, 10, 1)), T0 + 250);
    assert_eq!(rollbacks(&o), [RollbackReason::FastFail]);
    let o = at(&r, &record(0, T0), &canary(window(19, 19, 1)), T0 + 250);
    assert!(rollbacks(&o).is_empty(), "below min_requests");
    let o = at(&r, &record(0, T0), &canary(window(40, 19, 1)), T0 + 250);
    assert!(rollbacks(&o).is_empty(), "below the error-rate line");
    let off = rollout(
        "      steps: [{ traffic: 10% , duration: 10s }, { traffic: 100% }]\n      analysis: { fast_fail: off }\n",
    );
    let o = at(&off, &record(0, T0), &canary(window(100, 100, 1)), T0 + 250);
    assert!(rollbacks(&o).is_empty(), "fast_fail: off");
}

#[test]
fn every_canary_backend_down_rolls_back_for_health() {
    let r = standard();
    let mut obs = Observations {
        canary_health: Some(vec![
            ("127.0.0.1:3".into(), false),
            ("127.0.0.1:4".into(), false),
        ]),
        ..Observations::default()
    };
    let o = at(&r, &record(0, T0), &obs, T0 + 100);
    assert_eq!(rollbacks(&o), [RollbackReason::Health]);
    let Some(Decision::Rollback(rb)) = o.decisions.last() else {
        panic!()
    };
    assert_eq!(rb.source, crate::store::Source::Health);
    obs.canary_health = Some(vec![
        ("127.0.0.1:3".into(), false),
        ("127.0.0.1:4".into(), true),
    ]);
    assert!(rollbacks(&at(&r, &record(0, T0), &obs, T0 + 100)).is_empty());
    obs.canary_health = None;
    assert!(rollbacks(&at(&r, &record(0, T0), &obs, T0 + 100)).is_empty());
}

#[test]
fn a_rollback_ends_the_tick_before_any_step() {
    let r = standard();
    let o = at(
        &r,
        &record(0, T0),
        &canary(window(100, 100, 1)),
        T0 + 10_000,
    );
    assert_eq!(rollbacks(&o), [RollbackReason::FastFail]);
    assert!(!any(&o, |d| matches!(d, Decision::Advance { .. })));
}

#[test]
fn max_increase_compares_with_the_stable_in_the_same_window() {
    let r = rollout(
        "      steps: [{ traffic: 50%, duration: 1m }, { traffic: 100% }]\n      analysis: { interval: 1s, threshold: 1, min_requests: 10, fast_fail: off, metrics: [{ name: error-rate, threshold: 1, max_increase: 1 }] }\n",
    );
    let mut obs = canary(window(200, 10, 1));
    obs.stable.interval = window(200, 10, 1);
    let o = at(&r, &record(0, T0), &obs, T0 + 1_000);
    assert!(
        rollbacks(&o).is_empty(),
        "a shared outage: {:?}",
        o.decisions
    );
    obs.stable.interval = window(200, 2, 1);
    let o = at(&r, &record(0, T0), &obs, T0 + 1_000);
    assert_eq!(rollbacks(&o), [RollbackReason::ErrorRate]);
}

#[test]
fn a_replica_that_does_not_lead_runs_only_the_fast_judges() {
    let r = standard();
    let clock = Clock::start(&Spec::new(&r), T0);
    let spec = Spec::new(&r);
    let calm = evaluate(
        &spec,
        &record(0, T0),
        clock,
        &canary(window(100, 5, 1)),
        T0 + 20_000,
        false,
    );
    assert!(
        calm.decisions.is_empty(),
        "no checks, no steps: {:?}",
        calm.decisions
    );
    let bad = evaluate(
        &spec,
        &record(0, T0),
        clock,
        &canary(window(100, 100, 1)),
        T0 + 100,
        false,
    );
    assert_eq!(rollbacks(&bad), [RollbackReason::FastFail]);
}

/// A judge reads closed seconds and keeps memory: the seam a sequential judge plugs into.
#[test]
fn observations_carry_per_second_and_recent_windows_for_other_judges() {
    let obs = Observations {
        canary: VersionObs {
            closed_second: Some(window(10, 1, 1)),
            ..VersionObs::default()
        },
        stable: VersionObs {
            closed_second: Some(window(90, 1, 1)),
            recent: window(5_000, 5, 2),
            ..VersionObs::default()
        },
        ..Observations::default()
    };
    let edge = obs.stable.recent.latency.quantile_bucket(0.99).unwrap();
    let canary_second = obs.canary.closed_second.as_ref().unwrap();
    assert_eq!(canary_second.latency.above(edge), 0);
    let pooled =
        &obs.canary.closed_second.clone().unwrap() + obs.stable.closed_second.as_ref().unwrap();
    assert_eq!(pooled.requests, 100);
}
