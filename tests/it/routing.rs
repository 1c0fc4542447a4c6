//! Service selection: exact host beats wildcard beats no host, then the longest path prefix
//! wins; a service without `match` catches the rest, otherwise unmatched → 404 (SPEC §3, §4.1).

use crate::harness::*;
use http::StatusCode;

/// Which backend answers `path` with `Host: host`.
async fn served_by(client: &mut Client, host: &str, path: &str) -> String {
    let reply = client
        .send(get_with(path, &[("host", host)]))
        .await
        .unwrap_or_else(|e| panic!("{host}{path}: {e}"));
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{host}{path}: {}",
        reply.text()
    );
    reply
        .backend()
        .unwrap_or_else(|| panic!("{host}{path}: no x-backend"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_host_beats_wildcard_beats_no_host() {
    let exact = Backend::start("exact").await;
    let wild = Backend::start("wild").await;
    let anyhost = Backend::start("anyhost").await;
    // File order is the reverse of precedence, so order cannot be what decides.
    let proxy = Proxy::start(&format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:0" }}]
        admin: {{ address: "127.0.0.1:0" }}
        services:
          anyhost:
            match: {{ path_prefix: / }}
            versions: {{ v: {{ release: r1, backends: ["{anyhost}"], weight: 1 }} }}
          wild:
            match: {{ hosts: ["*.example.com"], path_prefix: / }}
            versions: {{ v: {{ release: r1, backends: ["{wild}"], weight: 1 }} }}
          exact:
            match: {{ hosts: ["api.example.com"], path_prefix: / }}
            versions: {{ v: {{ release: r1, backends: ["{exact}"], weight: 1 }} }}
        "#,
        anyhost = anyhost.addr,
        wild = wild.addr,
        exact = exact.addr,
    ))
    .await;
    let mut client = proxy.client();

    assert_eq!(
        served_by(&mut client, "api.example.com", "/x").await,
        "exact"
    );
    assert_eq!(
        served_by(&mut client, "shop.example.com", "/x").await,
        "wild"
    );
    assert_eq!(
        served_by(&mut client, "deep.shop.example.com", "/x").await,
        "wild"
    );
    assert_eq!(served_by(&mut client, "example.org", "/x").await, "anyhost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_match_ignores_port_and_case() {
    let exact = Backend::start("exact").await;
    let anyhost = Backend::start("anyhost").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          exact:
            match: {{ hosts: ["api.example.com"] }}
            versions: {{ v: {{ release: r1, backends: ["{exact}"], weight: 1 }} }}
          anyhost:
            versions: {{ v: {{ release: r1, backends: ["{anyhost}"], weight: 1 }} }}
        "#,
        exact = exact.addr,
        anyhost = anyhost.addr,
    ))
    .await;
    let mut client = proxy.client();

    // What curl sends to a proxy on a non-default port.
    assert_eq!(
        served_by(
            &mut client,
            &format!("api.example.com:{}", proxy.listen.port()),
            "/"
        )
        .await,
        "exact"
    );
    assert_eq!(
        served_by(&mut client, "API.Example.COM", "/").await,
        "exact"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_specificity_is_decided_before_path_length() {
    let exact = Backend::start("exact").await;
    let anyhost = Backend::start("anyhost").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          anyhost:
            match: {{ path_prefix: /api/v2 }}
            versions: {{ v: {{ release: r1, backends: ["{anyhost}"], weight: 1 }} }}
          exact:
            match: {{ hosts: ["api.example.com"], path_prefix: / }}
            versions: {{ v: {{ release: r1, backends: ["{exact}"], weight: 1 }} }}
        "#,
        anyhost = anyhost.addr,
        exact = exact.addr,
    ))
    .await;
    let mut client = proxy.client();

    assert_eq!(
        served_by(&mut client, "api.example.com", "/api/v2/users").await,
        "exact"
    );
    assert_eq!(
        served_by(&mut client, "other.test", "/api/v2/users").await,
        "anyhost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_path_prefix_wins() {
    let root = Backend::start("root").await;
    let api = Backend::start("api").await;
    let v2 = Backend::start("v2").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          root:
            match: {{ path_prefix: / }}
            versions: {{ v: {{ release: r1, backends: ["{root}"], weight: 1 }} }}
          api:
            match: {{ path_prefix: /api }}
            versions: {{ v: {{ release: r1, backends: ["{api}"], weight: 1 }} }}
          v2:
            match: {{ path_prefix: /api/v2 }}
            versions: {{ v: {{ release: r1, backends: ["{v2}"], weight: 1 }} }}
        "#,
        root = root.addr,
        api = api.addr,
        v2 = v2.addr,
    ))
    .await;
    let mut client = proxy.client();

    assert_eq!(
        served_by(&mut client, "h.test", "/api/v2/users?id=7").await,
        "v2"
    );
    assert_eq!(
        served_by(&mut client, "h.test", "/api/v1/users").await,
        "api"
    );
    assert_eq!(served_by(&mut client, "h.test", "/api").await, "api");
    assert_eq!(
        served_by(&mut client, "h.test", "/static/app.js").await,
        "root"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_query_reach_the_backend_unchanged() {
    let api = Backend::start("api").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          api:
            match: {{ path_prefix: /api }}
            versions: {{ v: {{ release: r1, backends: ["{api}"], weight: 1 }} }}
        "#,
        api = api.addr,
    ))
    .await;

    let reply = proxy
        .client()
        .get("/api/v1/items?x=1&y=%20z")
        .await
        .unwrap();

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.echo().path(), "/api/v1/items?x=1&y=%20z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_request_is_404_without_a_default_service() {
    let api = Backend::start("api").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          api:
            match: {{ hosts: ["api.example.com"], path_prefix: /api }}
            versions: {{ v: {{ release: r1, backends: ["{api}"], weight: 1 }} }}
        "#,
        api = api.addr,
    ))
    .await;
    let mut client = proxy.client();

    for (host, path) in [("other.test", "/api"), ("api.example.com", "/other")] {
        let reply = client
            .send(get_with(path, &[("host", host)]))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{host}{path}");
        assert!(
            reply.backend().is_none(),
            "a 404 is made by the proxy, not a backend"
        );
        assert!(
            !reply.body.is_empty() && reply.body.len() < 1024,
            "short plain-text body: {:?}",
            reply.text()
        );
    }
    assert_eq!(api.hits(), 0);
    // Requests that do match still get through.
    assert_eq!(
        served_by(&mut client, "api.example.com", "/api/x").await,
        "api"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_without_match_is_the_default() {
    let api = Backend::start("api").await;
    let fallback = Backend::start("fallback").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          fallback:
            versions: {{ v: {{ release: r1, backends: ["{fallback}"], weight: 1 }} }}
          api:
            match: {{ hosts: ["api.example.com"] }}
            versions: {{ v: {{ release: r1, backends: ["{api}"], weight: 1 }} }}
        "#,
        api = api.addr,
        fallback = fallback.addr,
    ))
    .await;
    let mut client = proxy.client();

    assert_eq!(served_by(&mut client, "api.example.com", "/").await, "api");
    assert_eq!(
        served_by(&mut client, "other.test", "/anything").await,
        "fallback"
    );
}
