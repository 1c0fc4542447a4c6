//! Edge limits and malformed requests are answered by the proxy and never reach a backend
//! (SPEC §4 "Proxy-made errors", §9).

mod common;

use std::time::Duration;

use common::*;
use http::{Request, StatusCode};

async fn proxy_to(backend: &Backend, limits: &str) -> Proxy {
    let (listen, admin) = (free_port(), free_port());
    Proxy::start(&format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:{listen}" }}]
        admin: {{ address: "127.0.0.1:{admin}" }}
        {limits}
        services:
          api:
            versions:
              blue: {{ release: v1, backends: ["{addr}"], weight: 100 }}
        "#,
        addr = backend.addr,
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_is_431() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "limits: { max_header_bytes: 4096 }").await;
    let big = "a".repeat(16 * 1024);

    let reply = proxy.client().send(get_with("/", &[("x-big", &big)])).await;

    match reply {
        Ok(reply) => assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(e) => panic!("expected a 431 answer, got a transport error: {e}"),
    }
    assert_eq!(backend.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_max_request_body_is_413() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "limits: { max_request_body: 1000 }").await;
    let mut client = proxy.client();

    let small = client
        .send(Request::post("/").body(full(vec![b'x'; 1000])).unwrap())
        .await
        .unwrap();
    let large = client
        .send(Request::post("/").body(full(vec![b'x'; 5000])).unwrap())
        .await
        .unwrap();

    assert_eq!(small.status, StatusCode::OK, "exactly the limit is allowed");
    assert_eq!(
        large.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        large.text()
    );
    assert_eq!(backend.hits(), 1, "the oversized request was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_length_and_transfer_encoding_is_400_and_not_forwarded() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "").await;

    let response = raw_exchange(
        proxy.listen,
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;

    assert_eq!(raw_status(&response), Some(400), "response: {response:?}");
    assert_eq!(
        backend.hits(),
        0,
        "a smuggling-shaped request reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_line_is_400() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend, "").await;

    let response = raw_exchange(proxy.listen, b"GARBAGE\r\n\r\n", Duration::from_secs(3)).await;

    assert_eq!(raw_status(&response), Some(400), "response: {response:?}");
    assert_eq!(backend.hits(), 0);
}
