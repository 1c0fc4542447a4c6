//! Canary rollouts and automatic rollback, end to end: the real binary, real backends that
//! fail or slow down on purpose, and the control API to watch what the proxy decides.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

/// Service `api`: `blue` (stable, release v1, 100%) on `blue` and `green` (the canary,
/// release `release`, 0%) on `green`; add its `rollout` (and anything else) to it.
pub(crate) fn api(blue: SocketAddr, green: SocketAddr, release: &str) -> Service {
    Service::new("api")
        .version("blue", "v1", &[blue], 100)
        .version("green", release, &[green], 0)
}

/// A rollout of green whose steps last an hour and whose analysis never has enough requests
/// to judge: it moves only when driven (through the API or `ctl`).
pub(crate) fn driven_only() -> Rollout {
    Rollout::new(
        "[{ traffic: 10%, duration: 1h }, { traffic: 50%, duration: 1h }, { traffic: 100% }]",
        "{ interval: 1h, threshold: 5, min_requests: 1000000, metrics: [{ name: error-rate, threshold: 1 }] }",
    )
}

/// A proxy serving `service`, its state in `state/` next to the config.
pub(crate) fn rollout_proxy(service: Service) -> ProxyBuilder {
    Proxy::builder().state_dir("state").service(service)
}

/// [`api`] with release v2 and `rollout`, started.
pub(crate) async fn start_canary(blue: SocketAddr, green: SocketAddr, rollout: Rollout) -> Proxy {
    rollout_proxy(api(blue, green, "v2").rollout(rollout))
        .start()
        .await
}

/// A `blue` and a `green` backend failing `(blue, green)`/1000 of their requests, behind
/// [`start_canary`].
pub(crate) async fn with_canary(
    (blue_fails, green_fails): (usize, usize),
    rollout: Rollout,
) -> (Backend, Backend, Proxy) {
    let blue = Backend::start_failing("blue-1", blue_fails).await;
    let green = Backend::start_failing("green-1", green_fails).await;
    let proxy = start_canary(blue.addr, green.addr, rollout).await;
    (blue, green, proxy)
}

pub(crate) async fn service(proxy: &Proxy) -> Value {
    proxy.api("/services/api").await
}

