//! `serve --workers 2`: two worker threads, each accepting from every listener and serving its
//! connections alone (`proxy/src/workers.rs`). What an operator relies on: every request is
//! answered, both workers take connections (`GET /api/v1/status` `workers`), a reload reaches
//! connections on both, a restart brings up new listeners on both, SIGTERM drains both, and a
//! backend's connection cap holds across workers without starving either.

use std::time::Duration;

use crate::harness::*;
use http::StatusCode;
use serde_json::Value;

fn two_workers(builder: ProxyBuilder) -> ProxyBuilder {
    builder.arg("--workers").arg("2")
}

/// `(accepted, active)` per worker from `GET /api/v1/status`.
async fn per_worker(proxy: &Proxy) -> Vec<(u64, i64)> {
    let status = proxy.api("/status").await;
    status["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("no workers in /api/v1/status: {status}"))
        .iter()
        .map(|w: &Value| {
            (
                w["connections_accepted"].as_u64().unwrap(),
                w["connections_active"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// `n` connections at once, each with `requests` requests; every reply's backend.
async fn concurrent_connections(
    addr: std::net::SocketAddr,
    n: usize,
    requests: usize,
) -> Vec<String> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::http1(addr);
                let mut seen = Vec::new();
                for _ in 0..requests {
                    let reply = client.get("/").await.expect("request through the proxy");
                    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                    seen.push(reply.backend().unwrap_or_default());
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_answer_every_request_and_both_take_connections() {
    let backend = Backend::start("blue-1").await;
    let proxy = two_workers(one_service(backend.addr)).start().await;
    assert_eq!(
        per_worker(&proxy).await.len(),
        2,
        "two workers in the status"
    );

    // Bursts of connections at once, until both workers have accepted some: one listening
    // socket, whichever worker is free takes the next connection.
    let mut answered = 0;
    for round in 0..10 {
        let replies = concurrent_connections(proxy.listen, 100, 5).await;
        assert!(replies.iter().all(|b| b == "blue-1"), "round {round}");
        answered += replies.len();
        let workers = per_worker(&proxy).await;
        if workers.iter().all(|(accepted, _)| *accepted > 0) {
            let total: u64 = workers.iter().map(|(a, _)| a).sum();
            assert!(
                total >= 100 * (round + 1) as u64,
                "{workers:?}: fewer accepted than opened"
            );
            assert!(answered >= 500);
            // The connections closed: nothing stays counted open.
            eventually(Duration::from_secs(5), "connections to close", async || {
                let w = per_worker(&proxy).await;
                if w.iter().all(|(_, active)| *active == 0) {
                    Ok(())
                } else {
                    Err(format!("{w:?}"))
                }
            })
            .await;
            return;
        }
    }
    panic!(
        "one worker took every connection: {:?}",
        per_worker(&proxy).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_follow_a_reload_and_a_restart_serves_a_new_listener() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let mut proxy = two_workers(one_service(blue.addr)).start().await;
    // Kept-alive connections on both workers, opened before the reload.
    let mut kept: Vec<Client> = Vec::new();
    for _ in 0..40 {
        let mut c = proxy.client();
        assert_eq!(
            c.get("/").await.unwrap().backend().as_deref(),
            Some("blue-1")
        );
        kept.push(c);
        if per_worker(&proxy)
            .await
            .iter()
            .all(|(_, active)| *active > 0)
        {
            break;
        }
    }
    assert!(
        per_worker(&proxy)
            .await
            .iter()
            .all(|(_, active)| *active > 0),
        "kept-alive connections on both workers: {:?}",
        per_worker(&proxy).await
    );

    // A reload that moves the service to green and adds a listener.
    let next = two_workers(one_service(green.addr))
        .listener("public", "127.0.0.1:0")
        .listener("extra", "127.0.0.1:0");
    proxy.rewrite_config(&next.yaml());
    eventually(Duration::from_secs(10), "the reload to apply", async || {
        let s = proxy.api("/status").await;
        if s["reloads"]["ok"].as_u64() >= Some(1) {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
    for (i, c) in kept.iter_mut().enumerate() {
        let reply = c
            .get("/")
            .await
            .expect("kept-alive connection after the reload");
        assert_eq!(
            reply.backend().as_deref(),
            Some("green-1"),
            "connection {i}"
        );
    }
    let replies = concurrent_connections(proxy.listen, 50, 2).await;
    assert!(replies.iter().all(|b| b == "green-1"), "{replies:?}");
    // Listeners are bound at start: the status says a restart is needed for the new one.
    let status = proxy.api("/status").await;
    assert!(
        status["restart_needed"].to_string().contains("listeners"),
        "{status}"
    );

    // A crash and a restart bind both listeners, and both workers serve each.
    drop(kept);
    proxy.kill9();
    proxy.restart().await;
    for name in ["public", "extra"] {
        let addr = proxy.listener(name);
        let replies = concurrent_connections(addr, 50, 2).await;
        assert!(
            replies.iter().all(|b| b == "green-1"),
            "{name}: {replies:?}"
        );
    }
    assert_eq!(per_worker(&proxy).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_drain_in_flight_requests_on_both_at_sigterm() {
    let slow = Backend::start_with_delay("blue-1", Duration::from_secs(2)).await;
    let mut proxy = two_workers(one_service(slow.addr)).start().await;
    // One slow request per connection, until both workers hold some.
    let mut in_flight = Vec::new();
    for _ in 0..40 {
        let addr = proxy.listen;
        in_flight.push(tokio::spawn(async move {
            Client::http1(addr).get("/slow").await
        }));
        let started = in_flight.len();
        eventually(
            Duration::from_secs(5),
            "the request to arrive",
            async || {
                if slow.hits() >= started {
                    Ok(())
                } else {
                    Err(format!("{} of {started}", slow.hits()))
                }
            },
        )
        .await;
        if per_worker(&proxy)
            .await
            .iter()
            .all(|(_, active)| *active > 0)
        {
            break;
        }
    }
    let workers = per_worker(&proxy).await;
    assert!(
        workers.iter().all(|(_, active)| *active > 0),
        "in-flight requests on both workers: {workers:?}"
    );

    proxy.sigterm();

    for (i, request) in in_flight.into_iter().enumerate() {
        let reply = tokio::time::timeout(Duration::from_secs(15), request)
            .await
            .unwrap_or_else(|_| panic!("in-flight request {i} did not finish"))
            .expect("client task")
            .unwrap_or_else(|e| panic!("in-flight request {i} failed across SIGTERM: {e}"));
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
    }
    let status = proxy
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("switchyard did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

/// The backend's connection cap counts both workers' connections; a worker whose idle pool is
/// empty while the other holds the one allowed connection takes it instead of waiting out the
/// queue timeout (503 `upstream busy`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_cap_of_one_serves_clients_on_both_workers() {
    let backend = Backend::start("blue-1").await;
    let service = Service::blue("api", backend.addr)
        .line("upstream: { max_connections: 1, queue_timeout: 2s }");
    let proxy = two_workers(Proxy::builder().service(service)).start().await;
    // Sequential connections, so no request waits for another: each finds the one
    // connection idle, on whichever worker used it last.
    for i in 0..200 {
        let reply = get_once(proxy.listen, "/")
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "request {i}: {}",
            reply.text()
        );
        if i >= 10 && per_worker(&proxy).await.iter().all(|(a, _)| *a > 0) {
            break;
        }
    }
    let workers = per_worker(&proxy).await;
    assert!(
        workers.iter().all(|(accepted, _)| *accepted > 0),
        "connections on both workers: {workers:?}"
    );
    // And at once: the cap queues them, nothing fails.
    let replies = concurrent_connections(proxy.listen, 20, 3).await;
    assert_eq!(replies.len(), 60);
}
