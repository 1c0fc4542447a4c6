//! `state_dir` in fleet mode (SPEC §11: it only caches etcd's state): a replica that restarts
//! while etcd does not answer serves the fleet's last weights, not its config file's, and
//! converges on what the fleet commits once etcd is back.

use std::time::Duration;

use serde_json::{json, Value};

use super::{api_state, converged, two_versions};
use crate::harness::etcd::{leader_of, replica_config, Etcd};
use crate::harness::{eventually, free_port, get_once, Backend, Proxy};

async fn set_green(via: &Proxy, green: u64) -> u64 {
    let (status, doc) = via
        .put_weights("api", json!({ "blue": 100 - green, "green": green }))
        .await;
    assert_eq!(status, 200, "{doc}");
    doc["revision"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_while_etcd_is_away_serves_the_fleet_s_last_weights_from_state_dir() {
    let etcd = Etcd::start().await;
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let prefix = format!("/switchyard/t{}", free_port());
    let mut fleet = Vec::new();
    for i in 0..2 {
        let config = replica_config(&etcd, &prefix, i, 2, &two_versions(&blue, &green))
            + "state_dir: state\n";
        fleet.push(Proxy::start(&config).await);
    }
    leader_of(&fleet.iter().collect::<Vec<_>>()).await;
    let revision = set_green(&fleet[1], 30).await;
    converged(&fleet, revision).await;

    // edge-1 keeps what it applied in its state_dir (written within a second or so).
    let cache = fleet[0].dir().join("state").join("fleet-cache.json");
    eventually(
        Duration::from_secs(10),
        "edge-1's fleet cache",
        async || {
            let doc: Value = std::fs::read(&cache)
                .ok()
                .and_then(|t| serde_json::from_slice(&t).ok())
                .unwrap_or_default();
            let cached = doc["services"]["api"]["state"]["revision"].as_u64();
            (cached == Some(revision))
                .then_some(())
                .ok_or(format!("{doc}"))
        },
    )
    .await;

    // etcd stops answering; edge-1 restarts and still serves the fleet's 30%, not the
    // config's 0%, at the fleet's revision.
    etcd.stop();
    fleet[0].restart().await;
    let (rev, weights) = api_state(&fleet[0]).await;
    assert_eq!(rev, revision, "{weights}");
    assert_eq!(weights["green"].as_f64(), Some(30.0), "{weights}");
    let mut to_green = 0;
    for _ in 0..200 {
        let reply = get_once(fleet[0].listen, "/").await.expect("a request");
        assert_eq!(reply.status, 200, "no request fails while etcd is away");
        to_green += usize::from(reply.header("x-backend").as_deref() == Some("green"));
    }
    assert!(
        (30..=90).contains(&to_green),
        "about 30% to green: {to_green}/200"
    );
    assert!(
        fleet[0].stderr().contains("cached in state_dir"),
        "the start from the cache is logged"
    );

    // etcd answers again: a change through edge-2 reaches the restarted edge-1 too.
    etcd.resume();
    let newer = eventually(
        Duration::from_secs(15),
        "a change once etcd is back",
        async || {
            let (status, doc) = fleet[1]
                .put_weights("api", json!({ "blue": 60, "green": 40 }))
                .await;
            (status == 200)
                .then(|| doc["revision"].as_u64().unwrap())
                .ok_or(format!("{status} {doc}"))
        },
    )
    .await;
    assert!(newer > revision);
    let weights = converged(&fleet, newer).await;
    assert_eq!(weights["green"].as_f64(), Some(40.0), "{weights}");
}
