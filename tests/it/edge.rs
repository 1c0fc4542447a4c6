//! Edge correctness (SPEC §4, §9): the backend sees the host the request was routed by, the
//! forwarding headers are the proxy's own, TLS honours the negotiated ALPN, and TRACE is
//! refused unless allowed.

use std::time::Duration;

use crate::harness::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Two services by host, `a.test` and `b.test`, each on its own backend; `limits` verbatim.
async fn two_hosts(a: &Backend, b: &Backend, limits: &str) -> Proxy {
    Proxy::start(&format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:0" }}]
        admin: {{ address: "127.0.0.1:0" }}
        limits: {limits}
        services:
          a:
            match: {{ hosts: ["a.test"] }}
            versions:
              blue: {{ release: v1, backends: ["{}"], weight: 100 }}
          b:
            match: {{ hosts: ["b.test"] }}
            versions:
              blue: {{ release: v1, backends: ["{}"], weight: 100 }}
        "#,
        a.addr, b.addr
    ))
    .await
}

/// The backend's JSON echo in a raw HTTP/1.1 response.
fn echo_of(raw: &str) -> Value {
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("no echo ({e}) in {raw:?}"))
}

fn header(echo: &Value, name: &str) -> String {
    echo["headers"][name]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_sees_the_host_the_request_was_routed_by() {
    let (a, b) = (Backend::start("a-1").await, Backend::start("b-1").await);
    let proxy = two_hosts(&a, &b, "{}").await;
    // RFC 9112 §3.2.2: an absolute-form target's host wins over the Host header.
    let raw = raw_exchange(
        proxy.listen,
        b"GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw_status(&raw), Some(200), "{raw}");
    let echo = echo_of(&raw);
    assert_eq!(echo["backend"], "a-1", "routed by the target's host");
    assert_eq!(
        header(&echo, "host"),
        "a.test",
        "forwarded with the host it was routed by"
    );
    assert_eq!(header(&echo, "x-forwarded-host"), "a.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_the_client_are_replaced_not_kept() {
    let (a, b) = (Backend::start("a-1").await, Backend::start("b-1").await);
    let proxy = two_hosts(&a, &b, "{}").await;
    let spoofed = [
        ("host", "a.test"),
        ("x-forwarded-host", "admin.internal"),
        ("x-forwarded-proto", "https"),
    ];
    // Both transports: a bodyless GET (fast path) and a POST with a body (hyper).
    let get = proxy
        .client()
        .send(get_with("/", &spoofed))
        .await
        .expect("get");
    let mut post = http::Request::post("/");
    for (k, v) in spoofed {
        post = post.header(k, v);
    }
    let post = proxy
        .client()
        .send(post.body(full("x")).expect("request"))
        .await
        .expect("post");
    for reply in [get, post] {
        let echo = reply.echo();
        assert_eq!(echo.header("x-forwarded-host").as_deref(), Some("a.test"));
        assert_eq!(echo.header("x-forwarded-proto").as_deref(), Some("http"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_is_refused_by_default_and_forwarded_when_allowed() {
    let (a, b) = (Backend::start("a-1").await, Backend::start("b-1").await);
    let proxy = two_hosts(&a, &b, "{}").await;
    let trace = b"TRACE / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    let raw = raw_exchange(proxy.listen, trace, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&raw), Some(405), "{raw}");
    assert_eq!(a.hits(), 0, "a refused TRACE never reaches the backend");

    let allowing = two_hosts(&a, &b, "{ trace: forward }").await;
    let raw = raw_exchange(allowing.listen, trace, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&raw), Some(200), "{raw}");
    assert_eq!(a.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_negotiated_h2_is_never_served_as_http1() {
    let backend = Backend::start("blue-1").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let leaf = ca.leaf(&["api.test"]);
    let cert = write_raw(dir.path(), "api.pem", &leaf.cert_pem);
    let key = write_raw(dir.path(), "api-key.pem", &leaf.key_pem);
    let proxy = Proxy::start(&format!(
        r#"
        listeners:
          - name: public-tls
            address: "127.0.0.1:0"
            tls: {{ certificates: [{{ cert: "{}", key: "{}" }}] }}
        admin: {{ address: "127.0.0.1:0" }}
        services:
          api:
            versions:
              blue: {{ release: v1, backends: ["{}"], weight: 100 }}
        "#,
        cert.display(),
        key.display(),
        backend.addr
    ))
    .await;
    let (mut tls, info) = tls_connect(proxy.listen, Some("api.test"), ca.client_config(&[b"h2"]))
        .await
        .expect("TLS");
    assert_eq!(info.alpn.as_deref(), Some(&b"h2"[..]));
    // HTTP/1.1 bytes on a connection that agreed on HTTP/2: a bad preface, not a request.
    let _ = tls
        .write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("HTTP/1.1"), "answered as HTTP/1.1: {text:?}");
    assert_eq!(backend.hits(), 0);
}
