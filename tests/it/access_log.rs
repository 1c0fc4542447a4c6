//! The access log (issue #6): off by default; with `access_log` one line per request with the
//! routing decision, in JSON or combined format; drops are exported as a counter.

use crate::harness::*;
use http::StatusCode;

fn config(backend: &Backend, log: &str) -> String {
    format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:0" }}]
        admin: {{ address: "127.0.0.1:0" }}
        {log}
        services:
          api:
            match: {{ hosts: ["api.test"] }}
            versions:
              blue: {{ release: v1, backends: ["{addr}"], weight: 100 }}
        "#,
        addr = backend.addr,
    )
}

async fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    eventually(
        RELOAD_TIMEOUT,
        &format!("{n} access log lines"),
        async || {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= n {
                Ok(lines)
            } else {
                Err(format!("{} lines: {text}", lines.len()))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_the_request_and_the_routing_decision() {
    let backend = Backend::start("blue-1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let proxy = Proxy::start(&config(
        &backend,
        &format!(
            "access_log: {{ path: \"{}\", format: json }}",
            path.display()
        ),
    ))
    .await;
    let mut client = proxy.client();

    let ok = client
        .send(get_with(
            "/hello?x=1",
            &[("host", "api.test"), ("user-agent", "t/1")],
        ))
        .await
        .unwrap();
    assert_eq!(ok.status, StatusCode::OK);
    let missing = client
        .send(get_with("/nope", &[("host", "other.test")]))
        .await
        .unwrap();
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let lines = lines(&path, 2).await;
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/hello?x=1");
    assert_eq!(first["host"], "api.test");
    assert_eq!(first["status"], 200);
    assert_eq!(first["service"], "api");
    assert_eq!(first["version"], "blue");
    assert_eq!(first["backend"], backend.addr.to_string());
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["user_agent"], "t/1");
    assert_eq!(first["bytes"].as_u64(), Some(ok.body.len() as u64));
    assert!(first["duration_ms"].as_f64().is_some());
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["status"], 404);
    assert!(second["service"].is_null());

    let metrics = proxy.admin_get("/metrics").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "switchyard_access_log_dropped_total 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_format() {
    let backend = Backend::start("blue-1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let proxy = Proxy::start(&config(
        &backend,
        &format!(
            "access_log: {{ path: \"{}\", format: combined }}",
            path.display()
        ),
    ))
    .await;

    let ok = proxy
        .client()
        .send(get_with(
            "/c",
            &[("host", "api.test"), ("referer", "http://r.test/")],
        ))
        .await
        .unwrap();

    let line = &lines(&path, 1).await[0];
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains(&format!(
            "\"GET /c HTTP/1.1\" 200 {} \"http://r.test/\"",
            ok.body.len()
        )),
        "{line}"
    );
    assert!(line.contains("service=api version=blue"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_by_default() {
    let backend = Backend::start("blue-1").await;
    let proxy = Proxy::start(&config(&backend, "")).await;
    let reply = proxy
        .client()
        .send(get_with("/quiet", &[("host", "api.test")]))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!proxy.stderr().contains("/quiet"));
    let metrics = proxy.admin_get("/metrics").await.text();
    assert!(!metrics.contains("switchyard_access_log_dropped_total"));
}
