//! Failure accounting (SPEC §5, DESIGN §9): what the analysis trusts counts only what the
//! backend did wrong, and every request is recorded and logged exactly once, on either
//! transport.

use crate::harness::*;
use http::StatusCode;

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
    let (listen, admin) = (free_port(), free_port());
    let proxy = Proxy::start(&format!(
        r#"
        listeners: [{{ name: public, address: "127.0.0.1:{listen}" }}]
        admin: {{ address: "127.0.0.1:{admin}" }}
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
