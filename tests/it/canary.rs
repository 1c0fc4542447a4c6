//! Canaries users never notice (SPEC §13): the safety net replays a failed canary request on
//! the stable, mirror steps judge the canary on copies, and the rollout counts the users it
//! affected — all through the real binary, with backends that fail on purpose.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::rollout::{api, rollout_proxy, start_canary, under_load_until, with_canary};
use http::{Method, Request, StatusCode};
use serde_json::Value;

/// Half the traffic on the canary for ten minutes, and nothing that rolls it back.
const HALF: &str = "[{ traffic: 50%, duration: 10m }, { traffic: 100% }]";
const NO_ROLLBACK: &str = "{ interval: 1m, threshold: 100, fast_fail: off }";
const SAFETY_NET: &str = "safety_net: { retry_on_stable: true, budget: 50% }";

/// `n` requests built by `make(i)` over 4 connections (`h2`: prior-knowledge HTTP/2, served
/// by the general path; else HTTP/1.1 on the fast path); the status and answering version of
/// each.
async fn send_all(
    addr: SocketAddr,
    n: usize,
    h2: bool,
    make: impl Fn(usize) -> Request<Body> + Send + Sync + 'static,
) -> Vec<(StatusCode, String)> {
    let make = std::sync::Arc::new(make);
    let mut tasks = Vec::new();
    for t in 0..4 {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = if h2 {
                Client::h2c(addr)
            } else {
                Client::http1(addr)
            };
            let mut out = Vec::new();
            for i in (t..n).step_by(4) {
                let reply = client.send(make(i)).await.expect("a response");
                let version = reply.version().unwrap_or_default();
                out.push((reply.status, version));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

fn failed(replies: &[(StatusCode, String)]) -> usize {
    replies.iter().filter(|(s, _)| !s.is_success()).count()
}

async fn canary_failures(proxy: &Proxy) -> f64 {
    proxy
        .metric_sum("switchyard_request_failures_total", &[("version", "green")])
        .await
}

async fn retries(proxy: &Proxy, result: &str) -> f64 {
    proxy
        .metric_sum(
            "switchyard_safety_net_retries_total",
            &[("service", "api"), ("result", result)],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_the_safety_net_every_get_succeeds_while_the_canary_failures_count() {
    let (_blue, green, proxy) =
        with_canary((0, 300), Rollout::new(HALF, NO_ROLLBACK).line(SAFETY_NET)).await;
    // Both transports: the fast HTTP/1.1 path and hyper's (HTTP/2).
    let mut replies = send_all(proxy.listen, 150, false, |_| get("/")).await;
    replies.extend(send_all(proxy.listen, 150, true, |_| get("/")).await);
    assert_eq!(failed(&replies), 0, "a client saw a failure: {replies:?}");
    let on_green = replies.iter().filter(|(_, v)| v == "green").count();
    assert!(on_green > 50, "the canary answered {on_green} of 300");

    // The canary's failures are still its own, in the metrics analysis reads.
    let failures = canary_failures(&proxy).await;
    assert!(
        (30.0..=70.0).contains(&failures),
        "{failures} canary failures counted (30% of ~150 expected)"
    );
    assert_eq!(retries(&proxy, "ok").await, failures);
    // The canary saw the requests it answered and the ones it failed, once each.
    assert_eq!(green.hits(), on_green + failures as usize);
    let svc = proxy.api("/services/api").await;
    assert_eq!(
        svc["rollout"]["safety_net"]["retries"]["ok"], failures as u64,
        "{svc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn posts_with_bodies_are_never_replayed() {
    let (blue, green, proxy) =
        with_canary((0, 300), Rollout::new(HALF, NO_ROLLBACK).line(SAFETY_NET)).await;
    let post = |_| {
        Request::builder()
            .method(Method::POST)
            .uri("/orders")
            .body(full("{\"item\": 1}"))
            .expect("request")
    };
    let replies = send_all(proxy.listen, 200, false, post).await;
    let seen = failed(&replies);
    assert!(seen > 10, "clients saw {seen} failures of 200 POSTs");
    assert_eq!(retries(&proxy, "unsafe").await, seen as f64);
    assert_eq!(retries(&proxy, "ok").await, 0.0);
    // Each POST reached one backend exactly once.
    assert_eq!(blue.hits() + green.hits(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_safety_net_clients_see_the_canary_failures() {
    let (_blue, _green, proxy) = with_canary((0, 300), Rollout::new(HALF, NO_ROLLBACK)).await;
    let replies = send_all(proxy.listen, 300, false, |_| get("/")).await;
    let seen = failed(&replies);
    assert_eq!(seen as f64, canary_failures(&proxy).await);
    assert!(seen > 20, "clients saw {seen} failures");
    assert_eq!(retries(&proxy, "ok").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_canary_is_still_rolled_back_and_no_client_saw_an_error() {
    let analysis = "{ interval: 1s, threshold: 2, min_requests: 5, metrics: [{ name: error-rate, threshold: 1 }] }";
    let rollout = Rollout::new(HALF, analysis).line(SAFETY_NET);
    let (_blue, _green, proxy) = with_canary((0, 300), rollout).await;
    let (svc, report) = under_load_until(&proxy, 4, "rolled_back", Duration::from_secs(30)).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.tally.count("green") > 0, "{}", report.tally);
    let reason = svc["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("error-rate"), "{reason}");
    // The rollback says how many users it cost: none.
    let impact = &svc["rollout"]["impact"];
    assert_eq!(impact["users_failed"], 0, "{impact}");
    assert!(impact["users_on_canary"].as_u64() >= Some(1), "{impact}");
    let events = proxy.api("/events").await;
    let rolled_back = events["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["kind"] == "rolled_back"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        rolled_back["details"]["impact"]["users_failed"], 0,
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_budget_keeps_a_dead_canary_from_doubling_the_stable_load() {
    let (blue, green, proxy) = with_canary(
        (0, 1000),
        Rollout::new(
            "[{ traffic: 100%, duration: 10m }, { traffic: 100% }]",
            NO_ROLLBACK,
        )
        .line("safety_net: { retry_on_stable: true, budget: 20% }"),
    )
    .await;
    let started = Instant::now();
    let replies = send_all(proxy.listen, 400, false, |_| get("/")).await;
    let seconds = started.elapsed().as_secs_f64().ceil();
    // 20% of the canary's requests, plus the floor of 10 a second.
    let allowed = 400.0 * 0.2 + 10.0 * seconds;
    let replayed = blue.hits() as f64;
    assert!(
        replayed <= allowed,
        "{replayed} replays in {seconds}s (allowed {allowed})"
    );
    assert!(replayed >= 40.0, "only {replayed} replays");
    assert_eq!(green.hits(), 400);
    let over = retries(&proxy, "budget").await;
    assert_eq!(over, failed(&replies) as f64);
    assert_eq!(retries(&proxy, "ok").await, replayed);
}

/// 200 sticky users, three requests each, against a canary that fails everything at 50%:
/// how many users the proxy says received a failure, next to how many the client counted.
async fn impact_with(safety_net: &str) -> (Value, usize) {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start_failing("green-1", 1000).await;
    let service = api(blue.addr, green.addr, "v2")
        .sticky_header("x-user-id")
        .rollout(Rollout::new(HALF, NO_ROLLBACK).line(safety_net));
    let proxy = rollout_proxy(service).start().await;
    let user = |i: usize| format!("user-{}", i % 200);
    let replies = send_all(proxy.listen, 600, false, move |i| {
        get_with("/", &[("x-user-id", &user(i))])
    })
    .await;
    // send_all's task t sends i = t, t+4, …: rebuild which user each reply was for.
    let mut users_failed = std::collections::BTreeSet::new();
    let mut k = 0;
    for t in 0..4 {
        for i in (t..600).step_by(4) {
            if !replies[k].0.is_success() {
                users_failed.insert(i % 200);
            }
            k += 1;
        }
    }
    let svc = proxy.api("/services/api").await;
    (svc["rollout"]["impact"].clone(), users_failed.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_users_who_saw_a_failure_are_counted_and_the_safety_net_makes_them_none() {
    let (impact, counted) = impact_with("").await;
    let reported = impact["users_failed"].as_u64().unwrap_or_default() as f64;
    assert!(counted > 50, "{counted} users failed");
    let error = (reported - counted as f64).abs() / counted as f64;
    assert!(
        error <= 0.05,
        "reported {reported}, counted {counted}: {impact}"
    );
    let total = impact["users_total"].as_u64().unwrap_or_default() as f64;
    assert!((total - 200.0).abs() <= 10.0, "{impact}");
    assert!(
        impact["requests_failed"].as_u64() >= Some(counted as u64),
        "{impact}"
    );

    let (impact, counted) =
        impact_with("safety_net: { retry_on_stable: true, budget: 100% }").await;
    assert_eq!(counted, 0);
    assert_eq!(impact["users_failed"], 0, "{impact}");
    assert_eq!(impact["users_failed_pct"], 0.0, "{impact}");
    let on_canary = impact["users_on_canary"].as_u64().unwrap_or_default() as f64;
    assert!((on_canary - 100.0).abs() <= 15.0, "{impact}");
}

/// A mirror step of ten minutes first: users stay on the stable, the canary gets copies.
const MIRROR_FIRST: &str =
    "[{ mirror: 100%, duration: 10m }, { traffic: 50%, duration: 10m }, { traffic: 100% }]";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn during_a_mirror_step_users_see_only_the_stable_and_the_canary_gets_copies() {
    let (blue, green, proxy) = with_canary((0, 0), Rollout::new(MIRROR_FIRST, NO_ROLLBACK)).await;
    let mut replies = send_all(proxy.listen, 100, false, |_| get("/")).await;
    replies.extend(send_all(proxy.listen, 100, true, |_| get("/")).await);
    assert!(
        replies.iter().all(|(s, v)| s.is_success() && v == "blue"),
        "{replies:?}"
    );
    eventually(
        Duration::from_secs(10),
        "200 copies on the canary",
        async || match green.hits() {
            200 => Ok(()),
            n => Err(format!("{n} copies")),
        },
    )
    .await;
    assert_eq!(blue.hits(), 200);
    // A copy is recorded once its answer is read, a moment after the canary counted it.
    eventually(Duration::from_secs(10), "200 copies recorded", async || {
        let sent = proxy.api("/services/api").await["rollout"]["mirror"]["sent"].as_u64();
        let on_green = proxy
            .metric_sum("switchyard_requests_total", &[("version", "green")])
            .await;
        match (sent, on_green) {
            (Some(200), 200.0) => Ok(()),
            n => Err(format!("{n:?} recorded")),
        }
    })
    .await;
    let svc = proxy.api("/services/api").await;
    let rollout = &svc["rollout"];
    assert_eq!(rollout["mode"], "mirror", "{rollout}");
    assert_eq!(rollout["mirror_pct"], 100, "{rollout}");
    assert_eq!(rollout["mirror"]["sent"], 200, "{rollout}");
    assert_eq!(rollout["impact"]["users_on_canary"], 0, "{rollout}");
    let green_weight = svc["versions"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "green"))
        .and_then(|v| v["weight"].as_f64());
    assert_eq!(green_weight, Some(0.0), "{svc}");
    // The copies are the canary's requests in the recordings the analysis reads.
    let on_green = proxy
        .metric_sum("switchyard_requests_total", &[("version", "green")])
        .await;
    assert_eq!(on_green, 200.0);
    let sent = proxy
        .metric_sum("switchyard_mirror_requests_total", &[("result", "sent")])
        .await;
    assert_eq!(sent, 200.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_that_sleeps_two_seconds_never_delays_the_original() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start_with_delay("green-1", Duration::from_secs(2)).await;
    let proxy = start_canary(
        blue.addr,
        green.addr,
        Rollout::new(MIRROR_FIRST, NO_ROLLBACK),
    )
    .await;
    let mut client = proxy.client();
    let mut took = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let reply = client.get("/").await.expect("a response");
        took.push(started.elapsed());
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.version().as_deref(), Some("blue"));
    }
    // Had any original waited for its copy, it would have taken the canary's 2 s; the bounds
    // leave room for a busy machine's scheduling.
    took.sort();
    let (median, slowest) = (took[took.len() / 2], took[took.len() - 1]);
    assert!(median < Duration::from_millis(200), "median {median:?}");
    assert!(slowest < Duration::from_millis(1900), "slowest {slowest:?}");
    eventually(
        Duration::from_secs(10),
        "copies on the canary",
        async || match green.hits() {
            50 => Ok(()),
            n => Err(format!("{n} copies")),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_that_resets_every_connection_is_rolled_back_in_the_mirror_step_unseen() {
    let blue = Backend::start("blue-1").await;
    let green = raw_backend(|stream| async move {
        let _ = stream.set_zero_linger();
        drop(stream);
    })
    .await;
    let proxy = start_canary(
        blue.addr,
        green,
        Rollout::new(
            MIRROR_FIRST,
            "{ interval: 1m, threshold: 5, fast_fail: { error_rate: 50, min_requests: 20 } }",
        ),
    )
    .await;
    let (svc, report) = under_load_until(&proxy, 4, "rolled_back", Duration::from_secs(30)).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.tally.count("green"), 0, "{}", report.tally);
    assert_eq!(svc["rollout"]["step"], 1, "rolled back in the mirror step");
    let reason = svc["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("fast-fail"), "{reason}");
    assert_eq!(svc["rollout"]["impact"]["users_on_canary"], 0);
    let failed = proxy
        .metric_sum("switchyard_mirror_requests_total", &[("result", "failed")])
        .await;
    assert!(failed >= 20.0, "{failed} failed copies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_over_max_body_are_not_mirrored() {
    let (_blue, green, proxy) = with_canary(
        (0, 0),
        Rollout::new(MIRROR_FIRST, NO_ROLLBACK).line("mirror: { max_body: 16KiB }"),
    )
    .await;
    let post = |size: usize| {
        move |_| {
            Request::builder()
                .method(Method::PUT)
                .uri("/upload")
                .body(full(pattern_bytes(size)))
                .expect("request")
        }
    };
    let small = send_all(proxy.listen, 20, false, post(1000)).await;
    let large = send_all(proxy.listen, 20, false, post(64 * 1024)).await;
    assert!(small
        .iter()
        .chain(&large)
        .all(|(s, v)| s.is_success() && v == "blue"));
    eventually(
        Duration::from_secs(10),
        "the small copies",
        async || match green.hits() {
            20 => Ok(()),
            n => Err(format!("{n} copies")),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(green.hits(), 20, "a large body was mirrored");
    // The original's body arrived whole: the blue backend echoes its length.
    let mut client = proxy.client();
    let reply = client.send(post(5000)(0)).await.expect("a response");
    assert_eq!(reply.echo().body_len(), 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_put_whose_body_was_kept_is_replayed_whole_and_one_streamed_without_a_length_is_not() {
    let (_blue, _green, proxy) = with_canary(
        (0, 1000),
        Rollout::new(HALF, NO_ROLLBACK).line("safety_net: { retry_on_stable: true, budget: 100% }"),
    )
    .await;
    let body = pattern_bytes(2000);
    let hash = fnv1a(&body).to_string();
    let mut client = proxy.client();
    for _ in 0..40 {
        let put = Request::builder()
            .method(Method::PUT)
            .uri("/item")
            .body(full(body.clone()))
            .expect("request");
        let reply = client.send(put).await.expect("a response");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.version().as_deref(), Some("blue"));
        // The stable got the whole body, replayed or not.
        assert_eq!(reply.echo().body_len(), 2000);
        assert_eq!(reply.echo().0["body_fnv1a"], hash.as_str());
    }
    assert!(retries(&proxy, "ok").await >= 5.0);
    // A chunked body has no length to keep: never replayed.
    let mut unsafe_seen = 0;
    for _ in 0..40 {
        let put = Request::builder()
            .method(Method::PUT)
            .uri("/item")
            .body(chunked(body.clone(), 500))
            .expect("request");
        let reply = client.send(put).await.expect("a response");
        unsafe_seen += usize::from(!reply.status.is_success());
    }
    assert!(unsafe_seen > 0);
    assert_eq!(retries(&proxy, "unsafe").await, unsafe_seen as f64);
}
