//! A fleet whose etcd stops answering (SPEC §11): traffic keeps flowing, changes are
//! refused, rollbacks toward the stable happen at once and are committed once etcd is back.

use std::time::Duration;

use serde_json::json;

use super::{
    analysis_revisions, api_state, converged, counter, every_replica_at, rollout_service,
    two_versions, CONVERGE,
};
use crate::harness::etcd::{fleet_of, start_fleet, Etcd};
use crate::harness::{eventually, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_etcd_keeps_traffic_flowing_refuses_changes_and_converges_after() {
    let etcd = Etcd::start().await;
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let fleet = start_fleet(&etcd, 3, 2, &two_versions(&blue, &green)).await;
    let first = api_state(&fleet[0]).await.0;
    converged(&fleet, first).await;
    let loads: Vec<_> = fleet
        .iter()
        .map(|r| crate::harness::Load::start(r.listen, 2))
        .collect();
    etcd.stop();
    for r in &fleet {
        let asked = std::time::Instant::now();
        let (status, doc) = r
            .put_weights("api", json!({ "blue": 50, "green": 50 }))
            .await;
        let took = asked.elapsed();
        assert_eq!(status, 503, "{doc}");
        assert!(
            doc["error"]
                .as_str()
                .unwrap()
                .starts_with("fleet state store unavailable: "),
            "{doc}"
        );
        assert!(took < Duration::from_secs(5), "answered after {took:?}");
    }
    // Reads keep answering from snapshots; the fleet API says the store is away.
    eventually(CONVERGE, "the store shown unhealthy", async || {
        let doc = fleet_of(&fleet[0]).await;
        match doc["store"]["healthy"].as_bool() {
            Some(false) => Ok(()),
            _ => Err(doc.to_string()),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    etcd.resume();
    eventually(
        Duration::from_secs(15),
        "the store healthy again",
        async || {
            for r in &fleet {
                let doc = fleet_of(r).await;
                if doc["store"]["healthy"] != true {
                    return Err(doc.to_string());
                }
            }
            Ok(())
        },
    )
    .await;
    // Nothing refused was applied anywhere; a change now reaches every replica.
    for r in &fleet {
        assert_eq!(api_state(r).await, api_state(&fleet[0]).await);
        assert_eq!(api_state(r).await.0, first, "{}", r.admin);
    }
    let (status, doc) = fleet[2]
        .put_weights("api", json!({ "blue": 70, "green": 30 }))
        .await;
    assert_eq!(status, 200, "{doc}");
    let weights = converged(&fleet, first + 1).await;
    assert_eq!(weights["green"].as_f64(), Some(30.0));
    for load in loads {
        let report = load.finish().await;
        assert!(report.ok > 0);
        assert!(
            report.failures.is_empty(),
            "{:?}",
            &report.failures[..report.failures.len().min(5)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_away_replicas_that_see_fast_fail_go_to_stable_at_once_and_one_commits_later() {
    let etcd = Etcd::start().await;
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let services = rollout_service(
        &blue,
        &green,
        "[{ traffic: 50%, duration: 5m }, { traffic: 100% }]",
        "{ interval: 1m, threshold: 5, min_requests: 1000, metrics: [{ name: error-rate, threshold: 1 }] }",
    );
    let fleet = start_fleet(&etcd, 3, 2, &services).await;
    let at_50 = every_replica_at(&fleet, 50.0, CONVERGE).await;
    converged(&fleet, at_50).await;
    etcd.stop();
    green.set_failure_rate(1000);
    // Only edge-2 gets traffic: it sees the canary fail and takes it out at once, alone.
    let load = crate::harness::Load::start(fleet[1].listen, 3);
    eventually(CONVERGE, "edge-2 at 0% while etcd is stopped", async || {
        let (_, w) = api_state(&fleet[1]).await;
        (w["green"].as_f64() == Some(0.0))
            .then_some(())
            .ok_or(w.to_string())
    })
    .await;
    assert_eq!(api_state(&fleet[0]).await.1["green"].as_f64(), Some(50.0));
    eventually(CONVERGE, "the rollback waiting for etcd", async || {
        let status = fleet[1].status_json().await;
        let p = &status["persistence"];
        (p["healthy"] == false && p["pending"] == 1)
            .then_some(())
            .ok_or(status.to_string())
    })
    .await;
    // Now the others see it too, each rolls back on its own: three local rollbacks, each
    // waiting for etcd.
    let others: Vec<_> = [0, 2]
        .iter()
        .map(|&i| crate::harness::Load::start(fleet[i].listen, 3))
        .collect();
    every_replica_at(&fleet, 0.0, CONVERGE).await;
    load.finish().await;
    for l in others {
        l.finish().await;
    }
    etcd.resume();
    // When etcd answers again one commit wins and the others find it there: one rollback
    // revision for the fleet, counted once, on every replica.
    let revision = eventually(
        Duration::from_secs(15),
        "the rollback committed",
        async || {
            let mut revision = 0;
            for r in &fleet {
                let p = r.status_json().await["persistence"].clone();
                if p["pending"] != 0 {
                    return Err(p.to_string());
                }
                revision = api_state(r).await.0;
            }
            Ok(revision)
        },
    )
    .await;
    assert_eq!(revision, at_50 + 1, "one rollback revision");
    converged(&fleet, revision).await;
    let history = fleet[2].api("/services/api/history").await;
    assert_eq!(analysis_revisions(&history).len(), 1, "{history}");
    let mut counted = 0.0;
    for r in &fleet {
        counted += counter(r, "switchyard_rollbacks_total", &["reason=\"fast-fail\""]).await;
    }
    assert_eq!(counted, 1.0, "rollbacks counted over the fleet");
}
