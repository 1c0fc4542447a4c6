//! Memory stays bounded when nothing scrapes `/metrics` (SPEC §5, issue 3).
//!
//! Recordings are fixed-size atomics resolved when the table is compiled, and the exporter's
//! recorder gets no per-request samples, so a long run with no scrape must not grow the
//! process. The test warms the proxy up (pools, allocator arenas, thread stacks), reads its
//! RSS, sends 200,000 requests over parallel keep-alive connections, and reads it again.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::*;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Requests measured; the warm-up comes on top.
const REQUESTS: usize = 200_000;
const WARM_UP: usize = 20_000;
/// Parallel keep-alive client connections.
const CONNECTIONS: usize = 8;
/// Allowed RSS growth over the measured requests.
const MAX_GROWTH_KIB: u64 = 10 * 1024;

/// A backend that answers `200 ok` with `x-backend: name` and nothing else: the harness's
/// echo backend builds JSON per request, which would make this test slow for no gain.
async fn plain_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                    r.headers_mut()
                        .insert("x-backend", http::HeaderValue::from_static(name));
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Sends `n` `GET /` over `conns` keep-alive connections; panics on any non-200.
async fn send(addr: SocketAddr, n: usize, conns: usize) {
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            tokio::spawn(async move {
                let mut client = Client::http1(addr);
                for i in (c..n).step_by(conns) {
                    let reply = client
                        .get("/")
                        .await
                        .unwrap_or_else(|e| panic!("request {i}: {e}"));
                    assert_eq!(reply.status, StatusCode::OK, "request {i}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_stays_flat_over_200k_requests_without_scrapes() {
    let blue = plain_backend("blue-1").await;
    let green = plain_backend("green-1").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          api:
            versions:
              blue:  {{ release: v1, backends: ["{blue}"], weight: 90 }}
              green: {{ release: v2, backends: ["{green}"], weight: 10 }}
        "#,
    ))
    .await;

    send(proxy.listen, WARM_UP, CONNECTIONS).await;
    let before = rss_kib(proxy.pid());
    let started = Instant::now();
    send(proxy.listen, REQUESTS, CONNECTIONS).await;
    let elapsed = started.elapsed();
    // Let anything the exporter's upkeep would do happen before the second reading.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_kib(proxy.pid());
    let growth = after.saturating_sub(before);
    eprintln!(
        "{REQUESTS} requests in {elapsed:.1?} ({:.0} req/s): RSS {before} KiB → {after} KiB \
         (+{growth} KiB)",
        REQUESTS as f64 / elapsed.as_secs_f64()
    );
    assert!(
        growth < MAX_GROWTH_KIB,
        "RSS grew {growth} KiB (from {before} to {after}) over {REQUESTS} requests with no \
         scrape; allowed {MAX_GROWTH_KIB} KiB"
    );

    // The first scrape, after the run: every request was counted.
    let samples = parse_metrics(&proxy.admin_get("/metrics").await.text());
    let counted: f64 = samples
        .iter()
        .filter(|s| s.name == "switchyard_requests_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(counted as usize, WARM_UP + REQUESTS);
}
