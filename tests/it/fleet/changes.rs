//! Changes in a fleet (SPEC §11): one made through any replica shows on all with one
//! revision, concurrent ones get contiguous revisions, none acknowledged is lost when a
//! replica is killed; without `cluster:` there is no fleet.

use std::time::Duration;

use serde_json::{json, Value};

use super::{api_state, converged, counter, two_versions, CONVERGE};
use crate::harness::etcd::{fleet_of, leader_of, start_fleet, Etcd};
use crate::harness::{eventually, Backend, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_any_replica_shows_on_all_three_with_the_same_revision() {
    let etcd = Etcd::start().await;
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let fleet = start_fleet(&etcd, 3, 2, &two_versions(&blue, &green)).await;
    let first = api_state(&fleet[0]).await.0;
    converged(&fleet, first).await;
    for (i, via) in [1usize, 2, 0].into_iter().enumerate() {
        let green_w = 10 * (i as u64 + 1);
        let (status, doc) = fleet[via]
            .put_weights("api", json!({ "blue": 100 - green_w, "green": green_w }))
            .await;
        assert_eq!(status, 200, "{doc}");
        let revision = doc["revision"].as_u64().unwrap();
        assert_eq!(
            revision,
            first + i as u64 + 1,
            "one new revision per change"
        );
        let weights = converged(&fleet, revision).await;
        assert_eq!(weights["green"].as_f64(), Some(green_w as f64), "{weights}");
    }
    // Every replica's history holds the same revisions.
    let histories: Vec<Value> =
        futures_util::future::join_all(fleet.iter().map(|r| r.api("/services/api/history"))).await;
    assert!(histories.windows(2).all(|w| w[0] == w[1]), "{histories:?}");
    // The fleet API shows three replicas, one leader, and each replica's applied revision.
    let last = first + 3;
    eventually(
        CONVERGE,
        "three replicas at the last revision",
        async || {
            let doc = fleet_of(&fleet[2]).await;
            let replicas = doc["replicas"].as_array().cloned().unwrap_or_default();
            let applied: Vec<_> = replicas
                .iter()
                .map(|r| r["applied_revision"]["api"].as_u64())
                .collect();
            let leaders = replicas.iter().filter(|r| r["leader"] == true).count();
            if replicas.len() == 3 && leaders == 1 && applied.iter().all(|a| *a == Some(last)) {
                Ok(())
            } else {
                Err(doc.to_string())
            }
        },
    )
    .await;
    let leader = leader_of(&fleet.iter().collect::<Vec<_>>()).await;
    // The fleet's metrics: one leader, three replicas, commits applied from elsewhere timed.
    let mut leaders = 0.0;
    for r in &fleet {
        leaders += counter(r, "switchyard_fleet_leader", &[]).await;
        eventually(CONVERGE, "fleet gauges", async || {
            let replicas = counter(r, "switchyard_fleet_replicas", &[]).await;
            let mismatch =
                counter(r, "switchyard_fleet_config_mismatch", &["service=\"api\""]).await;
            (replicas == 3.0 && mismatch == 0.0)
                .then_some(())
                .ok_or(format!("replicas {replicas}, mismatch {mismatch}"))
        })
        .await;
    }
    assert_eq!(leaders, 1.0, "one leader ({leader})");
    let applied = counter(&fleet[0], "switchyard_fleet_apply_seconds_count", &[]).await
        + counter(&fleet[1], "switchyard_fleet_apply_seconds_count", &[]).await;
    assert!(
        applied >= 2.0,
        "commits from elsewhere are timed: {applied}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_changes_over_three_replicas_get_contiguous_revisions() {
    let etcd = Etcd::start().await;
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let fleet = start_fleet(&etcd, 3, 2, &two_versions(&blue, &green)).await;
    let first = api_state(&fleet[0]).await.0;
    converged(&fleet, first).await;
    let answers = futures_util::future::join_all((0..30u64).map(|i| {
        let replica = &fleet[i as usize % 3];
        async move {
            let (status, doc) = replica
                .put_weights("api", json!({ "blue": 100 - i, "green": i + 1 }))
                .await;
            (i, status, doc)
        }
    }))
    .await;
    let mut by_revision = std::collections::BTreeMap::new();
    for (i, status, doc) in &answers {
        assert_eq!(*status, 200, "change {i}: {doc}");
        let revision = doc["revision"].as_u64().unwrap();
        assert!(
            by_revision.insert(revision, *i).is_none(),
            "revision {revision} answered twice"
        );
    }
    let revisions: Vec<u64> = by_revision.keys().copied().collect();
    assert_eq!(revisions, (first + 1..=first + 30).collect::<Vec<_>>());
    converged(&fleet, first + 30).await;
    // Each revision holds the weights of the change it answered, on every replica.
    for r in &fleet {
        let history = r.api("/services/api/history").await;
        let revs = history["revisions"].as_array().unwrap();
        for rev in revs.iter().filter(|v| v["id"].as_u64().unwrap() > first) {
            let id = rev["id"].as_u64().unwrap();
            let i = by_revision[&id];
            assert_eq!(rev["weights"]["green"], i + 1, "{} revision {id}", r.admin);
        }
        assert_eq!(revs.len() as u64, first + 30, "{history}");
    }
}

/// `PUT /api/v1/services/api/weights` green=`green_w` through `admin`, without panicking on
/// a replica that dies under it: the acknowledged revision, if it was acknowledged.
async fn try_weights(admin: std::net::SocketAddr, green_w: u64) -> Option<u64> {
    let body = json!({ "blue": 100 - green_w, "green": green_w }).to_string();
    let req = http::Request::builder()
        .method("PUT")
        .uri("/api/v1/services/api/weights")
        .header("content-type", "application/json")
        .body(crate::harness::full(body))
        .ok()?;
    let reply = crate::harness::Client::http1(admin).send(req).await.ok()?;
    if reply.status != 200 {
        return None;
    }
    let doc: Value = serde_json::from_slice(&reply.body).ok()?;
    doc["revision"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_any_replica_at_any_moment_loses_no_acknowledged_change() {
    let etcd = Etcd::start().await;
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let mut fleet = start_fleet(&etcd, 3, 2, &two_versions(&blue, &green)).await;
    let first = api_state(&fleet[0]).await.0;
    converged(&fleet, first).await;
    let mut acknowledged = std::collections::BTreeMap::new();
    for round in 0..3u64 {
        let victim = round as usize % 3;
        // Every replica takes changes back to back; the victim is killed in the middle of
        // them, at a different moment each round.
        let writers: Vec<_> = fleet
            .iter()
            .enumerate()
            .map(|(w, r)| {
                let admin = r.admin;
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for k in 0..12u64 {
                        let green_w = 1 + (round * 36 + w as u64 * 12 + k) % 99;
                        if let Some(rev) = try_weights(admin, green_w).await {
                            acked.push((rev, green_w));
                        }
                    }
                    acked
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20 + 35 * round)).await;
        fleet[victim].kill9();
        for w in writers {
            for (rev, green_w) in w.await.unwrap() {
                assert!(
                    acknowledged.insert(rev, green_w).is_none(),
                    "revision {rev} acknowledged twice"
                );
            }
        }
        fleet[victim].restart().await;
    }
    assert!(acknowledged.len() >= 40, "{acknowledged:?}");
    let (newest, _) = api_state(&fleet[0]).await;
    converged(&fleet, newest).await;
    for r in &fleet {
        let history = r.api("/services/api/history").await;
        let by_id: std::collections::BTreeMap<u64, Value> = history["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["id"].as_u64().unwrap(), v["weights"].clone()))
            .collect();
        for (id, green_w) in &acknowledged {
            assert_eq!(
                by_id.get(id).map(|w| w["green"].clone()),
                Some(json!(green_w)),
                "{} lost acknowledged revision {id}",
                r.admin
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cluster_block_there_is_no_fleet() {
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let proxy = Proxy::start_services(&two_versions(&blue, &green)).await;
    let reply = proxy.admin_get("/api/v1/fleet").await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert!(
        reply.text().contains("no cluster: block"),
        "{}",
        reply.text()
    );
    let ctl = proxy.ctl(&["fleet"]).await;
    assert_eq!(ctl.code, Some(1), "{ctl:?}");
}
