//! Fleet mode (SPEC §11): several replicas, one routing state, one rollback decision, through
//! a real etcd. Every test starts its own etcd on free loopback ports and two or three real
//! `switchyard serve` processes on 127.0.0.2, .3, .4; etcd is stopped and killed by pid.

mod cache;
mod drift;

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
                .api_send(
                    "PUT",
                    "/services/api/weights",
                    Some(json!({ "blue": 100 - i, "green": i + 1 })),
                    None,
                )
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
            .api_send(
                "PUT",
                "/services/api/weights",
                Some(json!({ "blue": 50, "green": 50 })),
                None,
            )
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
        .api_send(
            "PUT",
            "/services/api/weights",
            Some(json!({ "blue": 70, "green": 30 })),
            None,
        )
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
