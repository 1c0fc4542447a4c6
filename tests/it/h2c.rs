//! HTTP/2 with prior knowledge (h2c) on the same plain listener as HTTP/1.1 (SPEC §3).

use crate::harness::*;
use http::StatusCode;

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
