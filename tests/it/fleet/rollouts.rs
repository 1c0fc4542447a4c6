//! Rollouts in a fleet (SPEC §11): one rollback decision for the fleet, judged on the
//! fleet's traffic, continued at its step by the next leader when the leader dies.

use std::time::Duration;

use serde_json::Value;

use super::{
    analysis_revisions, api_state, converged, counter, every_replica_at, rollout_service, CONVERGE,
};
use crate::harness::etcd::{fleet_of, leader_of, start_fleet, Etcd};
use crate::harness::{eventually, Backend, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_everything_on_every_listener_is_rolled_back_once_for_the_fleet() {
    let etcd = Etcd::start().await;
    let blue = Backend::start("blue").await;
    let green = Backend::start_failing("green", 1000).await;
    let services = rollout_service(
        &blue,
        &green,
        "[{ traffic: 50%, duration: 5m }, { traffic: 100% }]",
        "{ interval: 1m, threshold: 5, min_requests: 1000, metrics: [{ name: error-rate, threshold: 1 }] }",
    );
    let fleet = start_fleet(&etcd, 3, 2, &services).await;
    every_replica_at(&fleet, 50.0, CONVERGE).await;
    let started = std::time::Instant::now();
    let loads: Vec<_> = fleet
        .iter()
        .map(|r| crate::harness::Load::start(r.listen, 3))
        .collect();
    every_replica_at(&fleet, 0.0, Duration::from_secs(10)).await;
    let took = started.elapsed();
    for load in loads {
        load.finish().await;
    }
    let (revision, _) = api_state(&fleet[0]).await;
    converged(&fleet, revision).await;
    let history = fleet[1].api("/services/api/history").await;
    let rollbacks = analysis_revisions(&history);
    assert_eq!(
        rollbacks.len(),
        1,
        "exactly one rollback revision: {history}"
    );
    assert!(
        rollbacks[0]["reason"]
            .as_str()
            .unwrap()
            .contains("fast-fail"),
        "{history}"
    );
    // Counted once for the fleet, by the replica whose commit etcd took.
    let mut counted = 0.0;
    for r in &fleet {
        counted += counter(
            r,
            "switchyard_rollbacks_total",
            &["service=\"api\"", "reason=\"fast-fail\""],
        )
        .await;
        let doc = r.api("/services/api").await;
        assert_eq!(doc["rollout"]["state"], "rolled_back", "{doc}");
    }
    assert_eq!(counted, 1.0, "rollbacks counted over the fleet");
    // Every replica shows the one rollback event, whichever replica recorded it.
    for r in &fleet {
        eventually(
            CONVERGE,
            "the rollback event on every replica",
            async || {
                let events = r.api("/events").await;
                let n = events["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|e| e["kind"] == "rolled_back")
                    .count();
                (n == 1).then_some(()).ok_or(events.to_string())
            },
        )
        .await;
    }
    eprintln!("catastrophic canary: load start → 0% on every replica in {took:?}");
}

/// The replica named `name` (`edge-N` is `fleet[N-1]`).
fn by_name(fleet: &[Proxy], name: &str) -> usize {
    let n: usize = name.trim_start_matches("edge-").parse().expect("edge-N");
    assert!(n >= 1 && n <= fleet.len(), "{name}");
    n - 1
}

/// The `at` of the revision whose reason starts with `step {k}/`, if any (unix ms).
fn step_at(history: &Value, k: usize) -> Vec<u64> {
    history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["reason"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("step {k}/"))
        })
        .map(|r| {
            let at = r["at"].as_str().unwrap();
            humantime::parse_rfc3339(at)
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_is_killed_another_continues_the_rollout_at_its_step() {
    let etcd = Etcd::start().await;
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let services = rollout_service(
        &blue,
        &green,
        "[{ traffic: 10%, duration: 7s }, { traffic: 40%, duration: 7s }, { traffic: 100% }]",
        "{ interval: 1m, threshold: 5, min_requests: 1000, metrics: [{ name: error-rate, threshold: 1 }] }",
    );
    let mut fleet = start_fleet(&etcd, 3, 2, &services).await;
    let leader = leader_of(&fleet.iter().collect::<Vec<_>>()).await;
    let history = eventually(CONVERGE, "step 1 applied", async || {
        let h = fleet[0].api("/services/api/history").await;
        if step_at(&h, 1).len() == 1 {
            Ok(h)
        } else {
            Err(h.to_string())
        }
    })
    .await;
    let step1 = step_at(&history, 1)[0];
    let started = fleet[0].api("/services/api").await["rollout"]["started_at"].clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dead = by_name(&fleet, &leader);
    fleet[dead].kill9();
    let killed = std::time::Instant::now();
    let alive: Vec<&Proxy> = fleet
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != dead)
        .map(|(_, p)| p)
        .collect();
    let next = eventually(Duration::from_secs(10), "a new leader", async || {
        let doc = fleet_of(alive[0]).await;
        match doc["leader"].as_str() {
            Some(l) if l != leader => Ok(l.to_string()),
            _ => Err(doc.to_string()),
        }
    })
    .await;
    let failover = killed.elapsed();
    assert!(
        failover < Duration::from_secs(2 + 2 + 1),
        "failover took {failover:?} (lease 2s + 2s)"
    );
    // Step 2 comes 7s after step 1 began, as the dead leader would have applied it: the
    // step kept its start time, nothing restarted from step 1.
    let history = eventually(Duration::from_secs(15), "step 2 applied", async || {
        let h = alive[0].api("/services/api/history").await;
        if step_at(&h, 2).len() == 1 {
            Ok(h)
        } else {
            Err(h.to_string())
        }
    })
    .await;
    assert_eq!(
        step_at(&history, 1),
        vec![step1],
        "step 1 was not applied again"
    );
    let gap = step_at(&history, 2)[0] - step1;
    assert!(
        (7_000..8_500).contains(&gap),
        "step 2 came {gap} ms after step 1 (the step lasts 7 s)"
    );
    for r in &alive {
        let doc = r.api("/services/api").await;
        assert_eq!(doc["rollout"]["step"], 2, "{doc}");
        assert_eq!(doc["rollout"]["started_at"], started, "{doc}");
    }
    eprintln!(
        "leader {leader} killed; {next} led after {failover:?}; step 2 {gap} ms after step 1"
    );
}

/// `rps` plain requests a second to `addr` for `secs` seconds; returns how many were sent.
async fn paced(addr: std::net::SocketAddr, rps: u64, secs: u64) -> usize {
    let mut client = crate::harness::Client::http1(addr);
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / rps));
    let mut sent = 0;
    for _ in 0..rps * secs {
        tick.tick().await;
        let _ = client.get("/").await;
        sent += 1;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_no_single_replica_sees_enough_of_is_judged_on_the_fleet_s_traffic() {
    let etcd = Etcd::start().await;
    let blue = Backend::start("blue").await;
    // 5% of green's requests fail: under fast-fail's line, over error-rate's 1%.
    let green = Backend::start_failing("green", 50).await;
    let services = rollout_service(
        &blue,
        &green,
        "[{ traffic: 50%, duration: 5m }, { traffic: 100% }]",
        "{ interval: 4s, threshold: 1, min_requests: 60, fast_fail: off, metrics: [{ name: error-rate, threshold: 1 }] }",
    );
    let fleet = start_fleet(&etcd, 3, 2, &services).await;
    // 20 req/s per replica, half on the canary: about 40 canary requests per replica per
    // 4 s interval, under min_requests 60; the fleet's 120 are over it.
    let loads: Vec<_> = fleet
        .iter()
        .map(|r| tokio::spawn(paced(r.listen, 20, 20)))
        .collect();
    let doc = eventually(
        Duration::from_secs(20),
        "the pooled check to roll back",
        async || {
            let doc = fleet[0].api("/services/api").await;
            if doc["rollout"]["state"] == "rolled_back" {
                Ok(doc)
            } else {
                Err(doc["rollout"].to_string())
            }
        },
    )
    .await;
    for l in loads {
        l.abort();
    }
    let history = fleet[0].api("/services/api/history").await;
    let rollback = analysis_revisions(&history).pop().unwrap_or_default();
    assert!(
        rollback["reason"]
            .as_str()
            .unwrap_or("")
            .contains("error-rate"),
        "{history}"
    );
    assert_eq!(doc["rollout"]["failed_checks"], 1, "{doc}");
    let (revision, _) = api_state(&fleet[0]).await;
    let weights = converged(&fleet, revision).await;
    assert_eq!(weights["green"].as_f64(), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_unhealthy_on_every_replica_is_rolled_back_once_by_the_leader() {
    let etcd = Etcd::start().await;
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let services = rollout_service(
        &blue,
        &green,
        "[{ traffic: 20%, duration: 5m }, { traffic: 100% }]",
        "{ interval: 1m, threshold: 5, min_requests: 1000000, metrics: [{ name: error-rate, threshold: 1 }] }",
    ) + "  health_check: { path: /health, interval: 200ms, timeout: 200ms, unhealthy_threshold: 2 }\n";
    let fleet = start_fleet(&etcd, 3, 2, &services).await;
    every_replica_at(&fleet, 20.0, CONVERGE).await;
    let leader = leader_of(&fleet.iter().collect::<Vec<_>>()).await;
    // No traffic: only the health checks see it. Every replica's checks fail at once.
    drop(green);
    every_replica_at(&fleet, 0.0, Duration::from_secs(15)).await;
    let (revision, _) = api_state(&fleet[0]).await;
    converged(&fleet, revision).await;
    let history = fleet[2].api("/services/api/history").await;
    let health: Vec<&Value> = history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == "health")
        .collect();
    assert_eq!(
        health.len(),
        1,
        "exactly one health rollback revision: {history}"
    );
    let mut counted = Vec::new();
    for (i, r) in fleet.iter().enumerate() {
        let n = counter(
            r,
            "switchyard_rollbacks_total",
            &["service=\"api\"", "reason=\"health\""],
        )
        .await;
        counted.push((crate::harness::etcd::replica_name(i), n));
    }
    let by: Vec<_> = counted.iter().filter(|(_, n)| *n > 0.0).collect();
    assert_eq!(by.len(), 1, "counted once: {counted:?}");
    assert_eq!(
        by[0],
        &(leader.clone(), 1.0),
        "by the leader {leader}: {counted:?}"
    );
}
