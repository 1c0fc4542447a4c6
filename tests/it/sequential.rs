//! The sequential judge end to end (SPEC §14): the real binary, real backends failing at set
//! rates, the canary at 10% of the traffic, and the API, events, history, metrics and `ctl`
//! to see what it decided and why.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;
use crate::rollout::{
    assert_rollbacks, metrics_text, service, under_load_until, wait_for_state, weight_of,
    with_canary,
};

/// A canary under a sequential judge with this `metrics:` list; interval 10 s and 5
/// failed checks, so the threshold checks need at least 50 s to roll anything back.
fn sequential(metrics: &str, steps: &str) -> Rollout {
    Rollout::new(
        steps,
        &format!(
            "{{ judge: sequential, alpha: 0.01, interval: 10s, threshold: 5, metrics: {metrics} }}"
        ),
    )
}

fn evidence(svc: &Value) -> (f64, f64, f64) {
    let e = &svc["rollout"]["evidence"];
    let get = |k: &str| {
        e[k].as_f64()
            .unwrap_or_else(|| panic!("no rollout.evidence.{k} in {}", svc["rollout"]))
    };
    (get("failures"), get("slow"), get("limit"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_failing_ten_times_as_often_as_the_stable_is_rolled_back_by_evidence() {
    let rollout = sequential(
        // SPEC §14's example ceilings: they would fail every check of this canary, five
        // times 10 s at the earliest.
        "[{ name: error-rate, threshold: 1 }, { name: latency-p99, threshold: 500 }]",
        "[{ traffic: 10%, duration: 10m }, { traffic: 100% }]",
    );
    let (_blue, _green, proxy) = with_canary((10, 100), rollout).await;
    let before = service(&proxy).await;
    assert_eq!(before["rollout"]["judge"], "sequential", "{before}");
    assert_eq!(evidence(&before), (1.0, 1.0, 200.0));

    let started = Instant::now();
    let load = Load::start(proxy.listen, 8);
    let svc = wait_for_state(&proxy, "rolled_back", Duration::from_secs(40)).await;
    let took = started.elapsed();
    load.finish().await;

    // Well before the threshold judge could: it needs 5 failed checks of 10 s each.
    assert!(took < Duration::from_secs(45), "{took:?}");
    let rollout = &svc["rollout"];
    assert!(rollout["failed_checks"].as_u64() < Some(5), "{rollout}");
    let reason = rollout["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("sequential: the canary fails more often than the stable"),
        "{reason}"
    );
    let (failures, _, limit) = evidence(&svc);
    assert!(failures >= limit, "{rollout}");

    // The history's reason and the event's details carry the evidence.
    let last = proxy.last_revision("api").await;
    assert_eq!(last["source"], "analysis", "{last}");
    assert_eq!(last["weights"]["green"], 0, "{last}");
    assert!(
        last["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("evidence"),
        "{last}"
    );
    let events = proxy.api("/events").await;
    let rolled = events["events"]
        .as_array()
        .and_then(|e| e.iter().rev().find(|e| e["kind"] == "rolled_back"))
        .cloned()
        .unwrap_or_else(|| panic!("no rolled_back event in {events}"));
    let details = &rolled["details"];
    assert_eq!(details["reason"], "sequential", "{rolled}");
    assert_eq!(details["evidence"]["kind"], "failures", "{rolled}");
    assert_eq!(details["evidence"]["limit"], 200.0, "{rolled}");
    assert!(
        details["evidence"]["failures"].as_f64() >= Some(200.0),
        "{rolled}"
    );

    assert_rollbacks(&proxy, "sequential", 1).await;
    let gauge = proxy
        .metric_sum(
            "switchyard_analysis_evidence",
            &[("service", "api"), ("kind", "failures")],
        )
        .await;
    assert!(gauge >= 200.0, "switchyard_analysis_evidence {gauge}");

    // `ctl status` shows the evidence against its limit.
    let run = proxy.ctl(&["status", "api"]).await;
    let out = run.ok();
    assert!(out.contains("sequential evidence: failures "), "{out}");
    assert!(out.contains("of limit 200"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_outage_is_not_blamed_on_the_canary_and_the_evidence_survives_a_restart() {
    // Both versions fail 2%: whatever is down, it is not the canary's doing.
    let rollout = sequential("[]", "[{ traffic: 10%, duration: 10m }, { traffic: 100% }]");
    let (_blue, _green, mut proxy) = with_canary((20, 20), rollout).await;
    let load = Load::start(proxy.listen, 8);
    // Past the first interval's end, so the evidence has been committed at least once.
    let svc = eventually(
        Duration::from_secs(40),
        "evidence below 1 past 12 s",
        async || {
            let svc = service(&proxy).await;
            let (failures, _, _) = evidence(&svc);
            if failures < 0.5 {
                Ok(svc)
            } else {
                Err(format!("evidence {}", svc["rollout"]["evidence"]))
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let report = load.finish().await;
    assert!(
        report.ok > 500,
        "too little traffic to judge: {} requests",
        report.ok
    );
    let svc_after = service(&proxy).await;
    assert_eq!(svc_after["rollout"]["state"], "progressing", "{svc_after}");
    assert_eq!(weight_of(&svc_after, "green"), 10.0);
    assert_rollbacks(&proxy, "sequential", 0).await;
    let (failures, _, limit) = evidence(&svc_after);
    assert!(failures < 0.5 && limit == 200.0, "{svc}");

    // Killed and restarted, the rollout resumes from the persisted evidence, not from 1.
    proxy.kill9();
    proxy.restart().await;
    let restarted = service(&proxy).await;
    assert_eq!(restarted["rollout"]["state"], "progressing", "{restarted}");
    let (resumed, _, _) = evidence(&restarted);
    assert!(
        resumed < 0.5,
        "evidence after restart: {}",
        restarted["rollout"]["evidence"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_as_healthy_as_the_stable_is_promoted() {
    let rollout = sequential(
        "[]",
        "[{ traffic: 10%, duration: 4s }, { traffic: 50%, duration: 4s }, { traffic: 100% }]",
    );
    let (_blue, _green, proxy) = with_canary((5, 5), rollout).await;
    let (svc, _) = under_load_until(&proxy, 8, "promoted", Duration::from_secs(40)).await;
    assert_eq!(weight_of(&svc, "green"), 100.0);
    let (failures, slow, limit) = evidence(&svc);
    assert!(failures < limit && slow < limit, "{}", svc["rollout"]);
    let metrics = metrics_text(&proxy).await;
    assert!(
        metrics.contains(r#"switchyard_rollouts_total{service="api",result="promoted"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_threshold_judge_is_the_default_and_shows_no_evidence() {
    let rollout = Rollout::new(
        "[{ traffic: 10%, duration: 10m }, { traffic: 100% }]",
        "{ interval: 10s, threshold: 5, metrics: [{ name: error-rate, threshold: 1 }] }",
    );
    let (_blue, _green, proxy) = with_canary((0, 0), rollout).await;
    let svc = service(&proxy).await;
    assert_eq!(svc["rollout"]["judge"], "threshold", "{svc}");
    assert!(svc["rollout"].get("evidence").is_none(), "{svc}");
}
