//! Failure accounting (SPEC §5, DESIGN §9): what the analysis trusts counts only what the
//! backend did wrong, and every request is recorded and logged exactly once, on either
//! transport.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Access log lines in `path` once at least `n` are there (and a moment for any extra).
async fn log_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let lines = eventually(RELOAD_TIMEOUT, &format!("{n} log lines"), async || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        match lines.len() >= n {
            true => Ok(lines),
            false => Err(format!("{} lines: {text}", lines.len())),
        }
    })
    .await;
    // The writer flushes what is queued at once; an extra line would be there by now.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(text.lines().count() >= lines.len());
    text.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_request_to_an_h2c_service_writes_one_access_log_line() {
    let backend = H2Backend::start("blue-1", None).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let proxy = Proxy::start(&format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:0" }}]
        admin: {{ address: "127.0.0.1:0" }}
        access_log: {{ path: "{}", format: json }}
        services:
          grpc:
            versions:
              blue: {{ release: v1, backends: ["{}"], weight: 100 }}
            upstream: {{ protocol: h2c }}
        "#,
        path.display(),
        backend.addr
    ))
    .await;
    // A bodyless HTTP/1.1 GET starts on the fast path, which hands h2c upstreams to hyper.
    let reply = proxy.client().get("/one").await.expect("reply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let lines = log_lines(&path, 1).await;
    assert_eq!(lines.len(), 1, "one request, one line: {lines:#?}");
    let line: serde_json::Value = serde_json::from_str(&lines[0]).expect("json line");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["service"], "grpc", "{line}");
}

/// A proxy with one service `api` on `backend`, with `extra` (YAML under the service) and
/// `limits` (a flow mapping).
async fn proxy_to(backend: SocketAddr, extra: &str, limits: &str) -> Proxy {
    Proxy::start(&format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:0" }}]
        admin: {{ address: "127.0.0.1:0" }}
        limits: {limits}
        services:
          api:
            versions:
              blue: {{ release: v1, backends: ["{backend}"], weight: 100 }}
            {extra}
        "#
    ))
    .await
}

async fn failures(proxy: &Proxy, reason: &str) -> f64 {
    proxy
        .metric_sum(
            "switchyard_request_failures_total",
            &[("service", "api"), ("reason", reason)],
        )
        .await
}

async fn all_failures(proxy: &Proxy) -> f64 {
    proxy
        .metric_sum("switchyard_request_failures_total", &[("service", "api")])
        .await
}

