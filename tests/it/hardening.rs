//! The admin API against a browser on the same machine (issue 13 item 5), and series that a
//! reload removed (SPEC §15).

use std::time::Duration;

use crate::harness::*;
use http::StatusCode;

async fn two_versions() -> (Backend, Proxy) {
    let backend = Backend::start("blue-1").await;
    let proxy = Proxy::start_services(&format!(
        r#"
        api:
          versions:
            blue:  {{ release: v1, backends: ["{addr}"], weight: 100 }}
            green: {{ release: v2, backends: ["{addr}"], weight: 0 }}
        "#,
        addr = backend.addr
    ))
    .await;
    (backend, proxy)
}

async fn send(
    proxy: &Proxy,
    content_type: Option<&str>,
    host: Option<&str>,
    path: &str,
    body: &str,
) -> Reply {
    let mut req = http::Request::post(path);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(h) = host {
        req = req.header("host", h);
    }
    Client::http1(proxy.admin)
        .send(req.body(full(body.to_string())).unwrap())
        .await
        .expect("admin answers")
}

async fn green_share(proxy: &Proxy) -> f64 {
    proxy.api("/services/api").await["versions"][1]["weight"]
        .as_f64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_post_that_is_not_json_is_refused_and_changes_nothing() {
    let (_backend, proxy) = two_versions().await;
    let switch = "/api/v1/services/api/switch";
    // What a page on another origin can send without a CORS preflight.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let reply = send(&proxy, ct, None, switch, r#"{"to":"green"}"#).await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{ct:?}: {}",
            reply.text()
        );
        assert!(
            reply.text().contains("application/json"),
            "{}",
            reply.text()
        );
    }
    let reply = send(&proxy, None, None, "/api/v1/services/api/rollout/start", "").await;
    assert_eq!(
        reply.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "a body-less post too"
    );
    assert_eq!(green_share(&proxy).await, 0.0, "nothing changed");
    let reply = send(
        &proxy,
        Some("application/json; charset=utf-8"),
        None,
        switch,
        r#"{"to":"green"}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(green_share(&proxy).await, 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokenless_admin_answers_only_its_own_host_names() {
    let (_backend, proxy) = two_versions().await;
    let port = proxy.admin.port();
    for host in [
        format!("evil.example:{port}"),
        "evil.example".into(),
        format!("localhost.evil.example:{port}"),
    ] {
        let req = http::Request::get("/api/v1/services")
            .header("host", &host)
            .body(empty())
            .unwrap();
        let reply = Client::http1(proxy.admin).send(req).await.unwrap();
        assert_eq!(
            reply.status,
            StatusCode::MISDIRECTED_REQUEST,
            "{host}: {}",
            reply.text()
        );
        let reply = send(
            &proxy,
            Some("application/json"),
            Some(&host),
            "/api/v1/services/api/switch",
            r#"{"to":"green"}"#,
        )
        .await;
        assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST, "{host}");
    }
    assert_eq!(green_share(&proxy).await, 0.0);
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "LOCALHOST".into(),
    ] {
        let req = http::Request::get("/api/v1/services")
            .header("host", &host)
            .body(empty())
            .unwrap();
        let reply = Client::http1(proxy.admin).send(req).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_with_a_token_answers_any_host() {
    let backend = Backend::start("blue-1").await;
    let yaml = format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:0" }}]
        admin: {{ address: "127.0.0.1:0" }}
        services:
          api:
            versions: {{ blue: {{ release: v1, backends: ["{}"], weight: 100 }} }}
        "#,
        backend.addr
    );
    let proxy = Proxy::start_with_env(&yaml, &[], &[("SWITCHYARD_ADMIN_TOKEN", "t0ken")]).await;
    let req = http::Request::get("/api/v1/services")
        .header("host", "switchyard.internal")
        .body(empty())
        .unwrap();
    let reply = Client::http1(proxy.admin).send(req).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_versions_and_backends_a_reload_removed_leave_metrics() {
    let blue = Backend::start("blue-1").await;
    let dead = refusing_addr();
    let config = |green: bool| {
        let green = if green {
            format!(r#"green: {{ release: v2, backends: ["{dead}"], weight: 50 }}"#)
        } else {
            String::new()
        };
        format!(
            r#"
            listeners: [{{ name: public, address: "127.0.0.1:0" }}]
            admin: {{ address: "127.0.0.1:0" }}
            services:
              api:
                health_check: {{ path: /health, interval: 100ms, timeout: 100ms, unhealthy_threshold: 1, healthy_threshold: 1 }}
                versions:
                  blue: {{ release: v1, backends: ["{}"], weight: 50 }}
                  {green}
            "#,
            blue.addr
        )
    };
    let proxy = Proxy::start(&config(true)).await;
    for _ in 0..20 {
        let _ = get_once(proxy.listen, "/").await; // some reach green and fail: that is fine
    }
    let green_series = |text: &str| -> Vec<String> {
        parse_metrics(text)
            .into_iter()
            .filter(|s| s.label("version") == "green")
            .map(|s| format!("{} {:?} {}", s.name, s.labels, s.value))
            .collect()
    };
    eventually(
        Duration::from_secs(10),
        "green marked unhealthy",
        async || {
            let text = proxy.admin_get("/metrics").await.text();
            if text.contains(&format!(
            "switchyard_backend_healthy{{service=\"api\",version=\"green\",backend=\"{dead}\"}} 0"
        )) {
                Ok(())
            } else {
                Err(green_series(&text).join("\n"))
            }
        },
    )
    .await;

    proxy.rewrite_config(&config(false));
    eventually(RELOAD_TIMEOUT, "the reload", async || {
        let svc = proxy.api("/services/api").await;
        if svc["versions"].as_array().unwrap().len() == 1 {
            Ok(())
        } else {
            Err(svc.to_string())
        }
    })
    .await;
    let text = proxy.admin_get("/metrics").await.text();
    assert_eq!(
        green_series(&text),
        Vec::<String>::new(),
        "removed version still exported"
    );
    assert!(
        !text.contains(&dead.to_string()),
        "removed backend still exported:\n{text}"
    );
    assert!(
        text.contains(
            "switchyard_version_weight{service=\"api\",version=\"blue\",release=\"v1\"} 100"
        ),
        "{text}"
    );
}
