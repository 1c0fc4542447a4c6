//! SPEC §16's safety rules against the real binary: traffic first, disk second, for moves
//! toward the stable; moves away from it refused without a trace when they cannot be
//! persisted; a proxy that starts on a full or read-only disk; a controller that never dies
//! silently. Disks fail for real: a tiny tmpfs filled up or remounted read-only
//! (`harness/disk.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::harness::disk::TinyDisk;
use crate::harness::*;
use http::StatusCode;
use serde_json::{json, Value};

/// `api` (blue/green, with `rollout` if given, e.g. [`rollout`]) and `plain` (no rollout).
fn config(state: &Path, blue: SocketAddr, green: SocketAddr, rollout: Option<Rollout>) -> String {
    let mut api = Service::blue_green("api", blue, green);
    if let Some(rollout) = rollout {
        api = api.rollout(rollout);
    }
    Proxy::builder()
        .state_dir(state)
        .service(Service::blue_green("plain", blue, green).hosts(&["plain.test"]))
        .service(api)
        .yaml()
}

/// A rollout of green with a long first step (fast-fail on), with `webhooks` if given.
fn rollout(webhooks: &str) -> Option<Rollout> {
    let rollout = Rollout::new(
        "[{ traffic: 50%, duration: 1h }, { traffic: 100% }]",
        "{ interval: 1h, threshold: 5, min_requests: 1000000, metrics: [{ name: error-rate, threshold: 1 }] }",
    );
    Some(rollout.line(webhooks))
}

