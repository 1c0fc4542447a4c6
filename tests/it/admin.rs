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

/// Every socket on port 0: the OS chooses a port for each (never a "collides" error), the
/// binary names each in a startup line and in `GET /api/v1/status`, and each serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_on_port_zero_report_the_ports_the_os_chose() {
    let backend = Backend::start("blue-1").await;
    let proxy = Proxy::builder()
        .listener("public", "127.0.0.1:0")
        .listener("internal", "127.0.0.1:0")
        .service(Service::new("api").version("blue", "v1", &[backend.addr], 100))
        .start()
        .await;

    let status = proxy.status_json().await;
    let bound: Vec<(String, String, bool)> = status["listeners"]
        .as_array()
        .expect("status.listeners")
        .iter()
        .map(|l| {
            let name = l["name"].as_str().unwrap_or_default().to_string();
            let address = l["address"].as_str().unwrap_or_default().to_string();
            (name, address, l["tls"] == true)
        })
        .collect();
    let (public, internal) = (proxy.listener("public"), proxy.listener("internal"));
    assert_eq!(
        bound,
        [
            ("public".into(), public.to_string(), false),
            ("internal".into(), internal.to_string(), false)
        ],
        "{status}"
    );
    assert_eq!(status["admin"]["address"], proxy.admin.to_string());
    let ports = [public.port(), internal.port(), proxy.admin.port()];
    assert!(ports.iter().all(|p| *p != 0), "{ports:?}");
    assert!(
        ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2],
        "{ports:?}"
    );
    let log = proxy.stderr();
    for line in [
        format!("admin API listening address={}", proxy.admin),
        format!("listening listener=public address={public}"),
        format!("listening listener=internal address={internal}"),
    ] {
        assert!(log.contains(&line), "no {line:?} in\n{log}");
    }
    for addr in [public, internal] {
        let reply = Client::http1(addr).get("/").await.expect("a response");
        assert_eq!(reply.version().as_deref(), Some("blue"), "{addr}");
    }
}

/// A reload of a config whose listeners say port 0 keeps them where they are: nothing is
/// rebound, nothing needs a restart, the kept-alive client stays on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_port_zero_listeners_where_they_are() {
    let (blue, green) = (
        Backend::start("blue-1").await,
        Backend::start("green-1").await,
    );
    let config = |w: u32| {
        Proxy::builder().service(
            Service::new("api")
                .version("blue", "v1", &[blue.addr], 100 - w)
                .version("green", "v2", &[green.addr], w),
        )
    };
    let proxy = config(0).start().await;
    let (listen, admin) = (proxy.listen, proxy.admin);

    proxy.rewrite_config(&config(100).yaml());
    eventually(RELOAD_TIMEOUT, "the reload", async || {
        match proxy.reload_counts().await {
            (1, 0) => Ok(()),
            counts => Err(format!("reloads (ok, error) = {counts:?}")),
        }
    })
    .await;

    let status = proxy.status_json().await;
    assert_eq!(status["restart_needed"], serde_json::json!([]), "{status}");
    assert_eq!(status["listeners"][0]["address"], listen.to_string());
    assert_eq!(status["admin"]["address"], admin.to_string());
    let reply = Client::http1(listen).get("/").await.expect("a response");
    assert_eq!(reply.version().as_deref(), Some("green"));
}

/// After kill -9 the restarted process gets ports of its own, and the harness follows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_reports_its_new_ports() {
    let backend = Backend::start("blue-1").await;
    let mut proxy = Proxy::builder()
        .service(Service::new("api").version("blue", "v1", &[backend.addr], 100))
        .start()
        .await;
    proxy.kill9();
    proxy.restart().await;

    let status = proxy.status_json().await;
    assert_eq!(status["listeners"][0]["address"], proxy.listen.to_string());
    assert_eq!(status["admin"]["address"], proxy.admin.to_string());
    let reply = proxy.client().get("/").await.expect("a response");
    assert_eq!(reply.version().as_deref(), Some("blue"));
}
