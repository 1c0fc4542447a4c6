//! Fleet mode (SPEC §11): several replicas, one routing state, one rollback decision, through
//! a real etcd. Every test starts its own etcd on free loopback ports and two or three real
//! `switchyard serve` processes on 127.0.0.2, .3, .4; etcd is stopped and killed by pid.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::etcd::{fleet_of, leader_of, start_fleet, Etcd};
use crate::harness::{eventually, Backend, Proxy};

/// Upper bound for a commit to show on every replica (SPEC: within 1 s; generous for CI).
const CONVERGE: Duration = Duration::from_secs(5);

fn two_versions(blue: &Backend, green: &Backend) -> String {
    format!(
        "api:\n  versions:\n    blue: {{ release: v1, backends: [\"{}\"], weight: 100 }}\n    green: {{ release: v2, backends: [\"{}\"], weight: 0 }}\n",
        blue.addr, green.addr
    )
}

/// `(revision, weights)` of `api` as one replica serves it.
async fn api_state(replica: &Proxy) -> (u64, Value) {
    let doc = replica.api("/services/api").await;
    let weights: serde_json::Map<String, Value> = doc["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v["weight"].clone()))
        .collect();
    (doc["revision"].as_u64().unwrap(), Value::Object(weights))
}

/// Waits until every replica serves `api` at `revision`; returns the weights they agree on.
async fn converged(replicas: &[Proxy], revision: u64) -> Value {
    let mut agreed = Value::Null;
    for r in replicas {
        let (rev, weights) = eventually(CONVERGE, "every replica at the revision", async || {
            let (rev, w) = api_state(r).await;
            if rev >= revision {
                Ok((rev, w))
            } else {
                Err(format!("{} at revision {rev}", r.admin))
            }
        })
        .await;
        assert_eq!(rev, revision, "{} went past revision {revision}", r.admin);
        if agreed.is_null() {
            agreed = weights;
        } else {
            assert_eq!(weights, agreed, "{} serves other weights", r.admin);
        }
    }
    agreed
}

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
            .api_send(
                "PUT",
                "/services/api/weights",
                Some(json!({ "blue": 100 - green_w, "green": green_w })),
                None,
            )
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
    leader_of(&fleet.iter().collect::<Vec<_>>()).await;
}
