//! HTTP/2 with prior knowledge (h2c) on the same plain listener as HTTP/1.1 (SPEC §3).

use crate::harness::*;
use http::StatusCode;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prior_knowledge_h2_client_is_served() {
    let backend = Backend::start("blue-1").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          api:
            match: {{ hosts: ["api.example.com"] }}
            versions:
              blue: {{ release: v1, backends: ["{addr}"], weight: 100 }}
        "#,
        addr = backend.addr,
    ))
    .await;
    let mut client = Client::h2c(proxy.listen);

    for i in 0..20 {
        let reply = client
            .send(get_with(
                &format!("/h2/{i}"),
                &[("host", "api.example.com")],
            ))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.backend().as_deref(), Some("blue-1"));
        assert_eq!(reply.echo().path(), format!("/h2/{i}"));
    }
    assert_eq!(client.connects, 1, "all requests on one HTTP/2 connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2c_share_one_port() {
    let backend = Backend::start("blue-1").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          api:
            versions:
              blue: {{ release: v1, backends: ["{addr}"], weight: 100 }}
        "#,
        addr = backend.addr,
    ))
    .await;

    let h1 = Client::http1(proxy.listen).get("/").await.unwrap();
    let h2 = Client::h2c(proxy.listen).get("/").await.unwrap();

    assert_eq!(h1.status, StatusCode::OK);
    assert_eq!(h2.status, StatusCode::OK);
}

/// An HTTP/1.1 upstream's chunked body (several chunks in one read) reaches an h2c client
/// whole, with every field the upstream sent — a repeated one in order, its framing fields
/// out — on each of several streams of one connection (a stream's state is reused for the
/// next one, so each must start clean).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upstream_body_and_repeated_fields_reach_an_h2c_client_whole() {
    let backend = raw_backend(|mut s| async move {
        let head = b"HTTP/1.1 200 OK\r\nconnection: close\r\nset-cookie: a=1\r\nx-one: first\r\n\
            set-cookie: b=2\r\ntransfer-encoding: chunked\r\n\r\n";
        let body = b"5\r\nhello\r\n2\r\n, \r\n6\r\nworld!\r\n0\r\n\r\n";
        let _ = s.write_all(&[&head[..], &body[..]].concat()).await;
        let _ = s.flush().await;
    })
    .await;
    let proxy = Proxy::start_services(&format!(
        r#"
          api:
            versions:
              blue: {{ release: v1, backends: ["{backend}"], weight: 100 }}
        "#,
    ))
    .await;
    let mut client = Client::h2c(proxy.listen);
    for i in 0..5 {
        let reply = client.get(&format!("/chunked/{i}")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(&reply.body[..], b"hello, world!");
        let cookies: Vec<&str> = reply
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(reply.headers["x-one"], "first");
        assert!(reply.headers.get("transfer-encoding").is_none());
        assert!(reply.headers.get("connection").is_none());
    }
    assert_eq!(client.connects, 1, "all requests on one HTTP/2 connection");
}
