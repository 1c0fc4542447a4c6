//! Connect storms: a burst of requests meeting an empty pool must not open a connection
//! each. Per backend the proxy caps connects under way and open connections, queues the
//! requests beyond (bounded, with a timeout) and hands them connections as they come free.

use std::time::Duration;

use crate::harness::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// `streams` concurrent HTTP/2 requests over each of `conns` h2c connections; how many
/// got a 200.
async fn h2c_burst(
    addr: std::net::SocketAddr,
    conns: usize,
    streams: usize,
) -> (usize, Vec<String>) {
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        for i in 0..streams {
            let mut sender = sender.clone();
            tasks.push(tokio::spawn(async move {
                let req = Request::get(format!("http://{addr}/burst/{i}"))
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let answer = tokio::time::timeout(Duration::from_secs(30), async {
                    sender.ready().await.map_err(|e| e.to_string())?;
                    let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
                    let status = response.status();
                    let body = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>((status, body.to_bytes()))
                })
                .await;
                match answer {
                    Ok(Ok((StatusCode::OK, _))) => Ok(()),
                    Ok(Ok((status, body))) => {
                        Err(format!("{status} {}", String::from_utf8_lossy(&body)))
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err("no answer in 30 s".into()),
                }
            }));
        }
    }
    let mut ok = 0;
    let mut errors = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => ok += 1,
            Err(e) => errors.push(e),
        }
    }
    (ok, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_hundred_h2_streams_against_a_slow_accepting_backend_all_succeed() {
    // Accept queue of 16, one accept every 10 ms: a burst of connects loses SYNs.
    let backend = Backend::start_slow_accepting("blue-1", 16, Duration::from_millis(10)).await;
    let proxy = Proxy::start_services(&format!(
        r#"
        api:
          versions:
            blue: {{ release: v1, backends: ["{}"], weight: 100 }}
        "#,
        backend.addr
    ))
    .await;
    // Two client connections (the proxy allows 256 streams on each), 200 streams on each.
    let (ok, errors) = h2c_burst(proxy.listen, 2, 200).await;
    assert_eq!(
        ok,
        400,
        "{} failed, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let failures = proxy
        .metric_sum("switchyard_request_failures_total", &[("service", "api")])
        .await;
    assert_eq!(failures, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_connection_cap_wait_and_then_get_503() {
    // One connection allowed; the backend holds each request 1.5 s; the queue waits 300 ms.
    let backend = Backend::start_with_delay("blue-1", Duration::from_millis(1500)).await;
    let proxy = Proxy::start_services(&format!(
        r#"
        api:
          versions:
            blue: {{ release: v1, backends: ["{}"], weight: 100 }}
          upstream: {{ max_connections: 1, queue: 10, queue_timeout: 300ms }}
        "#,
        backend.addr
    ))
    .await;
    let first = tokio::spawn({
        let addr = proxy.listen;
        async move { get_once(addr, "/slow").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = get_once(proxy.listen, "/waits")
        .await
        .expect("second reply");
    assert_eq!(
        second.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        second.text()
    );
    assert!(second.text().contains("busy"), "{}", second.text());
    let first = first.await.expect("task").expect("first reply");
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        backend.hits(),
        1,
        "the queued request never reached the backend"
    );
}
