//! Graceful shutdown: SIGTERM stops accepting, lets in-flight requests finish, exits 0
//! (SPEC §4 "Graceful shutdown").

use std::time::Duration;

use crate::harness::*;
use http::StatusCode;

fn config(backend: &Backend) -> ProxyBuilder {
    one_service(backend.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_zero() {
    let slow = Backend::start_with_delay("blue-1", Duration::from_secs(2)).await;
    let mut proxy = config(&slow).start().await;
    let addr = proxy.listen;
    let in_flight = tokio::spawn(async move { Client::http1(addr).get("/slow").await });
    eventually(
        Duration::from_secs(5),
        "the slow request to reach the backend",
        async || {
            if slow.hits() >= 1 {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    )
    .await;

    proxy.sigterm();

    let reply = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("in-flight request did not finish")
        .expect("client task")
        .expect("in-flight request failed across SIGTERM");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.backend().as_deref(), Some("blue-1"));
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("switchyard did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_proxy_exits_zero_on_sigterm() {
    let backend = Backend::start("blue-1").await;
    let mut proxy = config(&backend).start().await;
    // An idle kept-alive connection must not hold shutdown up.
    let mut client = proxy.client();
    assert_eq!(client.get("/").await.unwrap().status, StatusCode::OK);

    proxy.sigterm();

    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("switchyard did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}
