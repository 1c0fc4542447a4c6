//! `GET /metrics` after real traffic: every SPEC §5 name, with exactly its labels.
//!
//! One proxy serves one service per outcome — a healthy backend (2xx), a backend answering
//! 500 (`status`), nothing listening (`connect`), a backend too slow for the request timeout
//! (`timeout`), a backend that hangs up without answering (`reset`) and a version whose only
//! backend fails its health check (503, `backend="none"`) — so each label value shows up.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::*;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// SPEC §5: each metric's type and its label names (sorted), without `le` for histograms.
const SPEC: &[(&str, &str, &[&str])] = &[
    (
        "switchyard_requests_total",
        "counter",
        &["backend", "code", "release", "service", "version"],
    ),
    (
        "switchyard_request_failures_total",
        "counter",
        &["backend", "reason", "release", "service", "version"],
    ),
    (
        "switchyard_request_duration_seconds",
        "histogram",
        &["release", "service", "version"],
    ),
    (
        "switchyard_version_weight",
        "gauge",
        &["release", "service", "version"],
    ),
    (
        "switchyard_backend_healthy",
        "gauge",
        &["backend", "service", "version"],
    ),
    (
        "switchyard_rollouts_total",
        "counter",
        &["result", "service"],
    ),
    (
        "switchyard_rollbacks_total",
        "counter",
        &["reason", "service"],
    ),
    (
        "switchyard_analysis_checks_total",
        "counter",
        &["metric", "result", "service"],
    ),
    (
        "switchyard_rollback_detection_seconds",
        "histogram",
        &["service"],
    ),
    ("switchyard_config_reloads_total", "counter", &["result"]),
    ("switchyard_connections_active", "gauge", &["listener"]),
];

/// Names that only appear once rollouts exist (the rollout work is landing separately);
/// checked only when present.
const NEED_ROLLOUTS: &[&str] = &[
    "switchyard_rollouts_total",
    "switchyard_rollbacks_total",
    "switchyard_analysis_checks_total",
    "switchyard_rollback_detection_seconds",
];

/// SPEC §5 histogram bounds as the exporter writes them, then `+Inf`.
const LE: [&str; 14] = [
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
    "10", "+Inf",
];