fn weight(svc: &Value, version: &str) -> f64 {
    svc["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == version))
        .and_then(|v| v["weight"].as_f64())
        .unwrap_or_else(|| panic!("no {version} in {svc}"))
}

fn metric(text: &str, name: &str, label: (&str, &str)) -> f64 {
    parse_metrics(text)
        .into_iter()
        .find(|s| s.name == name && s.label(label.0) == label.1)
        .map_or(0.0, |s| s.value)
}

fn log_ids(state: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(state.join("revisions.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).expect("a revision line");
            (
                r["service"].as_str().unwrap().to_string(),
                r["id"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollback_reaches_traffic_while_the_disk_is_full_and_is_persisted_when_space_returns() {
    let disk = TinyDisk::mount(1024);
    let state = disk.path().join("state");
    let blue = Backend::start("blue-1").await;
    let green = Backend::start_failing("green-1", 1000).await;
    let mut proxy = Proxy::start(&config(&state, blue.addr, green.addr, rollout(""))).await;
    assert_eq!(weight(&proxy.api("/services/api").await, "green"), 50.0);

    disk.fill();
    // The canary fails everything: fast-fail must take it out although nothing can be written.
    let load = Load::start(proxy.listen, 8);
    let svc = eventually(Duration::from_secs(15), "the rollback", async || {
        let svc = proxy.api("/services/api").await;
        if svc["rollout"]["state"] == "rolled_back" {
            Ok(svc)
        } else {
            Err(format!("{}", svc["rollout"]))
        }
    })
    .await;
    load.finish().await;
    assert_eq!(weight(&svc, "green"), 0.0);
    let after = tally(proxy.listen, 100).await;
    assert_eq!(after.count("green"), 0, "{after}");

    let status = proxy.status_json().await;
    let p = &status["persistence"];
    assert_eq!(p["healthy"], false, "{status}");
    assert!(p["pending"].as_u64() >= Some(1), "{status}");
    assert!(
        p["error"].as_str().is_some_and(|e| e.contains("state_dir")),
        "{status}"
    );
    assert!(p["since"].is_string(), "{status}");
    let text = proxy.admin_get("/metrics").await.text();
    assert!(
        metric(
            &text,
            "switchyard_state_write_errors_total",
            ("store", "file")
        ) >= 1.0,
        "{text}"
    );

    // Space comes back: the rollback is persisted by itself and survives kill -9.
    disk.free();
    eventually(
        Duration::from_secs(20),
        "persistence to recover",
        async || {
            let p = proxy.status_json().await["persistence"].clone();
            if p["healthy"] == true && p["pending"] == 0 {
                Ok(())
            } else {
                Err(format!("{p}"))
            }
        },
    )
    .await;
    proxy.kill9();
    proxy.restart().await;
    let svc = proxy.api("/services/api").await;
    assert_eq!(svc["rollout"]["state"], "rolled_back", "{svc}");
    assert_eq!(weight(&svc, "green"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_away_from_stable_that_cannot_be_persisted_is_refused_and_leaves_no_trace() {
    let disk = TinyDisk::mount(1024);
    let state = disk.path().join("state");
    let (blue, green) = (
        Backend::start("blue-1").await,
        Backend::start("green-1").await,
    );
    let mut proxy = Proxy::start(&config(&state, blue.addr, green.addr, rollout(""))).await;
    let (status, doc) = proxy
        .put_weights("plain", json!({"blue": 90, "green": 10}))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let acknowledged = doc["revision"].as_u64().unwrap();
    let logged = log_ids(&state);

    disk.fill();
    let (status, doc) = proxy
        .put_weights("plain", json!({"blue": 10, "green": 90}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("not applied"),
        "{doc}"
    );
    let svc = proxy.api("/services/plain").await;
    assert_eq!(
        (weight(&svc, "blue"), svc["revision"].as_u64()),
        (90.0, Some(acknowledged))
    );
    assert_eq!(
        log_ids(&state),
        logged,
        "a refused change left a line in the log"
    );

    // Nothing of it comes back after a crash, and its id is not used twice.
    proxy.kill9();
    disk.free();
    proxy.restart().await;
    let svc = proxy.api("/services/plain").await;
    assert_eq!(weight(&svc, "blue"), 90.0, "{svc}");
    assert_eq!(svc["revision"].as_u64(), Some(acknowledged));
    let (status, doc) = proxy
        .put_weights("plain", json!({"blue": 80, "green": 20}))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["revision"].as_u64(), Some(acknowledged + 1));
    let ids: Vec<u64> = log_ids(&state)
        .into_iter()
        .filter(|(s, _)| s == "plain")
        .map(|(_, id)| id)
        .collect();
    assert_eq!(
        ids,
        (1..=acknowledged + 1).collect::<Vec<_>>(),
        "ids are unique and in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_starts_on_a_read_only_state_dir_serves_the_config_and_refuses_changes_clearly() {
    let disk = TinyDisk::mount(1024);
    disk.read_only(true);
    let state = disk.path().join("state");
    let (blue, green) = (
        Backend::start("blue-1").await,
        Backend::start("green-1").await,
    );
    let proxy = Proxy::start(&config(&state, blue.addr, green.addr, rollout(""))).await;
    // Serving from the config: the rollout's first step too (the config named it).
    let t = tally(proxy.listen, 200).await;
    assert!(t.count("blue") > 0, "{t}");
    let status = proxy.status_json().await;
    assert_eq!(status["persistence"]["healthy"], false, "{status}");
    assert!(
        !status["persistence"]["warnings"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{status}"
    );
    // Away from the stable: refused, saying why.
    let (code, doc) = proxy
        .api_send(
            "POST",
            "/services/plain/switch",
            Some(json!({"to": "green"})),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("state_dir"),
        "{doc}"
    );
    // The rollout the config names cannot start (a step moves traffic away from the
    // stable); moving weights toward the stable is applied.
    let svc = proxy.api("/services/api").await;
    assert_eq!(weight(&svc, "green"), 0.0, "{svc}");
    let (code, doc) = proxy
        .put_weights("api", json!({"blue": 100, "green": 0}))
        .await;
    assert_eq!(code, StatusCode::OK, "{doc}");
    assert_eq!(weight(&doc, "blue"), 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_starts_with_a_full_state_dir() {
    let disk = TinyDisk::mount(512);
    disk.fill();
    let state = disk.path().join("state");
    let (blue, green) = (
        Backend::start("blue-1").await,
        Backend::start("green-1").await,
    );
    let proxy = Proxy::start(&config(&state, blue.addr, green.addr, rollout(""))).await;
    let t = tally(proxy.listen, 50).await;
    assert!(t.count("blue") > 0, "{t}");
    let status = proxy.status_json().await;
    assert_eq!(status["persistence"]["healthy"], false, "{status}");
}

/// A gate receiver that answers 200 only after `delay`.
async fn slow_gate(delay: Duration) -> SocketAddr {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::new()),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_answers_after_a_reload_removed_the_rollout_is_ignored() {
    let gate = slow_gate(Duration::from_secs(3)).await;
    let (blue, green) = (
        Backend::start("blue-1").await,
        Backend::start("green-1").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let hooks = format!("webhooks: [{{ type: gate, url: \"http://{gate}/\", timeout: 10s }}]");
    let with_gate = config(&state, blue.addr, green.addr, rollout(&hooks));
    let proxy = Proxy::start(&with_gate).await;
    let svc = proxy.api("/services/api").await;
    assert_eq!(svc["rollout"]["awaiting_gate"], true, "{svc}");

    // The config drops the rollout while the gate is still thinking.
    proxy.rewrite_config(&config(&state, blue.addr, green.addr, None));
    eventually(RELOAD_TIMEOUT, "the reload", async || {
        let svc = proxy.api("/services/api").await;
        if svc["rollout"].is_null() {
            Ok(())
        } else {
            Err(format!("{svc}"))
        }
    })
    .await;
    // The gate answers now; the controller must shrug and keep working.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (code, doc) = proxy
        .put_weights("api", json!({"blue": 70, "green": 30}))
        .await;
    assert_eq!(code, StatusCode::OK, "{doc}");
    assert_eq!(weight(&doc, "green"), 30.0);
    let history = proxy.api("/services/api/history").await;
    assert!(
        history["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["reason"]
                .as_str()
                .unwrap()
                .contains("rollout removed from config")),
        "{history}"
    );
    let status = proxy.status_json().await;
    assert_eq!(status["controller"]["restarts"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_controller_is_restarted_from_its_state_and_a_second_panic_exits() {
    let (blue, green) = (
        Backend::start("blue-1").await,
        Backend::start("green-1").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let yaml = config(&state, blue.addr, green.addr, rollout(""));
    // Debug builds only: a command on service `plain` panics the controller.
    let mut proxy = Proxy::start_with_env(
        &yaml,
        &[],
        &[("SWITCHYARD_FAULT", "controller-panic:plain")],
    )
    .await;
    let (code, _) = proxy
        .api_send("POST", "/services/api/rollback", None, None)
        .await;
    assert_eq!(code, StatusCode::OK);

    let (code, doc) = proxy
        .api_send(
            "POST",
            "/services/plain/switch",
            Some(json!({"to": "green"})),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{doc}");
    let status = eventually(Duration::from_secs(2), "the restart", async || {
        let s = proxy.status_json().await;
        if s["controller"]["restarts"] == 1 {
            Ok(s)
        } else {
            Err(format!("{s}"))
        }
    })
    .await;
    assert!(status["controller"]["last_restart"].is_string(), "{status}");
    let text = proxy.admin_get("/metrics").await.text();
    assert!(
        text.contains("switchyard_controller_restarts_total 1"),
        "{text}"
    );
    // Restarted from the persisted state: the rollback holds, and commands work again.
    let svc = proxy.api("/services/api").await;
    assert_eq!(svc["rollout"]["state"], "rolled_back", "{svc}");
    let (code, doc) = proxy.put_weights("api", json!({"blue": 100})).await;
    assert_eq!(code, StatusCode::OK, "{doc}");
    assert_eq!(tally(proxy.listen, 50).await.count("blue"), 50);

    // A second panic within a minute: the process exits non-zero for its supervisor.
    let req = http::Request::post("/api/v1/services/plain/switch")
        .header("content-type", "application/json")
        .body(full(r#"{"to":"green"}"#))
        .unwrap();
    let _ = Client::http1(proxy.admin).send(req).await; // it may not answer at all
    let exit = proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(
        exit.is_some_and(|s| !s.success()),
        "{exit:?}\n{}",
        proxy.stderr()
    );
}
