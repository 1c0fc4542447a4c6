//! Fleet mode (SPEC §11): several replicas, one routing state, one rollback decision, through
//! a real etcd. Every test starts its own etcd on free loopback ports (etcd cannot report the
//! ports it bound) and two or three real `switchyard serve` processes on 127.0.0.2, .3, .4,
//! port 0; etcd is stopped and killed by pid. Here: what the modules share.

mod cache;
mod changes;
mod drift;
mod etcd_away;
mod rollouts;

use std::time::Duration;

use serde_json::Value;

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

fn rollout_service(blue: &Backend, green: &Backend, steps: &str, analysis: &str) -> String {
    format!(
        "api:\n  versions:\n    blue: {{ release: v1, backends: [\"{}\"], weight: 100 }}\n    green: {{ release: v2, backends: [\"{}\"], weight: 0 }}\n  rollout:\n    stable: blue\n    canary: green\n    steps: {steps}\n    analysis: {analysis}\n",
        blue.addr, green.addr
    )
}

/// Waits until every replica gives green `pct`% of `api`; returns the revision of the last
/// replica asked.
async fn every_replica_at(fleet: &[Proxy], pct: f64, within: Duration) -> u64 {
    eventually(
        within,
        &format!("green at {pct}% on every replica"),
        async || {
            let mut revision = 0;
            for r in fleet {
                let (rev, w) = api_state(r).await;
                if w["green"].as_f64() != Some(pct) {
                    return Err(format!("{} at {w}", r.admin));
                }
                revision = rev;
            }
            Ok(revision)
        },
    )
    .await
}

/// The revisions analysis made (rollbacks) in a history document.
fn analysis_revisions(history: &Value) -> Vec<Value> {
    history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == "analysis")
        .cloned()
        .collect()
}

/// Sum of a counter's samples matching all of `labels` on one replica.
async fn counter(replica: &Proxy, name: &str, labels: &[&str]) -> f64 {
    let text = replica.admin_get("/metrics").await.text();
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