/// A POST that promises `len` body bytes and sends only the first few, then waits.
fn stalled_upload(host_headers: &str, len: usize) -> Vec<u8> {
    format!(
        "POST /upload HTTP/1.1\r\nHost: api.test\r\n{host_headers}Content-Length: {len}\r\n\r\nfirst bytes"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_408_and_not_the_backends_failure() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(
        backend.addr,
        "timeouts: { request: 300ms }",
        "{ client_body_timeout: 700ms }",
    )
    .await;
    let started = Instant::now();
    let reply = raw_exchange(
        proxy.listen,
        &stalled_upload("", 1000),
        Duration::from_secs(8),
    )
    .await;
    assert_eq!(raw_status(&reply), Some(408), "{reply}");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        all_failures(&proxy).await,
        0.0,
        "a slow client is not a failed backend"
    );
    let rejected = proxy
        .metric_sum(
            "switchyard_edge_rejections_total",
            &[("reason", "body_timeout")],
        )
        .await;
    assert_eq!(rejected, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_stalled_uploads_do_not_roll_back_a_healthy_canary() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = Proxy::start(&format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:0" }}]
        admin: {{ address: "127.0.0.1:0" }}
        limits: {{ client_body_timeout: 1s }}
        services:
          api:
            versions:
              blue:  {{ release: v1, backends: ["{}"], weight: 100 }}
              green: {{ release: v2, backends: ["{}"], weight: 0 }}
            overrides:
              - {{ header: x-canary, value: always, version: green }}
            timeouts: {{ request: 300ms }}
            rollout:
              stable: blue
              canary: green
              steps: [{{ traffic: 10%, duration: 5m }}, {{ traffic: 100% }}]
              analysis: {{ interval: 1m, fast_fail: {{ error_rate: 50, min_requests: 20 }} }}
        "#,
        blue.addr, green.addr
    ))
    .await;
    eventually(RELOAD_TIMEOUT, "rollout progressing", async || {
        let svc = proxy.api("/services/api").await;
        match svc["rollout"]["state"] == "progressing" {
            true => Ok(()),
            false => Err(svc["rollout"].to_string()),
        }
    })
    .await;

    // An unauthenticated client holds 25 uploads open on the canary (the override header).
    let uploads: Vec<_> = (0..25)
        .map(|_| {
            let addr = proxy.listen;
            tokio::spawn(async move {
                let req = stalled_upload("x-canary: always\r\n", 100_000);
                raw_exchange(addr, &req, Duration::from_secs(10)).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for upload in uploads {
        statuses.push(raw_status(&upload.await.expect("upload task")));
    }
    // Fast-fail judges each second; give it a few.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let svc = proxy.api("/services/api").await;
    assert_eq!(svc["rollout"]["state"], "progressing", "{}", svc["rollout"]);
    assert_eq!(all_failures(&proxy).await, 0.0);
    assert!(statuses.iter().all(|s| *s == Some(408)), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_cut_by_the_request_timeout() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(
        backend.addr,
        "timeouts: { request: 500ms }",
        "{ client_body_timeout: 2s }",
    )
    .await;
    // 12 pieces, one every 200 ms: 2.4 s of upload against a 500 ms request timeout.
    let (tx, body) = body_channel();
    let feeder = tokio::spawn(async move {
        for i in 0..12u8 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if tx.send(Bytes::from(vec![b'a' + i; 1000])).await.is_err() {
                return;
            }
        }
    });
    let req = Request::post("/upload")
        .header("content-length", "12000")
        .body(body)
        .expect("request");
    let reply = proxy.client().send(req).await.expect("reply");
    feeder.await.expect("feeder");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.echo().body_len(), 12_000);
    assert_eq!(all_failures(&proxy).await, 0.0);
}

/// A backend that sends a response head and part of the body, then resets the connection.
async fn aborting_backend(head: &'static [u8]) -> SocketAddr {
    raw_backend(move |mut s| async move {
        let _ = s.write_all(head).await;
        let _ = s.flush().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = s.set_zero_linger();
        drop(s);
    })
    .await
}

const PARTIAL_LENGTH: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\nthe first bytes of the body";
const PARTIAL_CHUNKED: &[u8] =
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_abort_mid_body_is_a_reset_failure_on_both_transports() {
    let backend = aborting_backend(PARTIAL_LENGTH).await;
    let proxy = proxy_to(backend, "", "{}").await;
    // The fast path (bodyless HTTP/1.1 GET)…
    let fast = get_once(proxy.listen, "/").await;
    assert!(
        fast.is_err(),
        "a truncated body must not look complete: {fast:?}"
    );
    eventually(RELOAD_TIMEOUT, "one reset", async || {
        match failures(&proxy, "reset").await {
            1.0 => Ok(()),
            n => Err(format!("{n} resets")),
        }
    })
    .await;
    // …and the general path (h2c), whose client sees the stream reset.
    let general = Client::h2c(proxy.listen).get("/").await;
    assert!(general.is_err(), "{general:?}");
    eventually(RELOAD_TIMEOUT, "two resets", async || {
        match failures(&proxy, "reset").await {
            2.0 => Ok(()),
            n => Err(format!("{n} resets")),
        }
    })
    .await;
    assert_eq!(all_failures(&proxy).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_client_of_a_truncated_chunked_response_sees_a_reset() {
    let backend = aborting_backend(PARTIAL_CHUNKED).await;
    let proxy = proxy_to(backend, "", "{}").await;
    let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
    s.write_all(b"GET / HTTP/1.0\r\nHost: api.test\r\n\r\n")
        .await
        .expect("write");
    // HTTP/1.0 has no chunked framing: the body ends where the connection does, so a clean
    // close would pass for a complete response.
    let mut got = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    match end {
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        other => panic!("the connection ended cleanly ({other:?}) after {text:?}"),
    }
    assert_eq!(failures(&proxy, "reset").await, 1.0);
}