pub(crate) fn weight_of(svc: &Value, version: &str) -> f64 {
    svc["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == version))
        .and_then(|v| v["weight"].as_f64())
        .unwrap_or_else(|| panic!("no weight for {version} in {svc}"))
}

/// Waits until the rollout reaches `state`; returns the service document.
pub(crate) async fn wait_for_state(proxy: &Proxy, state: &str, within: Duration) -> Value {
    eventually(within, &format!("rollout state {state}"), async || {
        let svc = service(proxy).await;
        if svc["rollout"]["state"] == state {
            Ok(svc)
        } else {
            Err(format!("rollout: {}", svc["rollout"]))
        }
    })
    .await
}

/// Load on `clients` connections until the rollout reaches `state` (at most `within`): the
/// service document then, and what the load saw.
pub(crate) async fn under_load_until(
    proxy: &Proxy,
    clients: usize,
    state: &str,
    within: Duration,
) -> (Value, LoadReport) {
    let load = Load::start(proxy.listen, clients);
    let svc = wait_for_state(proxy, state, within).await;
    (svc, load.finish().await)
}

/// Asserts that `/metrics` counts `n` rollbacks of `api` for `reason`.
pub(crate) async fn assert_rollbacks(proxy: &Proxy, reason: &str, n: u64) {
    let metrics = metrics_text(proxy).await;
    let line = format!(r#"switchyard_rollbacks_total{{service="api",reason="{reason}"}} {n}"#);
    assert!(metrics.contains(&line), "no {line:?} in\n{metrics}");
}

pub(crate) async fn metrics_text(proxy: &Proxy) -> String {
    proxy.admin_get("/metrics").await.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_failing_a_quarter_of_requests_is_rolled_back_on_error_rate() {
    let rollout = Rollout::new(
        "[{ traffic: 50%, duration: 1m }, { traffic: 100% }]",
        "{ interval: 1s, threshold: 2, min_requests: 5, metrics: [{ name: error-rate, threshold: 1 }] }",
    );
    let (_blue, green, proxy) = with_canary((0, 250), rollout).await;
    assert_eq!(service(&proxy).await["rollout"]["state"], "progressing");

    let (svc, _) = under_load_until(&proxy, 8, "rolled_back", Duration::from_secs(20)).await;

    assert_eq!(weight_of(&svc, "green"), 0.0);
    assert_eq!(weight_of(&svc, "blue"), 100.0);
    let reason = svc["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("error-rate"), "reason: {reason}");
    assert!(
        svc["rollout"]["failed_checks"].as_u64() >= Some(2),
        "{}",
        svc["rollout"]
    );

    let last = proxy.last_revision("api").await;
    assert_eq!(last["source"], "analysis", "{last}");
    assert_eq!(last["weights"]["green"], 0);

    assert_rollbacks(&proxy, "error-rate", 1).await;
    // After the rollback, nothing reaches the canary.
    let before = green.hits();
    let after = tally(proxy.listen, 200).await;
    assert_eq!(after.count("green"), 0, "{after}");
    assert_eq!(green.hits(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_canary_is_rolled_back_on_latency_p99() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start_with_delay("green-1", Duration::from_millis(800)).await;
    let rollout = Rollout::new(
        "[{ traffic: 50%, duration: 1m }, { traffic: 100% }]",
        "{ interval: 1s, threshold: 2, min_requests: 5, metrics: [{ name: latency-p99, threshold: 300 }] }",
    );
    let proxy = start_canary(blue.addr, green.addr, rollout).await;
    let (svc, _) = under_load_until(&proxy, 16, "rolled_back", Duration::from_secs(20)).await;
    let reason = svc["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("latency-p99"), "reason: {reason}");
    assert_rollbacks(&proxy, "latency-p99", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthy_canary_is_promoted_through_its_steps() {
    let rollout = Rollout::new(
        "[{ traffic: 10%, duration: 1s }, { traffic: 50%, duration: 1s }, { traffic: 100% }]",
        "{ interval: 500ms, threshold: 2, min_requests: 100, metrics: [{ name: error-rate, threshold: 1 }] }",
    );
    let (_blue, green, proxy) = with_canary((0, 3), rollout).await;
    let (svc, _) = under_load_until(&proxy, 8, "promoted", Duration::from_secs(20)).await;
    assert_eq!(weight_of(&svc, "green"), 100.0);
    assert_eq!(weight_of(&svc, "blue"), 0.0);

    let history = proxy.api("/services/api/history").await;
    let steps: Vec<u64> = history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["weights"]["green"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![0, 10, 50, 100], "{history}");
    let metrics = metrics_text(&proxy).await;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("switchyard_rollbacks_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"switchyard_rollouts_total{service="api",result="promoted"} 1"#),
        "{metrics}"
    );
    // All traffic now goes to green.
    green.set_failure_rate(0);
    assert_eq!(tally(proxy.listen, 100).await.count("green"), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn too_little_traffic_is_inconclusive_and_never_rolls_back() {
    let rollout = Rollout::new(
        "[{ traffic: 50%, duration: 1m }, { traffic: 100% }]",
        "{ interval: 1s, threshold: 1, min_requests: 50, fast_fail: off, metrics: [{ name: error-rate, threshold: 1 }] }",
    );
    let (_blue, _green, proxy) = with_canary((0, 1000), rollout).await;
    let mut client = proxy.client();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let _ = client.get("/").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let svc = service(&proxy).await;
    assert_eq!(svc["rollout"]["state"], "progressing", "{svc}");
    assert_eq!(
        svc["rollout"]["last_analysis"]["verdict"], "inconclusive",
        "{svc}"
    );
    assert_eq!(svc["rollout"]["failed_checks"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_failing_everything_is_out_in_seconds_by_fast_fail() {
    let rollout = Rollout::new(
        "[{ traffic: 50%, duration: 10m }, { traffic: 100% }]",
        "{ interval: 30s, threshold: 5, min_requests: 50, metrics: [{ name: error-rate, threshold: 1 }] }",
    );
    let (_blue, _green, proxy) = with_canary((0, 1000), rollout).await;
    let started = Instant::now();
    let load = Load::start(proxy.listen, 8);
    let svc = wait_for_state(&proxy, "rolled_back", Duration::from_secs(10)).await;
    let detected = started.elapsed();
    let report = load.finish().await;
    let reason = svc["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("fast-fail"), "reason: {reason}");
    // Far sooner than the 30 s analysis interval could have; the measured time goes in the log.
    eprintln!(
        "fast-fail rollback after {detected:?}; {} canary failures served",
        report.failures.len()
    );
    assert!(detected < Duration::from_secs(10));
    assert_rollbacks(&proxy, "fast-fail", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_outage_does_not_blame_the_canary_with_max_increase() {
    let rollout = Rollout::new(
        "[{ traffic: 50%, duration: 1m }, { traffic: 100% }]",
        "{ interval: 1s, threshold: 2, min_requests: 20, metrics: [{ name: error-rate, threshold: 1, max_increase: 1 }] }",
    );
    let (_blue, _green, proxy) = with_canary((50, 50), rollout).await;
    let load = Load::start(proxy.listen, 8);
    // Five analysis intervals of a 5% error rate on both versions.
    let svc = eventually(Duration::from_secs(20), "five passing checks", async || {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let events = proxy.api("/events?since=0").await;
        let checks = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "analysis" && e["details"]["verdict"] == "pass")
            .count();
        if checks >= 5 {
            Ok(service(&proxy).await)
        } else {
            Err(format!("{checks} passing checks so far"))
        }
    })
    .await;
    load.finish().await;
    assert_eq!(svc["rollout"]["state"], "progressing", "{svc}");
    assert_eq!(svc["rollout"]["failed_checks"], 0, "{svc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_whose_backends_fail_health_checks_is_rolled_back() {
    let blue = Backend::start("blue-1").await;
    let dead = refusing_addr();
    let rollout = Rollout::new(
        "[{ traffic: 10%, duration: 1m }, { traffic: 100% }]",
        "{ interval: 1s, metrics: [{ name: error-rate, threshold: 1 }] }",
    );
    let service = api(blue.addr, dead, "v2")
        .line("health_check: { path: /health, interval: 100ms, timeout: 200ms, unhealthy_threshold: 2, healthy_threshold: 1 }")
        .rollout(rollout);
    let proxy = rollout_proxy(service).start().await;
    let svc = wait_for_state(&proxy, "rolled_back", Duration::from_secs(10)).await;
    let reason = svc["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("health"), "reason: {reason}");
    let last = proxy.last_revision("api").await;
    assert_eq!(last["source"], "health", "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolled_back_release_stays_out_across_kill_9_and_reload_until_a_new_release() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start_failing("green-1", 1000).await;
    let config = |release: &str| {
        let rollout = Rollout::new(
            "[{ traffic: 50%, duration: 10m }, { traffic: 100% }]",
            "{ interval: 1s, threshold: 2, min_requests: 5, metrics: [{ name: error-rate, threshold: 1 }] }",
        );
        let service = api(blue.addr, green.addr, release)
            .line("overrides: [{ header: x-canary, value: always, version: green }]")
            .rollout(rollout);
        rollout_proxy(service)
    };
    let mut proxy = config("v2").start().await;
    under_load_until(&proxy, 8, "rolled_back", Duration::from_secs(15)).await;
    // Traffic moves first, the state file follows (SPEC §16): the status says when it has.
    eventually(
        Duration::from_secs(10),
        "the rollback persisted",
        async || {
            let pending = &proxy.status_json().await["persistence"]["pending"];
            match pending.as_u64() {
                Some(0) => Ok(()),
                _ => Err(format!("persistence.pending = {pending}")),
            }
        },
    )
    .await;

    proxy.kill9();
    proxy.restart().await;
    let svc = service(&proxy).await;
    assert_eq!(svc["rollout"]["state"], "rolled_back", "{svc}");
    assert_eq!(weight_of(&svc, "green"), 0.0);
    // No traffic at all, not even by override (SPEC §4.5).
    let forced = versions_of(proxy.listen, 50, |_| {
        get_with("/", &[("x-canary", "always")])
    })
    .await;
    assert!(forced.iter().all(|v| v == "blue"), "{forced:?}");

    // A reload with the same release changes nothing.
    let (ok_before, _) = proxy.reload_counts().await;
    proxy.sighup();
    eventually(RELOAD_TIMEOUT, "the SIGHUP reload", async || {
        let (ok, _) = proxy.reload_counts().await;
        if ok > ok_before {
            Ok(())
        } else {
            Err(format!("reloads.ok={ok}"))
        }
    })
    .await;
    assert_eq!(weight_of(&service(&proxy).await, "green"), 0.0);

    // A new release is a new rollout.
    green.set_failure_rate(0);
    proxy.rewrite_config(&config("v3").yaml());
    let svc = eventually(RELOAD_TIMEOUT, "a new rollout of v3", async || {
        let svc = service(&proxy).await;
        if svc["rollout"]["state"] == "progressing" && svc["rollout"]["release"] == "v3" {
            Ok(svc)
        } else {
            Err(format!("{}", svc["rollout"]))
        }
    })
    .await;
    assert_eq!(weight_of(&svc, "green"), 50.0);
}

/// A webhook receiver: records every JSON body, answers with `status`.
struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start(status: StatusCode) -> Receiver {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let sink = bodies.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = tcp.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let sink = sink.clone();
                            async move {
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                                    sink.lock().unwrap().push(v);
                                }
                                let mut r = Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = status;
                                Ok::<_, Infallible>(r)
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { addr, bodies }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gate_answering_503_pauses_the_rollout() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let gate = Receiver::start(StatusCode::SERVICE_UNAVAILABLE).await;
    let rollout = Rollout::new(
        "[{ traffic: 50%, duration: 1m }, { traffic: 100% }]",
        "{ interval: 1s, metrics: [{ name: error-rate, threshold: 1 }] }",
    )
    .line(&format!(
        "webhooks: [{{ type: gate, url: \"http://{}/confirm\" }}]",
        gate.addr
    ));
    let proxy = start_canary(blue.addr, green.addr, rollout).await;
    let svc = wait_for_state(&proxy, "paused", Duration::from_secs(10)).await;
    let reason = svc["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("503"), "reason: {reason}");
    assert_eq!(
        weight_of(&svc, "green"),
        0.0,
        "the gate said no: no traffic moved"
    );
    assert!(!gate.bodies().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_event_webhook_is_told_of_a_rollback_with_its_evidence() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start_failing("green-1", 1000).await;
    let hook = Receiver::start(StatusCode::OK).await;
    let rollout = Rollout::new(
        "[{ traffic: 50%, duration: 1m }, { traffic: 100% }]",
        "{ interval: 1s, threshold: 2, min_requests: 5, metrics: [{ name: error-rate, threshold: 1 }] }",
    )
    .line(&format!(
        "webhooks: [{{ type: event, url: \"http://{}/events\" }}]",
        hook.addr
    ));
    let proxy = start_canary(blue.addr, green.addr, rollout).await;
    under_load_until(&proxy, 8, "rolled_back", Duration::from_secs(15)).await;
    let event = eventually(
        Duration::from_secs(10),
        "the rolled_back webhook",
        async || {
            hook.bodies()
                .into_iter()
                .find(|e| e["kind"] == "rolled_back")
                .ok_or_else(|| format!("{} events so far", hook.bodies().len()))
        },
    )
    .await;
    let d = &event["details"];
    assert_eq!(d["service"], "api", "{event}");
    assert_eq!(d["release"], "v2");
    assert_eq!(d["to_weights"]["green"], 0);
    assert_eq!(d["from_weights"]["green"], 50);
    assert!(
        d["evidence"]["value"].as_f64().is_some_and(|v| v >= 50.0),
        "{event}"
    );
    assert!(d["evidence"]["threshold"].is_number(), "{event}");
    assert!(d["revision"].is_u64());
}
