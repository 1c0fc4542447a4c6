//! Reliability under churn: switch storms under load, and kill -9 in the middle of changes.
//!
//! The promises tested here are the ones an operator bets an outage on: a switch or reload
//! never fails a request, the live table always equals the last acknowledged revision, and
//! a crash at any moment loses no acknowledged change and corrupts nothing.

use std::time::Duration;

use crate::harness::*;
use http::StatusCode;
use serde_json::{json, Value};

fn two_versions(blue: &Backend, green: &Backend, weights: (u32, u32)) -> ProxyBuilder {
    Proxy::builder().state_dir("state").service(Service::two(
        "api",
        (blue.addr, green.addr),
        weights,
    ))
}

/// The live share of each version, in percent, from `GET /api/v1/services/api`.
fn live_shares(svc: &Value) -> Vec<(String, f64)> {
    svc["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["weight"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The shares a revision's weights mean, in percent.
fn revision_shares(revision: &Value) -> Vec<(String, f64)> {
    let weights = revision["weights"].as_object().expect("weights");
    let total: f64 = weights.values().map(|w| w.as_f64().unwrap()).sum();
    weights
        .iter()
        .map(|(k, w)| {
            (
                k.clone(),
                (w.as_f64().unwrap() * 100.0 / total * 100.0).round() / 100.0,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switch_storm_under_load_fails_no_request_and_ends_on_the_last_revision() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    // One worker: the single-threaded data path, with the controller on its own thread.
    let proxy = two_versions(&blue, &green, (50, 50))
        .arg("--workers")
        .arg("1")
        .start()
        .await;
    let load = Load::start(proxy.listen, 64);

    let switches = async {
        for i in 0..500 {
            let to = if i % 2 == 0 { "green" } else { "blue" };
            let r = proxy
                .admin_send(
                    "POST",
                    "/api/v1/services/api/switch",
                    Some(json!({ "to": to })),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "switch {i}: {}", r.text());
        }
    };
    let weights = async {
        for i in 0..500u32 {
            let w = json!({ "blue": i % 101, "green": 100 - i % 101 });
            let r = proxy
                .admin_send("PUT", "/api/v1/services/api/weights", Some(w), None)
                .await;
            assert_eq!(r.status, StatusCode::OK, "weights {i}: {}", r.text());
        }
    };
    let reloads = async {
        for i in 0..50u32 {
            proxy.rewrite_config(&two_versions(&blue, &green, (10 + i, 90 - i)).yaml());
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    };
    tokio::join!(switches, weights, reloads);
    // Let the last reload settle, then keep the load on a moment longer.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let report = load.finish().await;

    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed during the storm, first: {:?}",
        report.failures.len(),
        report.ok + report.failures.len(),
        report.failures.first()
    );
    assert!(
        report.ok > 1000,
        "too little traffic to mean anything: {}",
        report.ok
    );

    // The API shows the newest revisions kept in memory (1,000); the log on disk has all.
    let history = proxy.api("/services/api/history").await;
    let revisions = history["revisions"].as_array().expect("revisions");
    let ids: Vec<u64> = revisions
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "history has gaps");
    let log = std::fs::read_to_string(proxy.dir().join("state/revisions.jsonl")).unwrap();
    let logged: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        logged,
        (1..=logged.len() as u64).collect::<Vec<_>>(),
        "the log has gaps or repeats"
    );
    assert!(
        logged.len() >= 1001,
        "500 switches + 500 weight changes + the initial config: {}",
        logged.len()
    );
    assert_eq!(ids.last(), logged.last());
    let last = revisions.last().expect("a revision");
    let svc = proxy.api("/services/api").await;
    assert_eq!(svc["revision"], last["id"]);
    let mut live = live_shares(&svc);
    let mut want = revision_shares(last);
    live.sort_by(|a, b| a.0.cmp(&b.0));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(live, want, "live table vs last revision {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_changes_loses_no_acknowledged_change() {
    let blue = Backend::start("blue-1").await;
    let red = Backend::start("red-1").await;
    let green = Backend::start_failing("green-1", 1000).await;
    let rollout = Rollout::new(
        "[{ traffic: 10%, duration: 10m }, { traffic: 100% }]",
        "{ interval: 10s, metrics: [{ name: error-rate, threshold: 1 }] }",
    );
    let service = Service::new("api")
        .version("blue", "v1", &[blue.addr], 100)
        .version("red", "v1", &[red.addr], 0)
        .version("green", "v2", &[green.addr], 0)
        .line("overrides: [{ header: x-canary, value: always, version: green }]")
        .rollout(rollout);
    let mut proxy = Proxy::builder()
        .state_dir("state")
        .service(service)
        .start()
        .await;
    let r = proxy
        .admin_send(
            "POST",
            "/api/v1/services/api/rollback",
            Some(json!({ "reason": "chaos drill" })),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // (revision id, blue weight) of every acknowledged change, across all cycles.
    let mut acknowledged: Vec<(u64, u64)> = Vec::new();
    for cycle in 0..50u64 {
        let admin = proxy.admin;
        let writer = tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0u64.. {
                let blue = (cycle * 7 + i) % 100 + 1;
                let body = json!({ "blue": blue, "red": 100 - blue });
                let req = http::Request::put("/api/v1/services/api/weights")
                    .header("content-type", "application/json")
                    .body(full(body.to_string()))
                    .unwrap();
                match Client::http1(admin).send(req).await {
                    Ok(reply) if reply.status == StatusCode::OK => {
                        let doc: Value = serde_json::from_slice(&reply.body).unwrap();
                        acks.push((doc["revision"].as_u64().unwrap(), blue));
                    }
                    _ => break, // the process died under us: this one was not acknowledged
                }
            }
            acks
        });
        // Kill at a different moment each cycle.
        tokio::time::sleep(Duration::from_millis(5 + (cycle * 37) % 120)).await;
        proxy.kill9();
        acknowledged.extend(writer.await.unwrap());
        proxy.restart().await;
        assert!(
            !proxy.stderr().contains("corrupt"),
            "cycle {cycle}: a state file was found corrupt:\n{}",
            proxy.stderr()
        );
    }
    assert!(
        acknowledged.len() >= 50,
        "too few acknowledged changes: {}",
        acknowledged.len()
    );

    let history = proxy.api("/services/api/history").await;
    let revisions = history["revisions"].as_array().unwrap();
    for (id, blue) in &acknowledged {
        let r = revisions
            .iter()
            .find(|r| r["id"] == *id)
            .unwrap_or_else(|| panic!("acknowledged revision {id} is missing"));
        assert_eq!(r["weights"]["blue"], *blue, "revision {id} changed: {r}");
    }
    let svc = proxy.api("/services/api").await;
    let last = revisions.last().unwrap();
    assert_eq!(svc["revision"], last["id"]);
    assert!(svc["revision"].as_u64() >= acknowledged.iter().map(|a| a.0).max());
    // The rolled-back canary is still out, overrides included.
    assert_eq!(svc["rollout"]["state"], "rolled_back");
    let forced = versions_of(proxy.listen, 30, |_| {
        get_with("/", &[("x-canary", "always")])
    })
    .await;
    assert!(forced.iter().all(|v| v != "green"), "{forced:?}");
}
