//! The admin listener's health, readiness and status endpoints (SPEC §7).

use crate::harness::*;
use http::StatusCode;

async fn start() -> (Backend, Proxy) {
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
    (backend, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_ready_answer_200() {
    let (_backend, proxy) = start().await;

    let health = proxy.admin_get("/health").await;
    let ready = proxy.admin_get("/ready").await;

    assert_eq!(health.status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(&health.body).expect("/health is JSON");
    assert_eq!(body["status"], "healthy");
    assert_eq!(ready.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_config_and_reload_state() {
    let (_backend, proxy) = start().await;

    let status = proxy.status_json().await;

    let config_path = status["config_path"].as_str().unwrap_or_default();
    let canonical = proxy.config_path.canonicalize().unwrap();
    assert!(
        config_path == proxy.config_path.to_str().unwrap()
            || config_path == canonical.to_str().unwrap(),
        "config_path {config_path:?}, expected {}",
        proxy.config_path.display()
    );
    assert!(
        status["loaded_at"].as_str().is_some_and(|s| !s.is_empty()),
        "{status}"
    );
    assert!(status["last_reload_error"].is_null(), "{status}");
    assert!(
        status["reloads"]["ok"].is_u64() && status["reloads"]["error"].is_u64(),
        "{status}"
    );
    assert!(status["uptime_s"].is_number(), "{status}");
    assert!(
        status["version"].as_str().is_some_and(|s| !s.is_empty()),
        "{status}"
    );
}