/// A backend that answers every request with `status` and an empty body.
async fn status_backend(status: StatusCode) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = status;
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A backend that reads the request head and closes the connection without answering.
async fn hang_up_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spec_metric_has_its_labels_after_traffic() {
    let ok = Backend::start("blue-1").await;
    let slow = Backend::start_with_delay("slow-1", Duration::from_secs(3)).await;
    let failing = status_backend(StatusCode::INTERNAL_SERVER_ERROR).await;
    let hang_up = hang_up_backend().await;
    let (refused, down) = (refusing_addr(), refusing_addr());
    let proxy = Proxy::start_services(&format!(
        r#"
          status:
            match: {{ path_prefix: /status }}
            versions: {{ blue: {{ release: v1, backends: ["{failing}"], weight: 1 }} }}
          connect:
            match: {{ path_prefix: /connect }}
            versions: {{ blue: {{ release: v1, backends: ["{refused}"], weight: 1 }} }}
          timeout:
            match: {{ path_prefix: /timeout }}
            versions: {{ blue: {{ release: v1, backends: ["{slow}"], weight: 1 }} }}
            timeouts: {{ request: 200ms }}
          reset:
            match: {{ path_prefix: /reset }}
            versions: {{ blue: {{ release: v1, backends: ["{hang_up}"], weight: 1 }} }}
          down:
            match: {{ path_prefix: /down }}
            versions: {{ blue: {{ release: v1, backends: ["{down}"], weight: 1 }} }}
            health_check: {{ path: /health, interval: 100ms, timeout: 100ms, unhealthy_threshold: 1, healthy_threshold: 1 }}
          api:
            versions:
              blue:  {{ release: v1.0, backends: ["{ok}"], weight: 90 }}
              green: {{ release: v2.0, backends: ["{ok}"], weight: 10 }}
        "#,
        ok = ok.addr,
        slow = slow.addr,
    ))
    .await;

    // One request per outcome (the 503 needs the health check to have failed first).
    let mut client = proxy.client();
    for (path, want) in [
        ("/", StatusCode::OK),
        ("/status", StatusCode::INTERNAL_SERVER_ERROR),
        ("/connect", StatusCode::BAD_GATEWAY),
        ("/timeout", StatusCode::GATEWAY_TIMEOUT),
        ("/reset", StatusCode::BAD_GATEWAY),
    ] {
        let reply = client.get(path).await.expect("the proxy answers");
        assert_eq!(reply.status, want, "GET {path}: {:?}", reply.text());
    }
    eventually(Duration::from_secs(10), "a 503 from /down", async || {
        let reply = get_once(proxy.listen, "/down").await?;
        (reply.status == StatusCode::SERVICE_UNAVAILABLE)
            .then_some(())
            .ok_or(format!("{} {:?}", reply.status, reply.text()))
    })
    .await;
    // Keep one client connection open so `connections_active` has something to count.
    let _ = client.get("/").await.expect("the proxy answers");

    let text = proxy.admin_get("/metrics").await.text();
    let samples = parse_metrics(&text);
    let types = metric_types(&text);

    // Every name: the right type and exactly SPEC's labels on every sample.
    let mut absent = Vec::new();
    for (name, kind, labels) in SPEC {
        let series: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.name == *name
                    || (*kind == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| s.name == format!("{name}{suffix}")))
            })
            .collect();
        if series.is_empty() {
            assert!(
                NEED_ROLLOUTS.contains(name),
                "{name} is missing from /metrics:\n{text}"
            );
            absent.push(*name);
            continue;
        }
        assert_eq!(
            types.get(*name).map(String::as_str),
            Some(*kind),
            "# TYPE of {name}"
        );
        for s in series {
            let mut want: Vec<&str> = labels.to_vec();
            if s.name.ends_with("_bucket") {
                want.push("le");
                want.sort_unstable();
            }
            assert_eq!(s.label_names(), want, "labels of {s:?}");
        }
    }
    if !absent.is_empty() {
        eprintln!("not yet exported (need rollouts): {absent:?}");
    }

    let values = |name: &str, label: &str| -> BTreeSet<String> {
        samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.label(label).to_string())
            .collect()
    };
    let find = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        samples
            .iter()
            .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
            .map(|s| s.value)
    };

    // Status classes and failure reasons, each on the backend it belongs to.
    let codes = values("switchyard_requests_total", "code");
    assert!(codes.contains("2xx") && codes.contains("5xx"), "{codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| ["1xx", "2xx", "3xx", "4xx", "5xx"].contains(&c.as_str())),
        "{codes:?}"
    );
    let failures = "switchyard_request_failures_total";
    for (service, backend, reason) in [
        ("status", failing.to_string(), "status"),
        ("connect", refused.to_string(), "connect"),
        ("timeout", slow.addr.to_string(), "timeout"),
        ("reset", hang_up.to_string(), "reset"),
        ("down", "none".to_string(), "connect"),
    ] {
        let n = find(
            failures,
            &[
                ("service", service),
                ("backend", &backend),
                ("reason", reason),
            ],
        );
        assert!(
            n.is_some_and(|n| n >= 1.0),
            "{failures}{{service={service},backend={backend},reason={reason}}} = {n:?}\n{text}"
        );
    }
    let ok_2xx = find(
        "switchyard_requests_total",
        &[("service", "api"), ("code", "2xx")],
    );
    assert!(ok_2xx.is_some_and(|n| n >= 1.0), "{text}");

    // Weights are the live share in percent; health is 1/0 per backend.
    let weight = |version, release| {
        find(
            "switchyard_version_weight",
            &[
                ("service", "api"),
                ("version", version),
                ("release", release),
            ],
        )
    };
    assert_eq!(weight("blue", "v1.0"), Some(90.0));
    assert_eq!(weight("green", "v2.0"), Some(10.0));
    let healthy = |service, backend: &str| {
        find(
            "switchyard_backend_healthy",
            &[("service", service), ("backend", backend)],
        )
    };
    assert_eq!(healthy("api", &ok.addr.to_string()), Some(1.0));
    assert_eq!(healthy("down", &down.to_string()), Some(0.0));

    // The histogram: SPEC's bounds exactly, cumulative, `_count` = the `+Inf` bucket.
    let hist = "switchyard_request_duration_seconds";
    let buckets: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == format!("{hist}_bucket") && s.label("service") == "timeout")
        .collect();
    let les: Vec<&str> = buckets.iter().map(|s| s.label("le")).collect();
    assert_eq!(les, LE, "bucket bounds");
    assert!(
        buckets.windows(2).all(|w| w[0].value <= w[1].value),
        "cumulative"
    );
    let count = find(&format!("{hist}_count"), &[("service", "timeout")]);
    assert_eq!(count, Some(buckets[13].value));
    // The timed-out request took 200 ms (plus scheduling slack): above 0.1 s, at most 0.5 s.
    assert_eq!(buckets[6].value, 0.0, "le=0.1 for a 200 ms timeout");
    assert_eq!(buckets[8].value, 1.0, "le=0.5 for a 200 ms timeout");

    // Reloads: both results exported from the start; connections per listener.
    assert_eq!(
        values("switchyard_config_reloads_total", "result"),
        BTreeSet::from(["error".to_string(), "ok".to_string()])
    );
    let active = find("switchyard_connections_active", &[("listener", "public")]);
    assert!(active.is_some_and(|n| n >= 1.0), "{active:?}\n{text}");

    // Rollout metrics, once they exist: label values from SPEC's sets.
    let allowed: BTreeMap<(&str, &str), &[&str]> = BTreeMap::from([
        (
            ("switchyard_rollouts_total", "result"),
            &["promoted", "rolled_back", "aborted"][..],
        ),
        (
            ("switchyard_rollbacks_total", "reason"),
            &["error-rate", "latency-p99", "health", "manual", "fast-fail"][..],
        ),
        (
            ("switchyard_analysis_checks_total", "result"),
            &["pass", "fail", "inconclusive"][..],
        ),
    ]);
    for ((name, label), set) in allowed {
        for v in values(name, label) {
            assert!(set.contains(&v.as_str()), "{name}{{{label}={v:?}}}");
        }
    }
}
