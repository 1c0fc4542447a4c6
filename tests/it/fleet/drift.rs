//! Config drift and the fleet's own view (SPEC §11): a replica whose topology differs from the
//! leader's is shown per service in `GET /api/v1/fleet`, in
//! `switchyard_fleet_config_mismatch{service}` and by `switchyard ctl fleet`, and stops being
//! shown once its config is fixed.

use std::time::Duration;

use serde_json::Value;

use super::{counter, two_versions};
use crate::harness::etcd::{fleet_of, leader_of, replica_config, Etcd};
use crate::harness::{eventually, free_port, Backend, Proxy};

/// Upper bound for a heartbeat (once a second) to show in every replica's fleet view.
const SEEN: Duration = Duration::from_secs(10);

/// Replica name → the services `GET /api/v1/fleet` (as `via` sees it) shows drifting there.
async fn drift(via: &Proxy) -> Vec<(String, Vec<String>)> {
    let doc = fleet_of(via).await;
    doc["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let services = r["config_mismatch"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            (r["name"].as_str().unwrap().to_string(), services)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_topology_differs_is_shown_per_service_until_its_config_is_fixed() {
    let etcd = Etcd::start().await;
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let other = Backend::start("green-elsewhere").await;
    let same = two_versions(&blue, &green);
    // edge-3's `api` sends green elsewhere; `web` is the same on every replica.
    let web = "web:\n  match: { hosts: [web.test] }\n  versions:\n    only: { release: v1, backends: [\"127.0.0.1:9\"], weight: 100 }\n";
    let prefix = format!("/switchyard/t{}", free_port());
    let mut fleet = Vec::new();
    for (i, api) in [&same, &same, &two_versions(&blue, &other)]
        .iter()
        .enumerate()
    {
        let services = format!("{api}{web}");
        fleet.push(Proxy::start(&replica_config(&etcd, &prefix, i, 2, &services)).await);
    }
    let leader = leader_of(&fleet.iter().collect::<Vec<_>>()).await;
    assert_ne!(leader, "edge-3", "the first replica started leads");

    let expected = |edge3: &[&str]| -> Vec<(String, Vec<String>)> {
        ["edge-1", "edge-2", "edge-3"]
            .iter()
            .map(|n| {
                let s = if *n == "edge-3" { edge3 } else { &[] };
                (n.to_string(), s.iter().map(|s| s.to_string()).collect())
            })
            .collect()
    };
    for r in &fleet {
        eventually(
            SEEN,
            "edge-3's api drift in every replica's view",
            async || {
                let d = drift(r).await;
                (d == expected(&["api"]))
                    .then_some(())
                    .ok_or(format!("{d:?}"))
            },
        )
        .await;
        eventually(SEEN, "the mismatch gauges", async || {
            let api = counter(r, "switchyard_fleet_config_mismatch", &["service=\"api\""]).await;
            let web = counter(r, "switchyard_fleet_config_mismatch", &["service=\"web\""]).await;
            (api == 1.0 && web == 0.0)
                .then_some(())
                .ok_or(format!("api {api}, web {web}"))
        })
        .await;
    }

    // `switchyard ctl fleet` prints the same: the leader, the store, one row per replica with
    // its applied revisions and its drift.
    let ctl = fleet[1].ctl(&["fleet"]).await;
    assert_eq!(ctl.code, Some(0), "{ctl:?}");
    let out = &ctl.stdout;
    assert!(
        out.starts_with(&format!(
            "leader: {leader}   store: healthy ({})",
            etcd.endpoint
        )),
        "{out}"
    );
    let row = |name: &str| -> Vec<String> {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{out}"));
        line.split_whitespace().map(str::to_string).collect()
    };
    for (i, r) in fleet.iter().enumerate() {
        let cols = row(&format!("edge-{}", i + 1));
        assert!(cols.contains(&r.admin.to_string()), "{cols:?}\n{out}");
        assert!(
            cols.iter().any(|c| c.starts_with("api="))
                && cols.iter().any(|c| c.starts_with("web=")),
            "applied revisions per service: {cols:?}\n{out}"
        );
        let drift = cols.last().unwrap();
        assert_eq!(drift, if i == 2 { "api" } else { "-" }, "{out}");
    }
    let leader_row = row(&leader);
    assert_eq!(leader_row[1], "*", "the leader is marked: {out}");

    // Fixed: edge-3 reloads the fleet's config and the drift is gone everywhere.
    let fixed = std::fs::read_to_string(&fleet[2].config_path)
        .unwrap()
        .replace(&other.addr.to_string(), &green.addr.to_string());
    fleet[2].rewrite_config(&fixed);
    for r in &fleet {
        eventually(SEEN, "no drift after the fix", async || {
            let d = drift(r).await;
            let api = counter(r, "switchyard_fleet_config_mismatch", &["service=\"api\""]).await;
            (d == expected(&[]) && api == 0.0)
                .then_some(())
                .ok_or(format!("{d:?}, gauge {api}"))
        })
        .await;
    }
    let doc: Value = fleet_of(&fleet[0]).await;
    let hashes: Vec<&Value> = doc["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["config_hash"])
        .collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "equal configs hash equally: {doc}"
    );
}
