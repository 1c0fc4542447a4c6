//! What the backend sees: hop-by-hop headers stripped, X-Forwarded-* set, bodies intact in
//! both directions (SPEC §4 "Proxy behaviour").

use crate::harness::*;
use http::{Request, StatusCode};

async fn proxy_to(backend: &Backend) -> Proxy {
    one_service(backend.addr).start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_do_not_reach_the_backend() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend).await;

    let reply = proxy
        .client()
        .send(get_with(
            "/",
            &[
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("proxy-connection", "keep-alive"),
                ("x-kept", "yes"),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let echo = reply.echo();

    for name in [
        "x-secret",
        "keep-alive",
        "te",
        "proxy-connection",
        "upgrade",
        "trailer",
    ] {
        assert_eq!(
            echo.header(name),
            None,
            "{name} was forwarded; backend saw {:?}",
            echo.0["headers"]
        );
    }
    // The proxy may speak its own Connection header upstream, never the client's.
    if let Some(connection) = echo.header("connection") {
        assert!(
            !connection.contains("x-secret"),
            "client's Connection forwarded: {connection}"
        );
    }
    assert_eq!(
        echo.header("x-kept").as_deref(),
        Some("yes"),
        "end-to-end headers pass"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_describe_the_client() {
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend).await;
    let mut client = proxy.client();

    let first_hop = client
        .send(get_with("/", &[("host", "shop.example.com")]))
        .await
        .unwrap()
        .echo();
    let behind_another_proxy = client
        .send(get_with(
            "/",
            &[
                ("host", "shop.example.com"),
                ("x-forwarded-for", "203.0.113.7"),
            ],
        ))
        .await
        .unwrap()
        .echo();

    assert_eq!(
        first_hop.header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        first_hop.header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(
        first_hop.header("x-forwarded-host").as_deref(),
        Some("shop.example.com")
    );
    let chain: Vec<String> = behind_another_proxy
        .header("x-forwarded-for")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    assert_eq!(
        chain,
        ["203.0.113.7", "127.0.0.1"],
        "client value kept, proxy's peer appended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_post_body_arrives_intact() {
    const SIZE: usize = 5 * 1024 * 1024;
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend).await;
    let data = pattern_bytes(SIZE);
    let mut client = proxy.client();

    let with_length = client
        .send(Request::post("/upload").body(full(data.clone())).unwrap())
        .await
        .unwrap();
    let chunked_upload = client
        .send(
            Request::post("/upload")
                .body(chunked(data.clone(), 64 * 1024))
                .unwrap(),
        )
        .await
        .unwrap();

    for (what, reply) in [("content-length", with_length), ("chunked", chunked_upload)] {
        assert_eq!(reply.status, StatusCode::OK, "{what}: {}", reply.text());
        let echo = reply.echo();
        assert_eq!(echo.method(), "POST");
        assert_eq!(echo.body_len(), SIZE as u64, "{what} body length");
        assert_eq!(echo.body_hash(), fnv1a(&data), "{what} body bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_response_body_arrives_intact() {
    const SIZE: usize = 5 * 1024 * 1024;
    let backend = Backend::start("blue-1").await;
    let proxy = proxy_to(&backend).await;

    let reply = proxy
        .client()
        .send(get_with(
            "/download",
            &[("x-response-bytes", &SIZE.to_string())],
        ))
        .await
        .unwrap();

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), SIZE);
    assert_eq!(fnv1a(&reply.body), fnv1a(&pattern_bytes(SIZE)));
}
