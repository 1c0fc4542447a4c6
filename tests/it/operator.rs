//! What a new operator runs into (issue 13 item 4), against the real binary: weights edited
//! in the file while the proxy was stopped, traffic for a rolled-back release, roles after
//! promote → undo, and reloads that need a restart.

use std::net::SocketAddr;
use std::path::Path;

use crate::harness::*;
use http::StatusCode;
use serde_json::{json, Value};

fn two_versions(state: &Path, addr: SocketAddr, w: (u32, u32), extra: &str) -> String {
    Proxy::builder()
        .state_dir(state)
        .top(extra)
        .service(Service::two("api", (addr, addr), w))
        .yaml()
}

fn canary(state: &Path, blue: SocketAddr, green: SocketAddr) -> String {
    let rollout = Rollout::new(
        "[{ traffic: 10%, duration: 1h }, { traffic: 100% }]",
        "{ interval: 1h, min_requests: 1000000, metrics: [{ name: error-rate, threshold: 1 }] }",
    );
    Proxy::builder()
        .state_dir(state)
        .service(Service::blue_green("api", blue, green).rollout(rollout))
        .yaml()
}

fn version<'a>(svc: &'a Value, name: &str) -> &'a Value {
    svc["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {svc}"))
}

fn last_revision(history: &Value) -> Value {
    history["revisions"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_edited_in_the_file_while_stopped_win_at_the_next_start() {
    let backend = Backend::start("blue-1").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut proxy = Proxy::start(&two_versions(&state, backend.addr, (100, 0), "")).await;
    let (status, doc) = proxy
        .put_weights("api", json!({"blue": 90, "green": 10}))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");

    // Restarted with the file unchanged: the state (the API's 90/10) wins.
    proxy.kill9();
    proxy.restart().await;
    let svc = proxy.api("/services/api").await;
    assert_eq!(version(&svc, "green")["weight"], 10.0, "{svc}");

    // Edited while stopped: the file's weights win, as on a live reload, as a config revision.
    proxy.kill9();
    std::fs::write(
        &proxy.config_path,
        dedent(&two_versions(&state, backend.addr, (50, 50), "")),
    )
    .unwrap();
    proxy.restart().await;
    let svc = proxy.api("/services/api").await;
    assert_eq!(version(&svc, "green")["weight"], 50.0, "{svc}");
    let last = last_revision(&proxy.api("/services/api/history").await);
    assert_eq!(last["source"], "config", "{last}");
    assert_eq!(last["weights"], json!({"blue": 50, "green": 50}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_and_weights_never_send_traffic_to_a_rolled_back_release() {
    let (blue, green) = (
        Backend::start("blue-1").await,
        Backend::start("green-1").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&canary(&dir.path().join("state"), blue.addr, green.addr)).await;
    let (status, _) = proxy
        .api_send("POST", "/services/api/rollback", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);

    for (method, path, body) in [
        ("POST", "/services/api/switch", json!({"to": "green"})),
        ("PUT", "/services/api/weights", json!({"green": 5})),
    ] {
        let (status, doc) = proxy.api_send(method, path, Some(body), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {doc}");
        let e = doc["error"].as_str().unwrap();
        assert!(
            e.contains("v2") && e.contains("rolled back") && e.contains("resume"),
            "{e}"
        );
    }
    assert_eq!(tally(proxy.listen, 50).await.count("green"), 0);
    // Weights that keep it at 0% are fine; resume is the way back.
    let (status, doc) = proxy
        .put_weights("api", json!({"blue": 100, "green": 0}))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let (status, doc) = proxy
        .api_send("POST", "/services/api/rollout/resume", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["rollout"]["state"], "progressing");
    assert_eq!(version(&doc, "green")["weight"], 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_stay_true_after_promote_then_undo() {
    let (blue, green) = (
        Backend::start("blue-1").await,
        Backend::start("green-1").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&canary(&dir.path().join("state"), blue.addr, green.addr)).await;
    let svc = proxy.api("/services/api").await;
    assert_eq!(version(&svc, "blue")["role"], "stable", "{svc}");
    assert_eq!(version(&svc, "green")["role"], "canary", "{svc}");

    let (_, svc) = proxy
        .api_send("POST", "/services/api/rollout/promote", None, None)
        .await;
    assert_eq!(version(&svc, "green")["role"], "stable", "{svc}");
    assert_eq!(version(&svc, "blue")["role"], "standby", "{svc}");

    // Undo to the step before the promotion: blue carries 90% again, so it is the stable.
    let (status, svc) = proxy
        .api_send("POST", "/services/api/undo", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{svc}");
    assert_eq!(version(&svc, "blue")["weight"], 90.0, "{svc}");
    assert_eq!(version(&svc, "blue")["role"], "stable", "{svc}");
    assert_eq!(version(&svc, "green")["role"], "canary", "{svc}");
    let run = proxy.ctl(&["status", "api"]).await;
    let out = run.ok();
    let blue_row = out
        .lines()
        .find(|l| l.starts_with("blue "))
        .unwrap_or_default();
    assert!(
        blue_row.contains("90%") && blue_row.trim_end().ends_with("stable"),
        "{out}"
    );
    assert!(
        !out.contains("standby"),
        "the version with the traffic is no standby:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_needs_a_restart_says_so_in_status_and_ctl() {
    let backend = Backend::start("blue-1").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let proxy = Proxy::start(&two_versions(&state, backend.addr, (100, 0), "")).await;
    assert_eq!(proxy.status_json().await["restart_needed"], json!([]));
    proxy.rewrite_config(&two_versions(
        &state,
        backend.addr,
        (90, 10),
        "limits: { max_connections: 10 }",
    ));
    let status = eventually(RELOAD_TIMEOUT, "the reload", async || {
        let s = proxy.status_json().await;
        if s["restart_needed"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            Ok(s)
        } else {
            Err(format!("{s}"))
        }
    })
    .await;
    assert!(
        status["restart_needed"][0]
            .as_str()
            .unwrap()
            .contains("limits"),
        "{status}"
    );
    // The weights took effect at once; only the limits wait for a restart.
    let svc = proxy.api("/services/api").await;
    assert_eq!(version(&svc, "green")["weight"], 10.0, "{svc}");
    let run = proxy.ctl(&["status"]).await;
    assert!(
        run.ok().contains("restart needed to apply: limits"),
        "{}",
        run.stdout
    );
}
