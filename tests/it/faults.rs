//! Proxy-made errors: 502 when the upstream refuses, 504 past `timeouts.request`, 503 when no
//! backend is healthy; a request that never reached a backend is retried once (SPEC §4).

use std::time::{Duration, Instant};

use crate::harness::*;
use http::StatusCode;

fn one_version(backends: &[String], extra: &str) -> ProxyBuilder {
    Proxy::builder().service(
        Service::new("api")
            .version_raw("blue", "v1", backends, "100")
            .line(extra),
    )
}

fn assert_proxy_made(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "body: {:?}", reply.text());
    assert!(
        reply.backend().is_none(),
        "{status} must come from the proxy"
    );
    assert!(
        !reply.body.is_empty() && reply.body.len() < 1024,
        "{status} should have a short plain-text body, got {:?}",
        reply.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_is_502() {
    let dead = refusing_addr();
    let proxy = one_version(&[dead.to_string()], "").start().await;
    let mut client = proxy.client();

    for _ in 0..3 {
        let reply = client.get("/").await.expect("the proxy answers");
        assert_proxy_made(&reply, StatusCode::BAD_GATEWAY);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slower_than_request_timeout_is_504_on_time() {
    let slow = Backend::start_with_delay("blue-1", Duration::from_secs(5)).await;
    let proxy = one_version(&[slow.addr.to_string()], "timeouts: { request: 500ms }")
        .start()
        .await;

    let started = Instant::now();
    let reply = proxy.client().get("/").await.expect("the proxy answers");
    let took = started.elapsed();

    assert_proxy_made(&reply, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        took >= Duration::from_millis(400),
        "504 before the timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "504 took {took:?} for a 500ms timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_retried_on_another_backend() {
    let live = Backend::start("blue-1").await;
    let dead = refusing_addr();
    let proxy = one_version(&[dead.to_string(), live.addr.to_string()], "")
        .start()
        .await;

    let tally = tally(proxy.listen, 200).await;

    assert_eq!(tally.count("blue"), 200, "{tally}");
    assert_eq!(
        live.hits(),
        200,
        "each request reached the live backend exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_without_healthy_backend_is_503() {
    let dead = refusing_addr();
    let proxy = one_version(&[dead.to_string()],
        "health_check: { path: /health, interval: 100ms, timeout: 100ms, unhealthy_threshold: 1, healthy_threshold: 1 }",
    ).start()
    .await;

    let reply = eventually(
        Duration::from_secs(10),
        "a 503 once the health check fails",
        async || {
            let reply = get_once(proxy.listen, "/").await?;
            if reply.status == StatusCode::SERVICE_UNAVAILABLE {
                Ok(reply)
            } else {
                Err(format!("{} {:?}", reply.status, reply.text()))
            }
        },
    )
    .await;

    assert_proxy_made(&reply, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply
            .text()
            .contains("no healthy backend for service api version blue"),
        "503 body: {:?}",
        reply.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_keeps_serving_after_upstream_errors() {
    let dead = refusing_addr();
    let live = Backend::start("green-1").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          broken:
            match: {{ path_prefix: /broken }}
            versions: {{ blue: {{ release: v1, backends: ["{dead}"], weight: 1 }} }}
          fine:
            versions: {{ green: {{ release: v1, backends: ["{live}"], weight: 1 }} }}
        "#,
        live = live.addr,
    ))
    .await;
    let mut client = proxy.client();

    for _ in 0..5 {
        let bad = client.get("/broken").await.expect("the proxy answers");
        assert_eq!(bad.status, StatusCode::BAD_GATEWAY);
        let good = client.get("/fine").await.expect("the proxy answers");
        assert_eq!(good.status, StatusCode::OK);
        assert_eq!(good.backend().as_deref(), Some("green-1"));
    }
}
