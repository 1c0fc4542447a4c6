//! Backends and clients that misbehave: the proxy answers within its timeouts, counts each
//! failure with the right reason, never crashes, and keeps serving everyone else.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A proxy in front of one bad backend (`bad`) and, as a second service on `/good`, a good one.
async fn proxy_with(bad: SocketAddr, good: &Backend, timeouts: &str) -> Proxy {
    Proxy::start(&format!(
        r#"
        listeners:
          - {{ name: public, address: "127.0.0.1:0" }}
        admin:
          address: "127.0.0.1:0"
        services:
          bad:
            match: {{ path_prefix: / }}
            versions:
              blue: {{ release: v1, backends: ["{bad}"], weight: 100 }}
            timeouts: {timeouts}
          good:
            match: {{ path_prefix: /good }}
            versions:
              blue: {{ release: v1, backends: ["{}"], weight: 100 }}
        "#,
        good.addr
    ))
    .await
}

async fn assert_still_serving(proxy: &Proxy) {
    let reply = get_once(proxy.listen, "/good").await.expect("good service");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

async fn failures(proxy: &Proxy, reason: &str) -> u64 {
    let metrics = proxy.admin_get("/metrics").await.text();
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("switchyard_request_failures_total{")
                && l.contains(r#"service="bad""#)
                && l.contains(&format!(r#"reason="{reason}""#))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_response_is_502_counted_as_reset() {
    let bad = raw_backend(|mut s| async move {
        let _ = s.write_all(b"SURPRISE this is not http\r\n\r\n").await;
    })
    .await;
    let good = Backend::start("good").await;
    let proxy = proxy_with(bad, &good, "{ request: 2s }").await;
    let reply = get_once(proxy.listen, "/x").await.expect("an answer");
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(failures(&proxy, "reset").await, 1);
    assert_still_serving(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_accepts_and_hangs_is_504_on_time_counted_as_timeout() {
    let bad = raw_backend(|s| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    })
    .await;
    let good = Backend::start("good").await;
    let proxy = proxy_with(bad, &good, "{ request: 500ms }").await;
    let started = Instant::now();
    let reply = get_once(proxy.listen, "/x").await.expect("an answer");
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "held {:?}",
        started.elapsed()
    );
    assert_eq!(failures(&proxy, "timeout").await, 1);
    assert_still_serving(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_response_header_is_502() {
    let bad = raw_backend(|mut s| async move {
        let mut head = b"HTTP/1.1 200 OK\r\nx-huge: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 512 * 1024));
        head.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
        let _ = s.write_all(&head).await;
    })
    .await;
    let good = Backend::start("good").await;
    let proxy = proxy_with(bad, &good, "{ request: 2s }").await;
    let reply = get_once(proxy.listen, "/x").await.expect("an answer");
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_still_serving(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mid_body_ends_that_response_only() {
    let bad = raw_backend(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\npartial body")
            .await;
        let _ = s.flush().await;
        // Abort: the rest of the promised body never comes.
        // Zero linger turns the close into a reset (and does not block).
        #[allow(deprecated)]
        let _ = s.set_linger(Some(Duration::ZERO));
        drop(s);
    })
    .await;
    let good = Backend::start("good").await;
    let proxy = proxy_with(bad, &good, "{ request: 2s }").await;
    let started = Instant::now();
    // The head was already forwarded, so the client sees a truncated body, promptly.
    let result = get_once(proxy.listen, "/x").await;
    assert!(
        result.is_err(),
        "a truncated body must not look complete: {:?}",
        result.map(|r| r.status)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_still_serving(&proxy).await;
}

/// A minimal keep-alive backend on a fixed address; abort the handle to take it down.
async fn serve_on(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let tcp = TcpListener::bind(addr).await.expect("rebind backend port");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            let r = b"HTTP/1.1 200 OK\r\nx-backend: blue-1\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(r).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_goes_down_and_comes_back_gets_traffic_again() {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let up = serve_on(addr).await;
    let proxy = Proxy::start(&format!(
        r#"
        listeners:
          - {{ name: public, address: "127.0.0.1:0" }}
        admin:
          address: "127.0.0.1:0"
        services:
          api:
            versions:
              blue: {{ release: v1, backends: ["{addr}"], weight: 100 }}
            health_check: {{ path: /health, interval: 100ms, timeout: 200ms, unhealthy_threshold: 2, healthy_threshold: 2 }}
        "#
    ))
    .await;
    assert_eq!(
        get_once(proxy.listen, "/").await.unwrap().status,
        StatusCode::OK
    );

    up.abort();
    eventually(
        Duration::from_secs(10),
        "503 while the backend is down",
        async || {
            let r = get_once(proxy.listen, "/").await?;
            if r.status == StatusCode::SERVICE_UNAVAILABLE {
                Ok(())
            } else {
                Err(format!("{}", r.status))
            }
        },
    )
    .await;

    let _back = serve_on(addr).await;
    eventually(Duration::from_secs(10), "200 once it is back", async || {
        let r = get_once(proxy.listen, "/").await?;
        if r.status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("{}", r.status))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_half_close_or_vanish_do_not_hurt_anyone_else() {
    let slow = Backend::start_with_delay("slow", Duration::from_millis(300)).await;
    let good = Backend::start("good").await;
    let proxy = proxy_with(slow.addr, &good, "{ request: 5s }").await;

    // Vanishes mid-body: promises 1 MB, sends 10 bytes, goes away.
    for _ in 0..20 {
        let mut s = TcpStream::connect(proxy.listen).await.unwrap();
        let _ = s
            .write_all(b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 1000000\r\n\r\n0123456789")
            .await;
        drop(s);
    }
    // Vanishes while waiting for a slow response.
    for _ in 0..20 {
        let mut s = TcpStream::connect(proxy.listen).await.unwrap();
        let _ = s.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n").await;
        drop(s);
    }
    // Half-closes after a complete request. Like nginx (without proxy_ignore_client_abort),
    // the proxy takes the FIN as the client leaving: the exchange ends promptly either way,
    // and nothing is left hanging.
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    assert!(
        ended.is_ok(),
        "the proxy held a half-closed connection open"
    );

    assert_still_serving(&proxy).await;
    let r = get_once(proxy.listen, "/x").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
}
